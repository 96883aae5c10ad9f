"""XTC weight/activation quantization for Hugging Face BERT, as drop-in module wrappers.

Weights: integer codes times one scale per group of contiguous rows, by the codec of (bits, method): 1-bit
binary, 2-bit ternary or k-bit uniform (xtc.codec has the maths and the packings).
Activations: k-bit symmetric uniform with a dynamic scale, one per token (row of the last dim).
Both use a straight-through estimator: the gradient reaches the latent fp32 weight unchanged.

The wrappers subclass nn.Linear / nn.Embedding and reuse the original Parameters, so a model's
state_dict keys stay exactly Hugging Face's and save_pretrained/from_pretrained keep working.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from xtc.arch import role_of  # noqa: F401  (the roles of each architecture's modules; re-exported)
from xtc.codec import Codec, codec_for
from xtc.config import ROLES, QuantSpec  # noqa: F401  (ROLES: re-exported beside the wrappers)

ACT_CODE_BITS = range(2, 9)  # what quantize_activation's int8 arithmetic can compute (tests probe 4 bits)

# -----------------------------------------------------------------------------
# weight quantization: the maths of each scheme is its codec's (xtc.codec); the fake-quant forward and the
# packed export both ask it, so dequantize(codes) == quantize_weight bit-exactly.


def scheme_of(bits: int, method: str = "xtc") -> str:
    """Which quantizer a (bits, method) pair means: 'binary', 'ternary', 'uniform' or 'none' (its codec's name)."""
    codec = codec_for(bits, method)
    return "none" if codec is None else codec.scheme


def _codec_and_groups(w: torch.Tensor, bits: int, groups: int, method: str):
    """(the codec of (bits, method), w as fp32 [groups, -1]), after checking that the groups divide w's rows."""
    codec = codec_for(bits, method)
    if codec is None:
        raise ValueError("32-bit weights have no codes")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    rows = w.shape[0]  # a weight is a matrix (or a table): never 0-d
    if rows % groups != 0:
        raise ValueError(
            f"groups={groups} does not divide the {rows} rows of a weight of shape {tuple(w.shape)}; "
            f"pick a number of groups that divides the output dimension")
    return codec, w.detach().to(torch.float32).reshape(groups, -1)


def quantize_weight_codes(w: torch.Tensor, bits: int, groups: int = 1, method: str = "xtc"):
    """-> (int8 codes, same shape as w; float32 scales [groups]). Binary {-1,1}, ternary {-1,0,1}, uniform q."""
    codec, wf = _codec_and_groups(w, bits, groups, method)
    codes, scales = codec.quantize(wf)
    return codes.reshape(w.shape), scales.contiguous()


def dequantize_codes(codes: torch.Tensor, scales: torch.Tensor, bits: int, groups: int,
                     method: str = "xtc", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """codes * per-group scale, shaped like codes. bits/method are checked, not needed for the maths."""
    codec_for(bits, method)
    scales = scales.to(torch.float32).reshape(-1)
    if scales.numel() != groups:
        raise ValueError(f"expected {groups} scales, got {scales.numel()}")
    return Codec.dequantize(codes.reshape(groups, -1), scales, dtype).reshape(codes.shape)


def fake_quant_values(w: torch.Tensor, bits: int, groups: int, method: str, dtype: torch.dtype) -> torch.Tensor:
    """dequantize_codes(*quantize_weight_codes(w, ...)) in `dtype`, the same numbers (tested bit for bit), by
    the codec's fake_quant (binary and ternary: without materialising integer codes). No gradient: see
    quantize_weight."""
    codec, wf = _codec_and_groups(w, bits, groups, method)
    return codec.fake_quant(wf, dtype).reshape(w.shape)


class _WeightSTE(torch.autograd.Function):
    # an autograd.Function rather than w + (wq - w).detach(): that trick is not bit-exact in fp32
    @staticmethod
    def forward(ctx, w, bits, groups, method, dtype):
        return fake_quant_values(w, bits, groups, method, dtype)

    @staticmethod
    def backward(ctx, grad):
        # a bf16 gradient (autocast) reaches the fp32 latent weight as fp32: autograd casts it to the input's dtype
        return grad, None, None, None, None


def quantize_weight(w: torch.Tensor, bits: int, groups: int = 1, method: str = "xtc",
                    dtype: torch.dtype | None = None) -> torch.Tensor:
    """Fake-quantized copy of w (same shape; dtype w's, or `dtype`: the matmul's under autocast, which saves
    a cast); straight-through gradient. bits=32 returns w."""
    if scheme_of(bits, method) == "none":
        return w
    return _WeightSTE.apply(w, bits, groups, method, dtype or w.dtype)


# -----------------------------------------------------------------------------
# activation quantization


def activation_scale(x: torch.Tensor, bits: int = 8, per_token: bool = True) -> torch.Tensor:
    """2 max|x| / 2^b: shape [..., 1] per token (reduced over the last dim), [] per tensor."""
    absx = x.detach().abs()  # in x's dtype: abs and max are exact in bf16 too, so no fp32 copy of x is needed
    m = (absx.amax(dim=-1, keepdim=True) if per_token else absx.amax()).to(torch.float32)
    s = 2 * m / 2**bits
    return torch.where(s > 0, s, torch.ones_like(s))


def _activation_codes(x: torch.Tensor, bits: int, per_token: bool):
    """(fp32 integer-valued q, fp32 scale) with q = clamp(round(x / s)): the one activation quantizer."""
    s = activation_scale(x, bits, per_token)
    # s is fp32, so the quotient is an fp32 temporary whatever x's dtype: rounded and clamped in place on it
    q = torch.div(x, s).round_().clamp_(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return q, s


class _ActSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bits, per_token):
        q, s = _activation_codes(x, bits, per_token)
        return q.mul_(s).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def quantize_activation(x: torch.Tensor, bits: int = 8, per_token: bool = True) -> torch.Tensor:
    """Symmetric dynamic fake quantization of x; straight-through gradient. bits=32 returns x."""
    if bits == 32:
        return x
    if bits not in ACT_CODE_BITS:
        raise ValueError(f"unsupported activation bit-width {bits}; use 2..8 or 32")
    return _ActSTE.apply(x, bits, per_token)


# -----------------------------------------------------------------------------
# the integer maths: the same numbers as the fake-quant maths above, as int8 x int8 -> int32 products


def quantize_tokens(x: torch.Tensor, bits: int, per_token: bool):
    """-> (int8 q, fp32 scale [..., 1] per token or [1, 1] per tensor) with q * scale == the fake-quant of x
    (the same quantizer, _activation_codes, so q is bit-identical)."""
    q, s = _activation_codes(x, bits, per_token)
    return q.to(torch.int8), (s if per_token else s.reshape(1, 1))


def int8_route(device_type: str, m: int, k: int, n: int) -> str:
    """How int8_matmul multiplies int8 [m, k] by [k, n] on a device: "int_mm" (torch._int_mm as is: any shape on
    CPU, oneDNN VNNI/AMX; on CUDA when m > 16 and k, n are multiples of 8), "int_mm_padded" (CUDA with m <= 16:
    rows padded to 32) or "float64" (elsewhere: exact, every partial sum is an integer below 2^53)."""
    if device_type == "cpu":
        return "int_mm"
    if device_type == "cuda" and k % 8 == 0 and n % 8 == 0:
        return "int_mm" if m > 16 else "int_mm_padded"
    return "float64"


def int8_matmul(q: torch.Tensor, w_t: torch.Tensor) -> torch.Tensor:
    """Exact int32 product of int8 [M, K] and int8 [K, N], by the route int8_route picks."""
    route = int8_route(q.device.type, q.shape[0], q.shape[1], w_t.shape[1])
    if route == "int_mm":
        return torch._int_mm(q, w_t)
    if route == "int_mm_padded":
        return torch._int_mm(F.pad(q, (0, 0, 0, 32 - q.shape[0])), w_t)[: q.shape[0]]
    return torch.matmul(q.to(torch.float64), w_t.to(torch.float64)).to(torch.int32)


def prepackable_int8_weight(w_t: torch.Tensor) -> bool:
    """Whether oneDNN's prepacked int8 GEMM multiplies codes [K, N] exactly (prepack_int8_weight's conditions)."""
    if w_t.device.type != "cpu" or not hasattr(torch.ops.onednn, "qlinear_prepack") or w_t.numel() == 0:
        return False
    max_code = int(w_t.abs().max())
    return max_code <= 64 and w_t.shape[0] * 128 * max_code < 2**24


def prepack_int8_weight(w_t: torch.Tensor):
    """oneDNN's prepacked copy of int8 codes [K, N] for int8_matmul_f32 -> (packed, ones [N], zeros [N]), or None where
    that route is unavailable or not exact: off the CPU, where |q @ codes| could reach 2^24 (K * 128 * max|code|),
    beyond which fp32 does not hold every integer and the oneDNN output could differ from the int32 product's, or
    where max|code| > 64: on x86 CPUs without VNNI oneDNN sums pairs of u8 x s8 products in int16 (vpmaddubsw),
    which saturates above 2 * 255 * 64 (the 1- and 2-bit codes are +-1)."""
    if not prepackable_int8_weight(w_t):
        return None
    n = w_t.shape[1]
    return (torch.ops.onednn.qlinear_prepack(w_t.t().contiguous(), None), torch.ones(n),
            torch.zeros(n, dtype=torch.int64))


_PREPACKED_BY_CODES: dict = {}  # (data_ptr, shape, stride) of int8 codes -> (the codes, their prepacked copy)


@torch.library.custom_op("xtc::int8_matmul_f32", mutates_args=())
def _int8_matmul_f32_op(q: torch.Tensor, w_t: torch.Tensor) -> torch.Tensor:
    """int8_matmul_f32 as one opaque op for compiled graphs: the codes' prepacked copy is looked up by the codes'
    storage (made on first use and kept with them), since an opaque oneDNN tensor cannot be a graph input."""
    key = (w_t.data_ptr(), tuple(w_t.shape), tuple(w_t.stride()))
    if key not in _PREPACKED_BY_CODES:
        _PREPACKED_BY_CODES[key] = (w_t, prepack_int8_weight(w_t))
    return int8_matmul_f32(q, w_t, _PREPACKED_BY_CODES[key][1])


@_int8_matmul_f32_op.register_fake
def _(q, w_t):
    return q.new_empty((q.shape[0], w_t.shape[1]), dtype=torch.float32)


def int8_matmul_f32(q: torch.Tensor, w_t: torch.Tensor, packed=None) -> torch.Tensor:
    """int8_matmul(q, w_t) as fp32 (every value an exact integer). With `packed` (prepack_int8_weight): oneDNN's int8
    GEMM on the prepacked weight, unit scales, fp32 out: the same numbers, 1.7-2.4x faster than torch._int_mm on the
    AMX Xeon at M = 1..4096 (which reorders the weight on every call; bench/README.md, "Serving a packed student")."""
    if packed is None:
        return int8_matmul(q, w_t).to(torch.float32)
    if isinstance(packed, str):  # "by_codes", in a compiled graph: the op above
        return torch.ops.xtc.int8_matmul_f32(q, w_t)
    pw, ones, zeros = packed
    return torch.ops.onednn.qlinear_pointwise(q, 1.0, 0, pw, ones, zeros, None, 1.0, 0, torch.float32, "none", [], "")


def row_scales_of(scales: torch.Tensor, groups: int, out_features: int) -> torch.Tensor:
    """fp32 [out]: each weight group's scale repeated over its (contiguous) rows."""
    rows = scales.to(torch.float32).reshape(groups, 1).expand(groups, out_features // groups)
    return rows.reshape(out_features).contiguous()


def integer_linear(q: torch.Tensor, s: torch.Tensor, codes_t: torch.Tensor, row_scales: torch.Tensor,
                   bias: torch.Tensor | None, packed=None) -> torch.Tensor:
    """fp32 [M, out] = (q @ codes_t, exact in int32) * s * row_scales + bias: a quantized Linear layer on
    integers. The one definition both the deployed path (xtc.infer.IntLinear) and the evaluation of a
    fake-quant model (QuantLinear in eval mode) use, so they give the same numbers bit for bit (`packed`: the
    codes prepacked for oneDNN, prepack_int8_weight, or "by_codes" in a compiled graph; same product, faster)."""
    y = int8_matmul_f32(q, codes_t, packed)
    # in place: at batch 32 fresh [M, out] buffers cost page faults; same values as y * s * rows + b
    y.mul_(s).mul_(row_scales)
    if bias is not None:
        y.add_(bias)
    return y


# -----------------------------------------------------------------------------
# module wrappers


class QuantLinear(nn.Linear):
    """nn.Linear with fake-quantized weight and input. Parameter names unchanged (weight, bias)."""

    def __init__(self, in_features, out_features, bias=True, wbits=32, abits=32, groups=1,
                 method="xtc", act_per_token=True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._set_quant(wbits, abits, groups, method, act_per_token)

    def _set_quant(self, wbits, abits, groups, method, act_per_token):
        self.wbits, self.abits, self.groups = wbits, abits, groups
        self.method, self.act_per_token = method, act_per_token
        self.frozen = False  # True: weight already holds quantized values (loaded from a packed file)
        # a packed file's codes (set_codes), else None: integer evaluation derives them from the weight
        self.register_buffer("weight_codes_t", None, persistent=False)
        self.register_buffer("row_scales", None, persistent=False)

    # Evaluation (eval mode, no autograd) of a layer with int8 activations runs integer_linear: what a
    # deployed .xtc computes, so reported dev metrics are exactly the deployed model's. False: the fp32
    # fake-quant maths (equal to fp32 rounding; `xtc evaluate --fake-quant`, bench/infer_exactness.py).
    integer_eval: bool = True

    def set_codes(self, codes: torch.Tensor, scales: torch.Tensor) -> None:
        """Keep a packed file's int8 codes [out, in] and fp32 scales [groups] for integer evaluation
        (non-persistent buffers: they follow .to(device) and stay out of state_dict)."""
        self.weight_codes_t = codes.to(torch.int8).t().contiguous()
        self.row_scales = row_scales_of(scales, self.groups, self.out_features)

    def uses_integer_eval(self) -> bool:
        return (self.integer_eval and not self.training and not torch.is_grad_enabled() and self.abits <= 8
                and scheme_of(self.wbits, self.method) != "none" and (self.weight_codes_t is not None
                                                                       or not self.frozen))

    @classmethod
    def from_module(cls, m: nn.Linear, wbits=32, abits=32, groups=1, method="xtc", act_per_token=True):
        """Wrap m, sharing its Parameter objects (no copy): optimizers and ties keep working."""
        q = cls.__new__(cls)
        nn.Module.__init__(q)
        q.in_features, q.out_features = m.in_features, m.out_features
        q.weight = m.weight
        q.register_parameter("bias", m.bias)
        q._set_quant(wbits, abits, groups, method, act_per_token)
        q.train(m.training)
        return q

    def forward(self, x):
        if self.uses_integer_eval():
            codes_t, rows = self.weight_codes_t, self.row_scales
            if codes_t is None:  # a model in training: the codes of its current latent weight
                codes, scales = quantize_weight_codes(self.weight.detach(), self.wbits, self.groups, self.method)
                codes_t, rows = codes.t().contiguous(), row_scales_of(scales, self.groups, self.out_features)
            q, s = quantize_tokens(x.reshape(-1, self.in_features), self.abits, self.act_per_token)
            y = integer_linear(q, s, codes_t, rows, self.bias)
            return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        w = self.weight if self.frozen else self.fake_quant_weight(self.weight)
        return F.linear(self.fake_quant_input(x), w, self.bias)

    # the training forward's two quantizers, as methods a subclass may replace (bench/ab_step.py times the
    # implementations they replaced that way)
    def fake_quant_input(self, x: torch.Tensor) -> torch.Tensor:
        """quantize_activation of the input (32 bits: x itself)."""
        return quantize_activation(x, self.abits, self.act_per_token)

    def fake_quant_weight(self, w: torch.Tensor) -> torch.Tensor:
        """quantize_weight of the latent weight, in the matmul's dtype under autocast (which saves a cast)."""
        dev = w.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
        return quantize_weight(w, self.wbits, self.groups, self.method, dtype)

    def extra_repr(self):
        return (f"{super().extra_repr()}, wbits={self.wbits}, abits={self.abits}, groups={self.groups}, "
                f"method={self.method}, frozen={self.frozen}")


class QuantEmbedding(nn.Embedding):
    """nn.Embedding with a fake-quantized table, one scale per row. Inputs are ids: not quantized."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, wbits=32, method="xtc",
                 device=None, dtype=None):
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx, device=device, dtype=dtype)
        self._set_quant(wbits, method)

    def _set_quant(self, wbits, method):
        self.wbits, self.abits, self.groups = wbits, 32, self.num_embeddings
        self.method, self.act_per_token = method, True
        self.frozen = False

    @classmethod
    def from_module(cls, m: nn.Embedding, wbits=32, method="xtc"):
        """Wrap m, sharing its weight Parameter (no copy)."""
        q = cls.__new__(cls)
        nn.Module.__init__(q)
        for k in ("num_embeddings", "embedding_dim", "padding_idx", "max_norm", "norm_type",
                  "scale_grad_by_freq", "sparse"):
            setattr(q, k, getattr(m, k))
        q.weight = m.weight
        q._set_quant(wbits, method)
        q.train(m.training)
        return q

    def forward(self, ids):
        rows = F.embedding(ids, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)
        if self.frozen:
            return rows
        # One scale per row: quantizing only the looked-up rows gives exactly the values of quantizing the
        # whole table, without touching its ~30k rows at every step.
        flat = rows.reshape(-1, rows.shape[-1])
        return quantize_weight(flat, self.wbits, flat.shape[0], self.method).view_as(rows)

    def extra_repr(self):
        return f"{super().extra_repr()}, wbits={self.wbits}, method={self.method}, frozen={self.frozen}"


QUANT_MODULES = (QuantLinear, QuantEmbedding)


def quantized_modules(model: nn.Module):
    """Yield (name, module) for every QuantLinear / QuantEmbedding in model."""
    for name, m in model.named_modules():
        if isinstance(m, QUANT_MODULES):
            yield name, m


def replace_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` where the submodule `name` of model is."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)  # get_submodule("") is the model itself


def apply_quantization(model: nn.Module, spec: QuantSpec | None = None) -> dict[str, list[str]]:
    """Swap the spec's roles for quant wrappers, in place. Returns role -> module names.

    spec=None reads model.config.xtc_quant (a model reloaded with from_pretrained). The spec is
    stored in model.config.xtc_quant so it travels with save_pretrained.
    """
    if spec is None:
        d = getattr(getattr(model, "config", None), "xtc_quant", None)
        if d is None:
            raise ValueError("no QuantSpec given and model.config has no xtc_quant")
        spec = QuantSpec.from_dict(d)
    spec.validate()
    for bits in (spec.wbits, spec.emb_bits):
        codec_for(bits, spec.method)  # the codec registry has the last word on the widths a method offers
    done = [n for n, _ in quantized_modules(model)]
    if done:
        raise ValueError(f"model is already quantized ({len(done)} wrappers, e.g. {done[0]!r}); "
                         f"apply_quantization to a fresh model instead")
    # collect and check everything first so a bad spec leaves the model untouched
    todo = []
    for name, m in model.named_modules():
        role = role_of(name)
        if role is None or role not in spec.roles:
            continue
        if role == "word_embeddings":
            if not isinstance(m, nn.Embedding):
                raise ValueError(f"{name} has role {role} but is a {type(m).__name__}, not nn.Embedding")
            if spec.emb_bits < 32:
                todo.append((name, role, m))
        else:
            if not isinstance(m, nn.Linear):
                raise ValueError(f"{name} has role {role} but is a {type(m).__name__}, not nn.Linear")
            if spec.wbits < 32 and m.out_features % spec.groups != 0:
                raise ValueError(f"QuantSpec.groups={spec.groups} does not divide the {m.out_features} "
                                 f"output rows of {name}; pick a divisor of {m.out_features}")
            if spec.wbits < 32 or spec.abits < 32:
                todo.append((name, role, m))
    out: dict[str, list[str]] = {r: [] for r in spec.roles}
    for name, role, m in todo:
        if role == "word_embeddings":
            new = QuantEmbedding.from_module(m, wbits=spec.emb_bits, method=spec.method)
        else:
            new = QuantLinear.from_module(m, spec.wbits, spec.abits, spec.groups, spec.method, spec.act_per_token)
        replace_submodule(model, name, new)
        out[role].append(name)
    if hasattr(model, "config"):
        model.config.xtc_quant = spec.to_dict()
    return out


# -----------------------------------------------------------------------------
# size accounting


def min_weight_bytes(numel: int, bits: int, method: str = "xtc", groups: int = 1) -> int:
    """Bytes of numel packed codes, as the codec packs them (ternary: 5 trits/byte; else ceil(n*bits/8));
    32 bits: 4 per value."""
    codec = codec_for(bits, method)
    return 4 * numel if codec is None else codec.nbytes(numel, groups)


def size_summary(tensors) -> dict:
    """Parameter counts by role and the theoretical minimum bytes, from (numel, role, bits, method, groups)
    per parameter tensor: a quantized one (bits < 32) costs its packed codes plus one fp32 scale per group, a
    full-precision one 4 bytes per value. The one size computation: model_size (a live model) and
    xtc.pack.size_report (a packed file's manifest) both call it."""
    by_role: dict[str, int] = {}
    total = qbytes = qparams = 0
    for n, role, bits, method, groups in tensors:
        total += n
        if bits < 32:
            role = role or "quantized"
            qparams += n
            qbytes += min_weight_bytes(n, bits, method, groups) + 4 * groups  # + fp32 scales
        else:
            role = "full_precision"
            qbytes += 4 * n
        by_role[role] = by_role.get(role, 0) + n
    return {
        "params_by_role": by_role,
        "total_params": total,
        "quantized_params": qparams,
        "fp32_bytes": 4 * total,
        "quantized_bytes": qbytes,
        "bits_per_weight": 8 * qbytes / max(total, 1),
    }


def model_size(model: nn.Module) -> dict:
    """Parameter counts by role and the theoretical minimum size at the model's bit-widths."""
    qweights = {}  # id(param) -> (role, module)
    for name, m in quantized_modules(model):
        if m.wbits < 32:
            qweights[id(m.weight)] = (role_of(name), m)
    tensors = []
    for _, p in model.named_parameters():  # deduplicated: tied params count once
        if id(p) in qweights:
            role, m = qweights[id(p)]
            tensors.append((p.numel(), role, m.wbits, m.method, m.groups))
        else:
            tensors.append((p.numel(), None, 32, None, None))
    return size_summary(tensors)
