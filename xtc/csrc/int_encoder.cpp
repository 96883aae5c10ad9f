// The encoder layers of a BERT-layout integer model (xtc.native.NativeEncoder) in one C++ call per forward.
//
// Each layer computes what the Python integer path (xtc.infer.IntLinear inside Hugging Face's BertLayer, sdpa
// attention) computes, op for op and in the same order, so the logits are the same bit for bit:
//   quantize per token:  s = 2 max|x| / 2^b (1 where 0), q = clamp(round_half_even(x / s))
//   int8 GEMM:           oneDNN's qlinear_pointwise on codes prepacked once (unit scales, fp32 out: exact integers)
//   rescale:             y = ((acc * s) * row_scale) + bias   [+ residual], each step rounded to fp32 (no FMA:
//                        built with -ffp-contract=off)
//   attention:           at::scaled_dot_product_attention with Hugging Face's arguments (mask, scale = d^-0.5)
//   LayerNorm, GELU:     ATen's own kernels
// The query, key and value layers quantize the same input, so they run as one GEMM on their codes side by side
// (the integer sums of each output column do not depend on its neighbours) and are rescaled into three tensors.
// What saves time against the Python path: no Python between ops, one quantize pass and one rescale pass per
// layer input/output instead of several ATen ops, one GEMM instead of three for Q/K/V.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <optional>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include <vector>

namespace {

using at::Tensor;

// onednn::qlinear_pointwise (default overload): int8 x prepacked int8 -> fp32 with unit scales
Tensor onednn_int8_gemm(const Tensor& q, const Tensor& packed, const Tensor& ones, const Tensor& zeros) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("onednn::qlinear_pointwise", "")
                       .typed<Tensor(Tensor, double, int64_t, Tensor, Tensor, Tensor, std::optional<Tensor>, double,
                                     int64_t, std::optional<at::ScalarType>, c10::string_view,
                                     c10::List<std::optional<at::Scalar>>, c10::string_view)>();
  return op.call(q, 1.0, 0, packed, ones, zeros, std::nullopt, 1.0, 0, at::kFloat, "none",
                 c10::List<std::optional<at::Scalar>>(), "");
}

// rows of `cols` values per parallel task: at least kTaskValues values, so that small inputs (a batch of one
// short sentence) run on the calling thread instead of waking the others for microseconds of work
constexpr int64_t kTaskValues = 1 << 16;
int64_t rows_per_task(int64_t cols) { return std::max<int64_t>(1, kTaskValues / std::max<int64_t>(cols, 1)); }

// per-token symmetric quantization of x [M, K] (fp32, contiguous) to int8 codes and fp32 scales [M]: the same
// numbers as xtc.quant.quantize_tokens (max and division are exact or correctly rounded whatever the vector width;
// rounding is half to even, as torch.round)
void quantize_tokens(const Tensor& x, int64_t bits, Tensor& q, Tensor& s) {
  const int64_t M = x.size(0), K = x.size(1);
  q = at::empty({M, K}, x.options().dtype(at::kChar));
  s = at::empty({M}, x.options());
  const float* xp = x.data_ptr<float>();
  int8_t* qp = q.data_ptr<int8_t>();
  float* sp = s.data_ptr<float>();
  const float lo = -std::ldexp(1.0f, bits - 1), hi = std::ldexp(1.0f, bits - 1) - 1.0f;
  const float levels = std::ldexp(1.0f, bits);
  at::parallel_for(0, M, rows_per_task(K), [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const float* row = xp + m * K;
      int8_t* out = qp + m * K;
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
      // codes: clamp(round(x / s))
      k = 0;
#ifdef __AVX512F__
      const __m512 vs = _mm512_set1_ps(scale), vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
      for (; k + 16 <= K; k += 16) {
        __m512 v = _mm512_div_ps(_mm512_loadu_ps(row + k), vs);
        v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v = _mm512_min_ps(_mm512_max_ps(v, vlo), vhi);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + k), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v)));
      }
#endif
      for (; k < K; ++k) out[k] = static_cast<int8_t>(std::fmin(std::fmax(std::nearbyint(row[k] / scale), lo), hi));
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
  Tensor packed, ones, zeros, rows, bias;
  int64_t bits;
  Tensor operator()(const Tensor& x, const Tensor* resid = nullptr) const {
    Tensor q, s;
    quantize_tokens(x, bits, q, s);
    Tensor acc = onednn_int8_gemm(q, packed, ones, zeros);
    std::vector<Tensor> y{at::empty({x.size(0), rows.size(0)}, x.options())};
    rescale(acc, s, rows, bias, resid, y);
    return y[0];
  }
};

// OpenMP's thread count for the calling thread's next parallel regions (ATen's and oneDNN's), restored on exit
struct OmpThreads {
  int saved;
  explicit OmpThreads(int n) : saved(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~OmpThreads() { omp_set_num_threads(saved); }
};

// hidden [B, T, H] fp32 -> the last layer's output [B, T, H]. Inputs of fewer than serial_below_rows tokens
// (B x T) run on the calling thread alone: waking other threads for each small kernel costs more than they save. params: 24 tensors per layer (see xtc/native.py,
// NativeEncoder.params), bits: 4 activation bit-widths per layer (qkv, attention output, intermediate, output)
Tensor bert_encoder(const Tensor& hidden, const std::optional<Tensor>& mask, at::TensorList params,
                    at::IntArrayRef bits, int64_t heads, double eps, int64_t serial_below_rows) {
  TORCH_CHECK(hidden.dim() == 3 && hidden.scalar_type() == at::kFloat && hidden.device().is_cpu(),
              "bert_encoder: hidden must be fp32 [B, T, H] on the CPU");
  const int64_t per_layer = 24;
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
    Tensor q8, s;
    quantize_tokens(h, b[0], q8, s);
    Tensor acc = onednn_int8_gemm(q8, p[0], p[1], p[2]);
    std::vector<Tensor> qkv{at::empty({M, H}, h.options()), at::empty({M, H}, h.options()),
                            at::empty({M, H}, h.options())};
    rescale(acc, s, p[3], p[4], nullptr, qkv);
    for (auto& t : qkv) t = t.view({B, T, heads, d}).transpose(1, 2);
    // attention as Hugging Face's sdpa_attention_forward calls it (encoder: not causal, no dropout)
    Tensor ctx = at::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], mask, 0.0, false, scaling);
    ctx = ctx.transpose(1, 2).contiguous().reshape({M, H});
    // attention output: dense + residual, LayerNorm
    Linear out_attn{p[5], p[6], p[7], p[8], p[9], b[1]};
    Tensor a = at::layer_norm(out_attn(ctx, &h), {H}, p[10], p[11], eps);
    // feed-forward: dense, GELU (erf), dense + residual, LayerNorm
    Linear inter{p[12], p[13], p[14], p[15], p[16], b[2]};
    Tensor g = at::gelu(inter(a));
    Linear out_ffn{p[17], p[18], p[19], p[20], p[21], b[3]};
    h = at::layer_norm(out_ffn(g, &a), {H}, p[22], p[23], eps);
  }
  return h.reshape({B, T, H});
}

}  // namespace

// one kernel for every dispatch key: its arguments mix dense CPU tensors and oneDNN's opaque (MkldnnCPU) ones
TORCH_LIBRARY(xtc_native, m) {
  m.def("bert_encoder(Tensor hidden, Tensor? mask, Tensor[] params, int[] bits, int heads, float eps, "
        "int serial_below_rows=0) -> Tensor",
        &bert_encoder);
}
