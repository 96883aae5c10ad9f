// The encoder layers of a BERT-layout integer model (xtc.native.NativeEncoder) in one C++ call per forward.
//
// Each layer computes what the Python integer path (xtc.infer.IntLinear inside Hugging Face's BertLayer, sdpa
// attention) computes, op for op and in the same order, so the logits are the same bit for bit:
//   quantize per token:  s = 2 max|x| / 2^b (1 where 0), q = clamp(round_half_even(x / s))
//   integer GEMM:        q @ codes exactly in int32 (AMX tiles, else AVX-512 VNNI) on the codes kept as bit-planes
//                        (1 bit a weight for binary codes), converted to fp32 as the Python path's int32 product is
//   rescale:             y = ((acc * s) * row_scale) + bias   [+ residual], each step rounded to fp32, in the
//                        GEMM's epilogue (no FMA: separate intrinsics, built with -ffp-contract=off)
//   attention:           at::scaled_dot_product_attention with Hugging Face's arguments (mask, scale = d^-0.5)
//   LayerNorm, GELU:     ATen's own kernels
// The query, key and value layers quantize the same input, so they run as one GEMM on their codes side by side
// (the integer sums of each output column do not depend on its neighbours) and are rescaled into three tensors.
// What saves time against the Python path: no Python between ops, one quantize pass per layer input and the
// rescale inside the GEMM instead of several ATen ops, one GEMM instead of three for Q/K/V. What saves memory: the
// codes at their own bit-width (the Python path holds int8 codes and oneDNN's int8 copy of them), and no oneDNN
// (its reorder and GEMM code alone is ~9 MiB of a process's resident memory).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/library.h>

#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <vector>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
inline void cpu_relax() { _mm_pause(); }
#else
inline void cpu_relax() {}
#endif

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
constexpr int64_t kMAlign = 32;      // q has rows up to a multiple of 32 (two AMX tiles of 16 rows; the rows past
                                     // M are read, their products never stored)

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

// What the GEMM writes for each product acc = sum_k q[m, k] u[k, n]: y = float(acc + cmin * qsum[m]), the exact
// integer q @ codes, then (with scales s) y = ((y * s[m]) * rows[n]) + bias[n] (+ resid[m, n]), each step rounded
// to fp32 as the Python path's separate ops round it, into outputs side by side: column n goes to
// dst[n / width][m, n % width] (query, key, value: three; otherwise one). Columns from N on are padding.
struct Epilogue {
  const int32_t* qsum = nullptr;
  int32_t cmin = 0;
  const float *s = nullptr, *rows = nullptr, *bias = nullptr, *resid = nullptr;
  float* dst[3] = {nullptr, nullptr, nullptr};
  int64_t width = 0, N = 0;

  // which output column n belongs to, without a division (at most three outputs)
  int64_t output_of(int64_t n) const { return (n >= width) + (n >= 2 * width); }

  void store1(int64_t m, int64_t n, int32_t acc) const {
    if (n >= N) return;
    const int64_t j = output_of(n), c = n - j * width;
    float y = (float)(acc + cmin * qsum[m]);
    if (s) {
      y = y * s[m];
      y = y * rows[n];
      if (bias) y = y + bias[n];
      if (resid) y = y + resid[m * width + c];
    }
    dst[j][m * width + c] = y;
  }
#ifdef __AVX512F__
  inline __attribute__((always_inline)) void store16(int64_t m, int64_t n, __m512i acc) const {
    const int64_t j = output_of(n), c = n - j * width;
    if (n + 16 > N || c + 16 > width) {  // the last columns, or two outputs' columns
      alignas(64) int32_t a[16];
      _mm512_store_si512(a, acc);
      for (int64_t i = 0; i < 16; ++i) store1(m, n + i, a[i]);
      return;
    }
    __m512 y = _mm512_cvtepi32_ps(_mm512_add_epi32(acc, _mm512_set1_epi32(cmin * qsum[m])));
    if (s) {
      y = _mm512_mul_ps(y, _mm512_set1_ps(s[m]));
      y = _mm512_mul_ps(y, _mm512_loadu_ps(rows + n));
      if (bias) y = _mm512_add_ps(y, _mm512_loadu_ps(bias + n));
      if (resid) y = _mm512_add_ps(y, _mm512_loadu_ps(resid + m * width + c));
    }
    _mm512_storeu_ps(dst[j] + m * width + c, y);
  }
#endif
};

// rows m .. m + R - 1 of q (row stride ldq) times one panel (u in buf, its first column n0) -> ep
template <int R>
void panel_rows(const uint8_t* buf, int64_t K4, const int8_t* q, int64_t ldq, int64_t m, int64_t n0,
                const Epilogue& ep) {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
  __m512i acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int z = 0; z < 4; ++z) acc[r][z] = _mm512_setzero_si512();
  for (int64_t kk = 0; kk < K4; ++kk) {
    const __m512i w0 = _mm512_loadu_si512(buf + kk * 256), w1 = _mm512_loadu_si512(buf + kk * 256 + 64),
                  w2 = _mm512_loadu_si512(buf + kk * 256 + 128), w3 = _mm512_loadu_si512(buf + kk * 256 + 192);
    for (int r = 0; r < R; ++r) {
      int32_t quad;
      std::memcpy(&quad, q + (m + r) * ldq + kk * 4, 4);
      const __m512i a = _mm512_set1_epi32(quad);
      acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], w0, a);
      acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], w1, a);
      acc[r][2] = _mm512_dpbusd_epi32(acc[r][2], w2, a);
      acc[r][3] = _mm512_dpbusd_epi32(acc[r][3], w3, a);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int z = 0; z < 4; ++z) ep.store16(m + r, n0 + z * 16, acc[r][z]);
#else
  for (int r = 0; r < R; ++r) {
    int32_t acc[kPanel] = {0};
    for (int64_t kk = 0; kk < K4; ++kk)
      for (int64_t col = 0; col < kPanel; ++col)
        for (int64_t i = 0; i < 4; ++i)
          acc[col] += (int32_t)buf[(kk * 4 + col / 16) * 64 + col % 16 * 4 + i] *
                      (int32_t)q[(m + r) * ldq + kk * 4 + i];
    for (int64_t col = 0; col < kPanel; ++col) ep.store1(m + r, n0 + col, acc[col]);
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

// rows [m0, m1) of q (zero rows up to a multiple of 32) times one panel (u in buf, its first column n0) -> ep
void panel_rows_amx(const uint8_t* buf, int64_t K4, const int8_t* q, int64_t ldq, int64_t m0, int64_t m1, int64_t n0,
                    const Epilogue& ep) {
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
        ep.store16(m + r, n0 + h * 32, _mm512_load_si512(&c[r][0]));
        ep.store16(m + r, n0 + h * 32 + 16, _mm512_load_si512(&c[r][16]));
      }
    }
  }
}
#endif

// The threads that run one forward. Alone (size 1), each step is one ATen-style call that parallelises itself
// with at::parallel_for, waking the other threads for it: right for large inputs. For small ones (a short
// sentence) those wake-ups cost more than the steps, so the forward runs as one OpenMP region instead: each of
// its threads takes a share of every step (rows, attention heads, GEMM tasks; at::parallel_for inside the region
// runs on the calling thread) and they meet at a barrier they spin on between steps (no sleeping: the steps are
// microseconds apart). Each value is computed by the same code either way.
struct TeamFailed {};  // thrown at a barrier when another thread of the team failed (its error is the one raised)

struct SpinBarrier {
  std::atomic<int> waiting{0}, phase{0};
  std::atomic<bool> failed{false};
  int size = 1;
  void wait() {
    const int ph = phase.load(std::memory_order_acquire);
    if (waiting.fetch_add(1, std::memory_order_acq_rel) == size - 1) {
      waiting.store(0, std::memory_order_relaxed);
      phase.store(ph + 1, std::memory_order_release);
    } else {
      while (phase.load(std::memory_order_acquire) == ph) {
        if (failed.load(std::memory_order_relaxed)) throw TeamFailed();
        cpu_relax();
      }
    }
  }
};

struct Team {
  int id = 0, size = 1;
  SpinBarrier* barrier = nullptr;
  // this thread's share [begin, end) of n items
  std::pair<int64_t, int64_t> share(int64_t n) const { return {n * id / size, n * (id + 1) / size}; }
  void sync() const {
    if (barrier) barrier->wait();
  }
};

// q [M, K] @ codes [K, N] -> ep, each product the exact integer. q: int8 codes [M rounded up to 32, K rounded up
// to 64] (zero past K), qsum: each row's sum of codes. On AMX tiles where the CPU and kernel have them, else
// AVX-512 VNNI (else plain C++). ep.qsum and ep.cmin are set here. In a team, this thread's share of the tasks.
void lowbit_gemm(const Tensor& q, const Tensor& qsum, const Tensor& planes, const Tensor& info, Epilogue ep,
                 const Team& tm = Team()) {
  const int64_t* inf = info.data_ptr<int64_t>();
  const int64_t M = qsum.size(0), ldq = q.size(1), K4 = planes.size(1), panels = planes.size(0);
  TORCH_CHECK(q.size(0) == round_up(M, kMAlign), "lowbit_gemm: q's rows are not padded to a multiple of 32");
  TORCH_CHECK(ldq == K4 * 4, "lowbit_gemm: codes of ", ldq, " columns for a weight of ", inf[0], " rows");
  std::vector<int> bits;
  for (int j = 0; j < 8; ++j)
    if (inf[3] >> j & 1) bits.push_back(j);
  ep.qsum = qsum.data_ptr<int32_t>();
  ep.cmin = (int32_t)inf[2];
  ep.N = inf[1];
  const int8_t* qp = q.data_ptr<int8_t>();
  const uint64_t* wp = reinterpret_cast<const uint64_t*>(planes.data_ptr<int64_t>());
  const int64_t P = bits.size(), blocks = (M + kRowBlock - 1) / kRowBlock;
#if defined(__AMX_INT8__) && defined(__AMX_TILE__)
  const bool amx = amx_ready();
#endif
  // one task: one panel for one block of rows; this thread's share of them
  const auto [first, last] = tm.share(blocks * panels);
  at::parallel_for(first, last, 1, [&](int64_t begin, int64_t end) {
    std::unique_ptr<uint8_t[]> buf(new uint8_t[K4 * 256]);  // (no zero fill: unpack_panel writes all of it)
#if defined(__AMX_INT8__) && defined(__AMX_TILE__)
    std::optional<AmxTiles> tiles;
    if (amx) tiles.emplace();
#endif
    for (int64_t t = begin; t < end; ++t) {
      const int64_t blk = t / panels, p = t % panels, m0 = blk * kRowBlock, m1 = std::min(M, m0 + kRowBlock);
      unpack_panel(wp + p * K4 * 4 * P, K4, bits, buf.get());
#if defined(__AMX_INT8__) && defined(__AMX_TILE__)
      if (amx) {
        panel_rows_amx(buf.get(), K4, qp, ldq, m0, m1, p * kPanel, ep);
        continue;
      }
#endif
      int64_t m = m0;
      for (; m + 6 <= m1; m += 6) panel_rows<6>(buf.get(), K4, qp, ldq, m, p * kPanel, ep);
      switch (m1 - m) {
        case 5: panel_rows<5>(buf.get(), K4, qp, ldq, m, p * kPanel, ep); break;
        case 4: panel_rows<4>(buf.get(), K4, qp, ldq, m, p * kPanel, ep); break;
        case 3: panel_rows<3>(buf.get(), K4, qp, ldq, m, p * kPanel, ep); break;
        case 2: panel_rows<2>(buf.get(), K4, qp, ldq, m, p * kPanel, ep); break;
        case 1: panel_rows<1>(buf.get(), K4, qp, ldq, m, p * kPanel, ep); break;
        default: break;
      }
    }
  });
}

// q [M, K] int8 @ the codes pack_codes packed -> fp32 [M, N]: the GEMM on its own (tests compare it with the int32
// product)
Tensor packed_matmul(const Tensor& q, const Tensor& planes, const Tensor& info) {
  TORCH_CHECK(q.dim() == 2 && q.scalar_type() == at::kChar && q.size(1) == info[0].item<int64_t>(),
              "packed_matmul: int8 q [M, K] for codes of K rows");
  const int64_t K = q.size(1), N = info[1].item<int64_t>();
  Tensor qp = at::constant_pad_nd(q, {0, round_up(K, kKAlign) - K, 0, round_up(q.size(0), kMAlign) - q.size(0)});
  Tensor out = at::empty({q.size(0), N}, q.options().dtype(at::kFloat));
  Epilogue ep;
  ep.dst[0] = out.data_ptr<float>();
  ep.width = N;
  lowbit_gemm(qp, q.sum(1, false, at::kInt), planes, info, ep);
  return out;
}

// rows of `cols` values per parallel task: at least kTaskValues values, so that small inputs (a batch of one
// short sentence) run on the calling thread instead of waking the others for microseconds of work
constexpr int64_t kTaskValues = 1 << 16;
int64_t rows_per_task(int64_t cols) { return std::max<int64_t>(1, kTaskValues / std::max<int64_t>(cols, 1)); }

// per-token symmetric quantization of rows [m0, m1) of x [M, K] (fp32, contiguous) to int8 codes q (row stride
// ldq, a multiple of 64: zero from K on), their sum per row qsum and fp32 scales s: the same numbers as
// xtc.quant.quantize_tokens (max and division are exact or correctly rounded whatever the vector width; rounding
// is half to even, as torch.round)
void quantize_rows(const float* xp, int64_t K, int64_t bits, int8_t* qp, int64_t ldq, int32_t* qs, float* sp,
                   int64_t m0, int64_t m1) {
  const float lo = -std::ldexp(1.0f, bits - 1), hi = std::ldexp(1.0f, bits - 1) - 1.0f;
  const float levels = std::ldexp(1.0f, bits);
  at::parallel_for(m0, m1, rows_per_task(K), [&](int64_t begin, int64_t end) {
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

// a forward's working memory, allocated once and reused by every layer: q's codes (rows up to a multiple of 32,
// the wider of the hidden and intermediate sizes up to a multiple of 64), their sums and scales
struct Workspace {
  Tensor q, qsum, s;
  Workspace(int64_t M, int64_t widest, const at::TensorOptions& opt)
      : q(at::empty({round_up(M, kMAlign) * round_up(widest, kKAlign)}, opt.dtype(at::kChar))),
        qsum(at::empty({M}, opt.dtype(at::kInt))),
        s(at::empty({M}, opt)) {}
};

// one quantized linear layer: x [M, K] -> dst (rescaled, + bias, + resid when given): one [M, N] tensor, or the
// query, key and value outputs side by side (each [M, N / 3]). Quantizes x into ws, then the GEMM; in a team,
// each step on this thread's share and a barrier after each.
struct Linear {
  Tensor planes, info, rows, bias;
  int64_t bits;
  void operator()(const Team& tm, Workspace& ws, const Tensor& x, const std::vector<Tensor>& dst,
                  const Tensor* resid = nullptr) const {
    const int64_t M = x.size(0), K = x.size(1), ldq = round_up(K, kKAlign);
    Tensor q = ws.q.narrow(0, 0, round_up(M, kMAlign) * ldq).view({round_up(M, kMAlign), ldq});
    const auto [m0, m1] = tm.share(M);
    quantize_rows(x.data_ptr<float>(), K, bits, q.data_ptr<int8_t>(), ldq, ws.qsum.data_ptr<int32_t>(),
                  ws.s.data_ptr<float>(), m0, m1);
    tm.sync();
    Epilogue ep;
    ep.s = ws.s.data_ptr<float>();
    ep.rows = rows.data_ptr<float>();
    ep.bias = bias.numel() ? bias.data_ptr<float>() : nullptr;
    ep.resid = resid ? resid->data_ptr<float>() : nullptr;
    for (size_t j = 0; j < dst.size(); ++j) ep.dst[j] = dst[j].data_ptr<float>();
    ep.width = dst[0].size(1);
    lowbit_gemm(q, ws.qsum, planes, info, ep, tm);
    tm.sync();
  }
};

// y = f(x) row by row: alone, one call on all rows (f parallelises itself); in a team, each thread f on its share
// of the rows, copied into y. f computes each row on its own (LayerNorm), so the values do not depend on the split.
template <class F>
void by_rows(const Team& tm, const Tensor& x, Tensor& y, F f) {
  if (tm.size == 1) {
    y = f(x);
    return;
  }
  const auto [m0, m1] = tm.share(x.size(0));
  if (m1 > m0) y.narrow(0, m0, m1 - m0).copy_(f(x.narrow(0, m0, m1 - m0)));
  tm.sync();
}

// inputs of fewer tokens than this (B x T) run as one team of threads (see Team); larger ones step by step
constexpr int64_t kTeamBelowRows = 512;

// one encoder layer on h [M, H] -> h (alone: a new tensor; in a team: overwritten in place). qkv, y and g are
// this forward's buffers; ctx and a too in a team (shared, written in shares), alone each step's new output.
void bert_layer(const Team& tm, Workspace& ws, Tensor& h, const Tensor* p, const int64_t* b,
                const std::optional<Tensor>& mask, int64_t B, int64_t T, int64_t heads, double eps,
                std::vector<Tensor>& qkv, Tensor& ctx, Tensor& y, Tensor& a, Tensor& g) {
  const int64_t M = h.size(0), H = h.size(1), d = H / heads;
  const double scaling = std::pow((double)d, -0.5);
  // query, key, value: one quantization of h, one GEMM on [K, 3H] codes, three rescaled outputs
  Linear{p[0], p[1], p[2], p[3], b[0]}(tm, ws, h, qkv);
  // attention as Hugging Face's sdpa_attention_forward calls it (encoder: not causal, no dropout); in a team, each
  // thread its share of the heads (each head's numbers are computed on their own)
  std::vector<Tensor> qkv4;
  for (auto& t : qkv) qkv4.push_back(t.view({B, T, heads, d}).transpose(1, 2));
  if (tm.size == 1) {
    ctx = at::scaled_dot_product_attention(qkv4[0], qkv4[1], qkv4[2], mask, 0.0, false, scaling)
              .transpose(1, 2).contiguous().reshape({M, H});
  } else {
    const auto [h0, h1] = tm.share(heads);
    if (h1 > h0) {
      auto part = [&](const Tensor& t) { return t.narrow(1, h0, h1 - h0); };
      std::optional<Tensor> m = mask;
      if (m && m->dim() == 4 && m->size(1) == heads) m = part(*m);
      Tensor out = at::scaled_dot_product_attention(part(qkv4[0]), part(qkv4[1]), part(qkv4[2]), m, 0.0, false,
                                                    scaling);
      ctx.view({B, T, heads, d}).narrow(2, h0, h1 - h0).copy_(out.transpose(1, 2));
    }
    tm.sync();
  }
  // attention output: dense + residual, LayerNorm
  Linear{p[4], p[5], p[6], p[7], b[1]}(tm, ws, ctx, {y}, &h);
  by_rows(tm, y, a, [&](const Tensor& x) { return at::layer_norm(x, {H}, p[8], p[9], eps); });
  // feed-forward: dense, GELU (erf, in place: the same kernel and numbers as at::gelu), dense + residual, LayerNorm
  Linear{p[10], p[11], p[12], p[13], b[2]}(tm, ws, a, {g});
  if (tm.size == 1) {
    at::gelu_(g);
  } else {  // ATen's vector loop leaves a tail that is not a multiple of 64 values to its scalar code: split rows
    const int64_t I = g.size(1);  // only where every share is a whole number of 64-value blocks, as in one call
    const auto [m0, m1] = I % 64 == 0 ? tm.share(M) : (tm.id == 0 ? std::pair<int64_t, int64_t>{0, M}
                                                                    : std::pair<int64_t, int64_t>{0, 0});
    if (m1 > m0) {
      Tensor rows = g.narrow(0, m0, m1 - m0);
      at::gelu_(rows);
    }
    tm.sync();
  }
  Linear{p[14], p[15], p[16], p[17], b[3]}(tm, ws, g, {y}, &a);
  by_rows(tm, y, h, [&](const Tensor& x) { return at::layer_norm(x, {H}, p[18], p[19], eps); });
}

// hidden [B, T, H] fp32 -> the last layer's output [B, T, H]. params: 20 tensors per layer (see xtc/native.py,
// NativeEncoder.params), bits: 4 activation bit-widths per layer (qkv, attention output, intermediate, output).
Tensor bert_encoder(const Tensor& hidden, const std::optional<Tensor>& mask, at::TensorList params,
                    at::IntArrayRef bits, int64_t heads, double eps) {
  TORCH_CHECK(hidden.dim() == 3 && hidden.scalar_type() == at::kFloat && hidden.device().is_cpu(),
              "bert_encoder: hidden must be fp32 [B, T, H] on the CPU");
  const int64_t per_layer = 20;
  TORCH_CHECK(params.size() % per_layer == 0 && (int64_t)bits.size() * per_layer == 4 * (int64_t)params.size(),
              "bert_encoder: ", per_layer, " tensors and 4 bit-widths per layer");
  const int64_t layers = params.size() / per_layer;
  const int64_t B = hidden.size(0), T = hidden.size(1), H = hidden.size(2), M = B * T;
  const int64_t I = layers ? params[12].size(0) : H;  // the intermediate size (its row scales)
  const auto opt = hidden.options();
  Workspace ws(M, std::max(H, I), opt);
  std::vector<Tensor> qkv{at::empty({M, H}, opt), at::empty({M, H}, opt), at::empty({M, H}, opt)};
  Tensor y = at::empty({M, H}, opt), g = at::empty({M, I}, opt);
  Tensor ctx, a;  // alone: each step's own output; in a team: buffers the threads write in shares (below)
  Tensor h = hidden.contiguous().reshape({M, H});
  const int threads = at::get_num_threads();
  if (threads == 1 || M >= kTeamBelowRows || at::in_parallel_region()) {
    for (int64_t l = 0; l < layers; ++l)
      bert_layer(Team(), ws, h, params.data() + l * per_layer, bits.data() + l * 4, mask, B, T, heads, eps, qkv,
                 ctx, y, a, g);
    return h.reshape({B, T, H});
  }
  h = h.clone();  // the team's in-place layer output
  ctx = at::empty({M, H}, opt);
  a = at::empty({M, H}, opt);
  SpinBarrier barrier;
  std::exception_ptr error;
  const at::ThreadLocalState caller;  // inference mode, grad mode, ... are thread-local: the team takes the caller's
#pragma omp parallel num_threads(threads)
  {
#pragma omp single
    barrier.size = omp_get_num_threads();  // (what OpenMP gave; single's own barrier publishes it)
    const at::ThreadLocalStateGuard same_state(caller);
    Team tm{omp_get_thread_num(), omp_get_num_threads(), &barrier};
    try {
      for (int64_t l = 0; l < layers; ++l)
        bert_layer(tm, ws, h, params.data() + l * per_layer, bits.data() + l * 4, mask, B, T, heads, eps, qkv, ctx,
                   y, a, g);
    } catch (const TeamFailed&) {
    } catch (...) {  // no exception may leave an OpenMP region: keep the first, release the others' barrier
#pragma omp critical
      if (!error) error = std::current_exception();
      barrier.failed.store(true);
    }
  }
  if (error) std::rethrow_exception(error);
  return h.reshape({B, T, H});
}

}  // namespace

TORCH_LIBRARY(xtc_native, m) {
  m.def("pack_codes(Tensor codes_t) -> Tensor[]", &pack_codes);
  m.def("packed_matmul(Tensor q, Tensor planes, Tensor info) -> Tensor", &packed_matmul);
  m.def("bert_encoder(Tensor hidden, Tensor? mask, Tensor[] params, int[] bits, int heads, float eps) -> Tensor",
        &bert_encoder);
}
