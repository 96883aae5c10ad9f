// The encoder layers of a BERT-layout integer model (xtc.native.NativeEncoder) in one C++ call per forward.
//
// Each layer computes what the Python integer path (xtc.infer.IntLinear inside Hugging Face's BertLayer, sdpa
// attention) computes, op for op and in the same order, so the logits are the same bit for bit:
//   quantize per token:  s = 2 max|x| / 2^b (1 where 0), q = clamp(round_half_even(x / s))
//   integer GEMM:        q @ codes exactly in int32 (AVX-512 VNNI) on the codes kept as bit-planes (1 bit a weight for
//                        binary codes), converted to fp32 as the Python path's int32 product is
//   rescale:             y = ((acc * s) * row_scale) + bias   [+ residual], each step rounded to fp32 (no FMA:
//                        built with -ffp-contract=off)
//   attention:           at::scaled_dot_product_attention with Hugging Face's arguments (mask, scale = d^-0.5)
//   LayerNorm, GELU:     ATen's own kernels
// The query, key and value layers quantize the same input, so they run as one GEMM on their codes side by side
// (the integer sums of each output column do not depend on its neighbours) and are rescaled into three tensors.
// What saves time against the Python path: no Python between ops, one quantize pass and one rescale pass per
// layer input/output instead of several ATen ops, one GEMM instead of three for Q/K/V. What saves memory: the
// codes at their own bit-width (the Python path holds int8 codes and oneDNN's int8 copy of them), and no oneDNN
// (its reorder and GEMM code alone is ~9 MiB of a process's resident memory).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include <vector>

namespace {

using at::Tensor;

// ---------------------------------------------------------------------------- low-bit codes and their GEMM
// Weight codes [K, N] (int8) are kept as bit-planes of u = code - cmin (0..255), laid out for AVX-512 VNNI's
// vpdpbusd: a panel of 64 columns is four registers of 16 int32 lanes, each lane holding 4 consecutive k of one
// column; one 64-bit word per (panel, k quad, register, plane) says which of those 64 bytes have that bit of u
// set. Only planes with a set bit are stored: binary codes {-1, 1} are u in {0, 2}, one plane (1 bit a weight);
// ternary {-1, 0, 1} two; b-bit uniform codes b. Then, exactly in int32,
//   sum_k q[m, k] code[k, n] = sum_k q[m, k] u[k, n] + cmin * sum_k q[m, k]
// and the GEMM unpacks a panel's planes into bytes (one masked move per plane and register) into a buffer the
// thread reuses for every row block.
constexpr int64_t kPanel = 64;       // columns per panel: 4 registers x 16 lanes
constexpr int64_t kRowBlock = 192;   // rows of q per task: a [192, K] block of codes stays in L2 across panels
constexpr int64_t kKAlign = 64;      // q's rows and the planes are zero-padded to a multiple of 64 k (AMX tiles)
constexpr int64_t kMAlign = 32;      // q has zero rows up to a multiple of 32 (two AMX tiles of 16 rows)

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// codes_t [K, N] int8 -> (planes int64 [panels, K rounded up to 64 / 4, 4, P], info int64 [K, N, cmin, plane mask])
std::vector<Tensor> pack_codes(const Tensor& codes_t) {
  TORCH_CHECK(codes_t.dim() == 2 && codes_t.scalar_type() == at::kChar, "pack_codes: int8 codes [K, N]");
  const Tensor c = codes_t.contiguous();
  const int64_t K = c.size(0), N = c.size(1), K4 = round_up(K, kKAlign) / 4, panels = (N + kPanel - 1) / kPanel;
  const int8_t* cp = c.data_ptr<int8_t>();
  int cmin = 127, mask = 0;
  for (int64_t i = 0; i < K * N; ++i) cmin = std::min<int>(cmin, cp[i]);
  for (int64_t i = 0; i < K * N; ++i) mask |= cp[i] - cmin;
  std::vector<int> bits;
  for (int j = 0; j < 8; ++j)
    if (mask >> j & 1) bits.push_back(j);
  const int64_t P = bits.size();
  Tensor planes = at::zeros({panels, K4, 4, P}, at::kLong);
  uint64_t* pp = reinterpret_cast<uint64_t*>(planes.data_ptr<int64_t>());
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) {
      const int u = cp[k * N + n] - cmin;
      const int64_t p = n / kPanel, z = n % kPanel / 16, byte = n % 16 * 4 + k % 4;
      uint64_t* w = pp + ((p * K4 + k / 4) * 4 + z) * P;
      for (int64_t j = 0; j < P; ++j)
        if (u >> bits[j] & 1) w[j] |= uint64_t{1} << byte;
    }
  Tensor info = at::tensor({K, N, (int64_t)cmin, (int64_t)mask}, at::kLong);
  return {planes, info};
}

// panel p's u as bytes in vpdpbusd's layout: buf[(kk * 4 + z) * 64 + lane * 4 + i] = u[4 kk + i, 64 p + 16 z + lane]
void unpack_panel(const uint64_t* words, int64_t K4, const std::vector<int>& bits, uint8_t* buf) {
  const int64_t P = bits.size();
#if defined(__AVX512BW__)
  for (int64_t r = 0; r < K4 * 4; ++r) {
    __m512i v = _mm512_setzero_si512();
    for (int64_t j = 0; j < P; ++j)
      v = _mm512_or_si512(v, _mm512_maskz_mov_epi8(_cvtu64_mask64(words[r * P + j]),
                                                   _mm512_set1_epi8((char)(1 << bits[j]))));
    _mm512_storeu_si512(buf + r * 64, v);
  }
#else
  for (int64_t r = 0; r < K4 * 4; ++r)
    for (int64_t b = 0; b < 64; ++b) {
      uint8_t u = 0;
      for (int64_t j = 0; j < P; ++j) u |= (words[r * P + j] >> b & 1) << bits[j];
      buf[r * 64 + b] = u;
    }
#endif
}

// out[m, 64 p + c] = sum_k q[m, k] u[k, 64 p + c] + corr[m] for R rows at q (row stride ldq) and one panel
template <int R>
void panel_rows(const uint8_t* buf, int64_t K4, const int8_t* q, int64_t ldq, const int32_t* corr, float* out,
                int64_t ldo) {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
  __m512i acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int z = 0; z < 4; ++z) acc[r][z] = _mm512_setzero_si512();
  for (int64_t kk = 0; kk < K4; ++kk) {
    const __m512i w0 = _mm512_loadu_si512(buf + kk * 256), w1 = _mm512_loadu_si512(buf + kk * 256 + 64),
                  w2 = _mm512_loadu_si512(buf + kk * 256 + 128), w3 = _mm512_loadu_si512(buf + kk * 256 + 192);
    for (int r = 0; r < R; ++r) {
      int32_t quad;
      std::memcpy(&quad, q + r * ldq + kk * 4, 4);
      const __m512i a = _mm512_set1_epi32(quad);
      acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], w0, a);
      acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], w1, a);
      acc[r][2] = _mm512_dpbusd_epi32(acc[r][2], w2, a);
      acc[r][3] = _mm512_dpbusd_epi32(acc[r][3], w3, a);
    }
  }
  for (int r = 0; r < R; ++r) {
    const __m512i c = _mm512_set1_epi32(corr[r]);
    for (int z = 0; z < 4; ++z)
      _mm512_storeu_ps(out + r * ldo + z * 16, _mm512_cvtepi32_ps(_mm512_add_epi32(acc[r][z], c)));
  }
#else
  for (int r = 0; r < R; ++r) {
    int32_t acc[kPanel] = {0};
    for (int64_t kk = 0; kk < K4; ++kk)
      for (int64_t col = 0; col < kPanel; ++col)
        for (int64_t i = 0; i < 4; ++i)
          acc[col] += (int32_t)buf[(kk * 4 + col / 16) * 64 + col % 16 * 4 + i] * (int32_t)q[r * ldq + kk * 4 + i];
    for (int64_t col = 0; col < kPanel; ++col) out[r * ldo + col] = (float)(acc[col] + corr[r]);
  }
#endif
}

#if defined(__AMX_INT8__) && defined(__AMX_TILE__)
// AMX: tiles 0-3 accumulate a [32 rows, 32 columns] int32 block (rows 0-15 / 16-31 x columns 0-15 / 16-31),
// 4-5 hold q's two row tiles and 6-7 the two column tiles of u (16 k quads x 16 columns: the layout of buf)
struct TileConfig {
  uint8_t palette_id = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

bool amx_ready() {  // Linux hands AMX's tile state to a process that asks for it
  static const bool ok = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
  return ok;
}

struct AmxTiles {  // the tile configuration of the calling thread for one task range, released on exit
  AmxTiles() {
    TileConfig cfg;
    for (int t = 0; t < 8; ++t) cfg.rows[t] = 16, cfg.colsb[t] = 64;
    _tile_loadconfig(&cfg);
  }
  ~AmxTiles() { _tile_release(); }
};

// out[m, 64 p + c] for rows [m0, m1) of q (zero rows up to a multiple of 32) and one panel (u in buf)
void panel_rows_amx(const uint8_t* buf, int64_t K4, const int8_t* q, int64_t ldq, int64_t m0, int64_t m1,
                    const int32_t* corr, float* out, int64_t ldo) {
  alignas(64) int32_t c[32][32];
  for (int64_t m = m0; m < m1; m += 32) {
    for (int64_t h = 0; h < 2; ++h) {  // columns 32 h .. 32 h + 31 of the panel
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int64_t kk = 0; kk < K4; kk += 16) {
        _tile_loadd(4, q + m * ldq + kk * 4, ldq);
        _tile_loadd(5, q + (m + 16) * ldq + kk * 4, ldq);
        _tile_loadd(6, buf + kk * 256 + 2 * h * 64, 256);
        _tile_loadd(7, buf + kk * 256 + (2 * h + 1) * 64, 256);
        _tile_dpbsud(0, 4, 6);
        _tile_dpbsud(1, 5, 6);
        _tile_dpbsud(2, 4, 7);
        _tile_dpbsud(3, 5, 7);
      }
      _tile_stored(0, &c[0][0], 128);
      _tile_stored(1, &c[16][0], 128);
      _tile_stored(2, &c[0][16], 128);
      _tile_stored(3, &c[16][16], 128);
      for (int64_t r = 0; r < std::min<int64_t>(32, m1 - m); ++r) {
        const __m512i k = _mm512_set1_epi32(corr[m - m0 + r]);
        float* o = out + (m + r) * ldo + h * 32;
        _mm512_storeu_ps(o, _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_load_si512(&c[r][0]), k)));
        _mm512_storeu_ps(o + 16, _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_load_si512(&c[r][16]), k)));
      }
    }
  }
}
#endif

// fp32 [M, panels x 64] = q [M, K] @ codes [K, N], each value the exact integer product (columns past N: junk).
// q: int8 codes [M rounded up to 32, K rounded up to 64] (zero past M and K), qsum: each row's sum of codes. On
// AMX tiles where the CPU and kernel have them, else AVX-512 VNNI (else plain C++).
Tensor lowbit_gemm(const Tensor& q, const Tensor& qsum, const Tensor& planes, const Tensor& info) {
  const int64_t* inf = info.data_ptr<int64_t>();
  const int64_t M = qsum.size(0), ldq = q.size(1), K4 = planes.size(1), panels = planes.size(0), cmin = inf[2];
  TORCH_CHECK(q.size(0) == round_up(M, kMAlign), "lowbit_gemm: q's rows are not padded to a multiple of 32");
  TORCH_CHECK(ldq == K4 * 4, "lowbit_gemm: codes of ", ldq, " columns for a weight of ", inf[0], " rows");
  std::vector<int> bits;
  for (int j = 0; j < 8; ++j)
    if (inf[3] >> j & 1) bits.push_back(j);
  const int64_t ldo = panels * kPanel;
  Tensor out = at::empty({M, ldo}, q.options().dtype(at::kFloat));
  const int8_t* qp = q.data_ptr<int8_t>();
  const int32_t* sp = qsum.data_ptr<int32_t>();
  const uint64_t* wp = reinterpret_cast<const uint64_t*>(planes.data_ptr<int64_t>());
  float* op = out.data_ptr<float>();
  const int64_t P = bits.size(), blocks = (M + kRowBlock - 1) / kRowBlock;
  // one task: one panel for one block of rows
#if defined(__AMX_INT8__) && defined(__AMX_TILE__)
  const bool amx = amx_ready();
#endif
  at::parallel_for(0, blocks * panels, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> buf(K4 * 256);
    std::vector<int32_t> corr(kRowBlock);
#if defined(__AMX_INT8__) && defined(__AMX_TILE__)
    std::optional<AmxTiles> tiles;
    if (amx) tiles.emplace();
#endif
    for (int64_t t = begin; t < end; ++t) {
      const int64_t blk = t / panels, p = t % panels, m0 = blk * kRowBlock, m1 = std::min(M, m0 + kRowBlock);
      unpack_panel(wp + p * K4 * 4 * P, K4, bits, buf.data());
      for (int64_t m = m0; m < m1; ++m) corr[m - m0] = (int32_t)cmin * sp[m];
#if defined(__AMX_INT8__) && defined(__AMX_TILE__)
      if (amx) {
        panel_rows_amx(buf.data(), K4, qp, ldq, m0, m1, corr.data(), op + p * kPanel, ldo);
        continue;
      }
#endif
      int64_t m = m0;
      for (; m + 6 <= m1; m += 6)
        panel_rows<6>(buf.data(), K4, qp + m * ldq, ldq, corr.data() + (m - m0), op + m * ldo + p * kPanel, ldo);
      const int64_t rest = m1 - m;
      const int8_t* qm = qp + m * ldq;
      const int32_t* cm = corr.data() + (m - m0);
      float* om = op + m * ldo + p * kPanel;
      switch (rest) {
        case 5: panel_rows<5>(buf.data(), K4, qm, ldq, cm, om, ldo); break;
        case 4: panel_rows<4>(buf.data(), K4, qm, ldq, cm, om, ldo); break;
        case 3: panel_rows<3>(buf.data(), K4, qm, ldq, cm, om, ldo); break;
        case 2: panel_rows<2>(buf.data(), K4, qm, ldq, cm, om, ldo); break;
        case 1: panel_rows<1>(buf.data(), K4, qm, ldq, cm, om, ldo); break;
        default: break;
      }
    }
  });
  return out;
}

// q [M, K] int8 @ the codes pack_codes packed -> fp32 [M, N]: the GEMM on its own (tests compare it with the int32
// product)
Tensor packed_matmul(const Tensor& q, const Tensor& planes, const Tensor& info) {
  TORCH_CHECK(q.dim() == 2 && q.scalar_type() == at::kChar && q.size(1) == info[0].item<int64_t>(),
              "packed_matmul: int8 q [M, K] for codes of K rows");
  const int64_t K = q.size(1), N = info[1].item<int64_t>();
  Tensor qp = at::constant_pad_nd(q, {0, round_up(K, kKAlign) - K, 0, round_up(q.size(0), kMAlign) - q.size(0)});
  Tensor qsum = q.sum(1, false, at::kInt);
  return lowbit_gemm(qp, qsum, planes, info).narrow(1, 0, N).contiguous();
}

// rows of `cols` values per parallel task: at least kTaskValues values, so that small inputs (a batch of one
// short sentence) run on the calling thread instead of waking the others for microseconds of work
constexpr int64_t kTaskValues = 1 << 16;
int64_t rows_per_task(int64_t cols) { return std::max<int64_t>(1, kTaskValues / std::max<int64_t>(cols, 1)); }

// per-token symmetric quantization of x [M, K] (fp32, contiguous) to int8 codes q [M rounded up to 32, K rounded
// up to 64] (zero past M and K), their sum per row (int32 [M]) and fp32 scales [M]: the same numbers as xtc.quant.quantize_tokens (max
// and division are exact or correctly rounded whatever the vector width; rounding is half to even, as torch.round)
void quantize_tokens(const Tensor& x, int64_t bits, Tensor& q, Tensor& qsum, Tensor& s) {
  const int64_t M = x.size(0), K = x.size(1), ldq = round_up(K, kKAlign);
  q = at::empty({round_up(M, kMAlign), ldq}, x.options().dtype(at::kChar));
  if (q.size(0) > M) q.narrow(0, M, q.size(0) - M).zero_();
  qsum = at::empty({M}, x.options().dtype(at::kInt));
  s = at::empty({M}, x.options());
  const float* xp = x.data_ptr<float>();
  int8_t* qp = q.data_ptr<int8_t>();
  int32_t* qs = qsum.data_ptr<int32_t>();
  float* sp = s.data_ptr<float>();
  const float lo = -std::ldexp(1.0f, bits - 1), hi = std::ldexp(1.0f, bits - 1) - 1.0f;
  const float levels = std::ldexp(1.0f, bits);
  at::parallel_for(0, M, rows_per_task(K), [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const float* row = xp + m * K;
      int8_t* out = qp + m * ldq;
      // max |x| of the token
      float amax = 0.0f;
      int64_t k = 0;
#ifdef __AVX512F__
      __m512 vmax = _mm512_setzero_ps();
      for (; k + 16 <= K; k += 16) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(row + k)));
      amax = _mm512_reduce_max_ps(vmax);
#endif
      for (; k < K; ++k) amax = std::max(amax, std::fabs(row[k]));
      float scale = 2.0f * amax / levels;
      if (!(scale > 0.0f)) scale = 1.0f;
      sp[m] = scale;
      // codes: clamp(round(x / s)), and their sum
      k = 0;
      int32_t sum = 0;
#ifdef __AVX512F__
      const __m512 vs = _mm512_set1_ps(scale), vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
      __m512i vsum = _mm512_setzero_si512();
      for (; k + 16 <= K; k += 16) {
        __m512 v = _mm512_div_ps(_mm512_loadu_ps(row + k), vs);
        v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v = _mm512_min_ps(_mm512_max_ps(v, vlo), vhi);
        const __m512i c = _mm512_cvtps_epi32(v);
        vsum = _mm512_add_epi32(vsum, c);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + k), _mm512_cvtsepi32_epi8(c));
      }
      sum = _mm512_reduce_add_epi32(vsum);
#endif
      for (; k < K; ++k) {
        out[k] = static_cast<int8_t>(std::fmin(std::fmax(std::nearbyint(row[k] / scale), lo), hi));
        sum += out[k];
      }
      for (; k < ldq; ++k) out[k] = 0;
      qs[m] = sum;
    }
  });
}

// dst[j][m, n] = ((acc[m, j * N + n] * s[m]) * rows[j * N + n]) + bias[j * N + n] (+ resid[m, n]), for the
// outputs j side by side in acc (query, key, value: three; otherwise one), n < N = dst[j].size(1)
void rescale(const Tensor& acc, const Tensor& s, const Tensor& rows, const Tensor& bias, const Tensor* resid,
             std::vector<Tensor>& dst) {
  const int64_t M = acc.size(0), ld = acc.size(1), N = dst[0].size(1), outs = dst.size();
  const float* ap = acc.data_ptr<float>();
  const float* sp = s.data_ptr<float>();
  const float* rp = rows.data_ptr<float>();
  const float* bp = bias.numel() ? bias.data_ptr<float>() : nullptr;
  const float* xp = resid ? resid->data_ptr<float>() : nullptr;
  std::vector<float*> dp;
  for (auto& t : dst) dp.push_back(t.data_ptr<float>());
  at::parallel_for(0, M, rows_per_task(ld), [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const float sm = sp[m];
      for (int64_t j = 0; j < outs; ++j) {
        const float* a = ap + m * ld + j * N;
        const float* r = rp + j * N;
        const float* b = bp ? bp + j * N : nullptr;
        float* d = dp[j] + m * N;
        for (int64_t n = 0; n < N; ++n) {
          float y = a[n] * sm;
          y = y * r[n];
          if (b) y = y + b[n];
          if (xp) y = y + xp[m * N + n];
          d[n] = y;
        }
      }
    }
  });
}

// one quantized linear layer: x [M, K] -> [M, N] (rescaled, + bias, + resid when given)
struct Linear {
  Tensor planes, info, rows, bias;
  int64_t bits;
  Tensor operator()(const Tensor& x, const Tensor* resid = nullptr) const {
    Tensor q, qsum, s;
    quantize_tokens(x, bits, q, qsum, s);
    Tensor acc = lowbit_gemm(q, qsum, planes, info);
    std::vector<Tensor> y{at::empty({x.size(0), rows.size(0)}, x.options())};
    rescale(acc, s, rows, bias, resid, y);
    return y[0];
  }
};

// OpenMP's thread count for the calling thread's next parallel regions (ATen's), restored on exit
struct OmpThreads {
  int saved;
  explicit OmpThreads(int n) : saved(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~OmpThreads() { omp_set_num_threads(saved); }
};

// hidden [B, T, H] fp32 -> the last layer's output [B, T, H]. Inputs of fewer than serial_below_rows tokens
// (B x T) run on the calling thread alone: waking other threads for each small kernel costs more than they save. params: 20 tensors per layer (see xtc/native.py,
// NativeEncoder.params), bits: 4 activation bit-widths per layer (qkv, attention output, intermediate, output)
Tensor bert_encoder(const Tensor& hidden, const std::optional<Tensor>& mask, at::TensorList params,
                    at::IntArrayRef bits, int64_t heads, double eps, int64_t serial_below_rows) {
  TORCH_CHECK(hidden.dim() == 3 && hidden.scalar_type() == at::kFloat && hidden.device().is_cpu(),
              "bert_encoder: hidden must be fp32 [B, T, H] on the CPU");
  const int64_t per_layer = 20;
  TORCH_CHECK(params.size() % per_layer == 0 && (int64_t)bits.size() * per_layer == 4 * (int64_t)params.size(),
              "bert_encoder: ", per_layer, " tensors and 4 bit-widths per layer");
  const int64_t layers = params.size() / per_layer;
  const int64_t B = hidden.size(0), T = hidden.size(1), H = hidden.size(2), M = B * T, d = H / heads;
  const double scaling = std::pow((double)d, -0.5);
  std::optional<OmpThreads> serial;
  if (M < serial_below_rows) serial.emplace(1);
  Tensor h = hidden.contiguous().reshape({M, H});
  for (int64_t l = 0; l < layers; ++l) {
    const Tensor* p = params.data() + l * per_layer;
    const int64_t* b = bits.data() + l * 4;
    // query, key, value: one quantization of h, one GEMM on [K, 3H] codes, three rescaled outputs
    Tensor q8, qsum, s;
    quantize_tokens(h, b[0], q8, qsum, s);
    Tensor acc = lowbit_gemm(q8, qsum, p[0], p[1]);
    std::vector<Tensor> qkv{at::empty({M, H}, h.options()), at::empty({M, H}, h.options()),
                            at::empty({M, H}, h.options())};
    rescale(acc, s, p[2], p[3], nullptr, qkv);
    for (auto& t : qkv) t = t.view({B, T, heads, d}).transpose(1, 2);
    // attention as Hugging Face's sdpa_attention_forward calls it (encoder: not causal, no dropout)
    Tensor ctx = at::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], mask, 0.0, false, scaling);
    ctx = ctx.transpose(1, 2).contiguous().reshape({M, H});
    // attention output: dense + residual, LayerNorm
    Linear out_attn{p[4], p[5], p[6], p[7], b[1]};
    Tensor a = at::layer_norm(out_attn(ctx, &h), {H}, p[8], p[9], eps);
    // feed-forward: dense, GELU (erf), dense + residual, LayerNorm
    Linear inter{p[10], p[11], p[12], p[13], b[2]};
    Tensor g = at::gelu(inter(a));
    Linear out_ffn{p[14], p[15], p[16], p[17], b[3]};
    h = at::layer_norm(out_ffn(g, &a), {H}, p[18], p[19], eps);
  }
  return h.reshape({B, T, H});
}

}  // namespace

TORCH_LIBRARY(xtc_native, m) {
  m.def("pack_codes(Tensor codes_t) -> Tensor[]", &pack_codes);
  m.def("packed_matmul(Tensor q, Tensor planes, Tensor info) -> Tensor", &packed_matmul);
  m.def("bert_encoder(Tensor hidden, Tensor? mask, Tensor[] params, int[] bits, int heads, float eps, "
        "int serial_below_rows=0) -> Tensor",
        &bert_encoder);
}
