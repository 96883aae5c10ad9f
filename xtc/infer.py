"""Integer inference straight from a packed `.xtc` file.

A W1A8 / W2A8 / WkA8 student is an integer computation. Its quantized Linear layers hold int8 weight codes
({-1,+1}, {-1,0,+1} or k-bit) and one fp32 scale per row group; their input is quantized per token to
int8 exactly as in training (xtc.quant.activation_scale: s = 2 max|x| / 2^b, q = clamp(round(x / s))):

    fake-quant (training):  y = (q * s) @ (codes * a)^T + b          in fp32
    integer (this module):  y = ((q @ codes^T) * s) * a + b           q @ codes^T in int32, exact

The integer product is exact, so the two differ only by fp32 rounding of the fake-quant sum. The word
embedding keeps its packed bits and decodes only the rows it looks up. Everything the recipe keeps in full
precision (position/token-type embeddings, LayerNorm, attention, pooler, classifier, biases) is fp32.

`load_int_model(path)` builds the Hugging Face model on the meta device and fills it from the file, so no
fp32 copy of a quantized weight is ever made. The forward is plain PyTorch ops: oneDNN's int8 GEMM on
prepacked codes on CPUs (xtc.quant.int8_matmul_f32), `torch._int_mm` (int8 tensor cores) on CUDA, for the
products. `serve(path)` / `ServedModel` is what `xtc predict` runs: the encoder in C++ (xtc.native) where the
model is BERT-layout, else the model compiled by Inductor once for all shapes; the same activation codes and
labels as the eager path.
"""
from __future__ import annotations

import os
import re
import sys
import weakref

import torch
import torch.nn as nn

from . import native
from .codec import codec_for
from .pack import PackedFormatError, StoredTensor, build_model, check_fits, read_tensors, read_verified, \
    unpack_tokenizer
from .quant import (QuantEmbedding, QuantLinear, int8_matmul, integer_linear, prepack_int8_weight,  # noqa: F401
                    quantize_tokens, quantized_modules, replace_submodule, role_of, row_scales_of)

# -----------------------------------------------------------------------------
# integer modules (their maths: xtc.quant.integer_linear, beside the fake-quant maths)


class _InputMemo:
    """The last input a group of IntLinear layers quantized (weakly referenced) and its (q, scale)."""
    __slots__ = ("ref", "key", "q", "s")

    def __init__(self):
        self.ref = self.key = self.q = self.s = None


class IntLinear(nn.Module):
    """Linear layer of int8 weight codes and fp32 per-row scales; int8 activations, int32 accumulation.

    Buffers (they travel through state_dict and .to(device)): `weight_codes_t` int8 [in, out] (the codes
    transposed, the layout torch._int_mm takes), `row_scales` fp32 [out] (each group's scale repeated over
    its rows), `bias` fp32 [out] or absent. No fp32 weight is held.
    """

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None, wbits: int,
                 abits: int, groups: int, method: str = "xtc", act_per_token: bool = True):
        super().__init__()
        out_features, in_features = codes.shape
        if abits > 8:
            raise ValueError(f"IntLinear needs activations of at most 8 bits (int8), got abits={abits}")
        if codes.dtype != torch.int8:
            raise ValueError(f"IntLinear takes int8 codes, got {codes.dtype}")
        self.in_features, self.out_features = in_features, out_features
        self.wbits, self.abits, self.groups, self.method = wbits, abits, groups, method
        self.act_per_token = act_per_token
        self.register_buffer("weight_codes_t", codes.t().contiguous())
        self.register_buffer("row_scales", row_scales_of(scales, groups, out_features))
        self.register_buffer("bias", None if bias is None else bias.to(torch.float32).contiguous())

    # query, key and value quantize the same tensor: load_int_model gives the three one shared memo so the
    # eager forward quantizes it once (torch.compile finds the common subexpression by itself)
    input_memo: "_InputMemo | None" = None

    def quantize_input(self, x: torch.Tensor):
        """(int8 q [M, in], fp32 scale) of x [..., in], reusing the memo when x is the tensor just quantized."""
        memo = self.input_memo
        if memo is None or torch.compiler.is_compiling():
            return quantize_tokens(x.reshape(-1, self.in_features), self.abits, self.act_per_token)
        version = None if x.is_inference() else x._version  # inference tensors keep no version counter
        key = (x.data_ptr(), x.shape, x.stride(), version, self.abits, self.act_per_token)
        if memo.ref is None or memo.ref() is not x or memo.key != key:
            memo.q, memo.s = quantize_tokens(x.reshape(-1, self.in_features), self.abits, self.act_per_token)
            memo.ref, memo.key = weakref.ref(x), key
        return memo.q, memo.s

    def int_accumulate(self, q: torch.Tensor) -> torch.Tensor:
        """int32 [M, out] = q [M, in] (int8) @ codes^T: the exact integer part of the layer."""
        return int8_matmul(q, self.weight_codes_t)

    # oneDNN's prepacked copy of the codes (xtc.quant.prepack_int8_weight), made on the first CPU forward; not a
    # buffer (an opaque oneDNN tensor: no state_dict, no .to()); remade when weight_codes_t is replaced
    _prepacked = None
    _prepacked_for = None

    def prepacked(self):
        """The codes prepacked for oneDNN's int8 GEMM, or None (not on the CPU, not exact: int8_matmul then)."""
        if torch.compiler.is_compiling():  # an opaque oneDNN tensor is no graph input: one op finds it by the codes
            return "by_codes" if self.weight_codes_t.device.type == "cpu" else None
        if self._prepacked_for is not self.weight_codes_t:
            self._prepacked = prepack_int8_weight(self.weight_codes_t)
            self._prepacked_for = self.weight_codes_t
        return self._prepacked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        q, s = self.quantize_input(x)
        y = integer_linear(q, s, self.weight_codes_t, self.row_scales, self.bias, self.prepacked())
        return y.reshape(*lead, self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, wbits={self.wbits}, "
                f"abits={self.abits}, groups={self.groups}, method={self.method}, bias={self.bias is not None}")


class PackedEmbedding(nn.Module):
    """Embedding table kept bit-packed as in the file; forward decodes only the looked-up rows.

    Buffers: `packed` uint8 (the file's flat packed codes, as the codec's row_buffer: plus one zero byte so
    k-bit reads may look one byte ahead) and `scales` fp32 [groups]. A row's values are codes * its group's
    scale, exactly xtc.quant.dequantize_codes.
    """

    def __init__(self, packed: torch.Tensor, scales: torch.Tensor, num_embeddings: int, embedding_dim: int,
                 bits: int, groups: int, method: str = "xtc"):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.wbits, self.groups, self.method = bits, groups, method
        self.codec = codec_for(bits, method)
        self.rows_per_group = num_embeddings // groups
        self.register_buffer("packed", self.codec.row_buffer(packed))
        self.register_buffer("scales", scales.to(torch.float32).reshape(groups).contiguous())

    def decode_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """int32 codes [*ids.shape, dim] of the rows `ids`."""
        return self.codec.decode_rows(self.packed, ids, (self.num_embeddings, self.embedding_dim), self.groups)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        scale = self.scales[torch.div(ids, self.rows_per_group, rounding_mode="floor")]
        return self.decode_codes(ids).to(torch.float32) * scale.unsqueeze(-1)

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, wbits={self.wbits}, method={self.method}, "
                f"packing={self.codec.packing}")


INT_MODULES = (IntLinear, PackedEmbedding)


# -----------------------------------------------------------------------------
# loading a .xtc file into the integer model


def _non_persistent_buffer(name: str, meta: torch.Tensor) -> torch.Tensor:
    """Values of the buffers Hugging Face BERT builds in __init__ instead of saving them."""
    leaf = name.rpartition(".")[2]
    if leaf == "position_ids":
        return torch.arange(meta.shape[-1]).expand(meta.shape).contiguous()
    if leaf == "token_type_ids":
        return torch.zeros(meta.shape, dtype=meta.dtype)
    raise PackedFormatError(f"the model has a buffer {name} that is neither saved in the file nor known "
                            f"to the integer loader; load it with xtc.pack.load_packed instead")


def load_int_model(path: str, device: str | torch.device | None = None, with_tokenizer: bool = True,
                   pack_native: bool = False):
    """Verify a .xtc file and load it for integer inference -> (model in eval mode, tokenizer or None).

    Quantized Linear layers with <= 8-bit activations become IntLinear and the quantized word embedding a
    PackedEmbedding; a quantized Linear with fp32 activations stays a fake-quant QuantLinear (its weight
    is then held dequantized: it is an fp32 computation). Raises PackedFormatError for a bad file.

    `pack_native` (load_for_serving's choice): pack each encoder layer the native engine can run for it as soon as
    the layer is loaded, and release its int8 codes, so that the load never holds every layer's int8 codes at
    once. Such layers then run only under the native engine (use_native_encoder with keep_python_layers=False).
    """
    path = os.fspath(path)
    manifest, members = read_verified(path)
    stored = read_tensors(path, manifest, members)
    model = build_model(path, manifest, members, meta=True)  # shapes only: no fp32 weight is allocated
    check_fits(path, manifest, stored, model)
    pack = pack_native and native.load() is None and _native_model_unsupported(model) is None
    _swap_in_integer_modules(model, stored, _pack_layers_as_loaded(model) if pack else None)
    _fill_from_file(path, model, stored)
    _share_qkv_input_memos(model)
    model.requires_grad_(False)
    model.eval()
    if device is not None:
        model.to(device)
    return model, (unpack_tokenizer(path, members) if with_tokenizer else None)


def _swap_in_integer_modules(model: nn.Module, stored: dict[str, StoredTensor], after_swap=None) -> None:
    """Each quantized word embedding -> PackedEmbedding, each quantized Linear with <= 8-bit activations ->
    IntLinear, straight from the file's codes; other wrappers stay (filled by _fill_from_file). after_swap(name):
    called after each IntLinear is in place."""
    for name, m in list(quantized_modules(model)):
        if m.wbits == 32:
            continue  # fp32 weight (e.g. only activations quantized): stays a QuantLinear
        w = stored[f"{name}.weight"]
        if isinstance(m, QuantEmbedding):
            new = PackedEmbedding(w.data, w.scales, m.num_embeddings, m.embedding_dim, m.wbits, m.groups, m.method)
        elif isinstance(m, QuantLinear) and m.abits <= 8:
            bias = stored[f"{name}.bias"].values() if m.bias is not None else None
            new = IntLinear(w.codes, w.scales, bias, m.wbits, m.abits, m.groups, m.method, m.act_per_token)
            del w.codes  # the layer holds them transposed: the file's unpacked copy goes now, not with `stored`
        else:  # weights quantized, activations fp32: a float product of the dequantized codes
            m.frozen = True  # its weight will hold dequantized codes: use as is
            continue
        replace_submodule(model, name, new)
        if after_swap is not None and isinstance(new, IntLinear):
            after_swap(name)


def _fill_from_file(path: str, model: nn.Module, stored: dict[str, StoredTensor]) -> None:
    """Every tensor still on the meta device: its values from the file (dequantized for a kept wrapper), or a
    known non-persistent buffer."""
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if not t.is_meta:
            continue
        value = stored[name].values() if name in stored else _non_persistent_buffer(name, t)
        mod_name, _, leaf = name.rpartition(".")
        mod = model.get_submodule(mod_name)
        if leaf in mod._parameters:
            mod._parameters[leaf] = nn.Parameter(value, requires_grad=False)
        else:
            mod._buffers[leaf] = value
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise PackedFormatError(f"{path}: tensors {left[:5]} were not filled from the file")


def _share_qkv_input_memos(model: nn.Module) -> None:
    """Query, key and value of one attention block read the same input: one _InputMemo for the three."""
    qkv_of: dict[str, list[IntLinear]] = {}
    for name, m in model.named_modules():
        if isinstance(m, IntLinear) and role_of(name) in ("query", "key", "value"):
            qkv_of.setdefault(name.rpartition(".")[0], []).append(m)
    for qkv in qkv_of.values():
        if len(qkv) == 3:
            memo = _InputMemo()
            for m in qkv:
                m.input_memo = memo


def int_modules(model: nn.Module):
    """Yield (name, module) for every IntLinear / PackedEmbedding in model."""
    for name, m in model.named_modules():
        if isinstance(m, INT_MODULES):
            yield name, m


def compile_int_model(model: nn.Module, dynamic: bool = False):
    """torch.compile (Inductor) of an integer model: each quantize step (amax, divide, round, clamp, cast)
    and each rescale (x scale, row scales, bias) becomes one fused kernel around the int8 GEMM. One
    compilation per input shape with dynamic=False; ServedModel compiles once for every shape (dynamic=True).
    Logits agree with the eager model to fp32 rounding, not bit for bit (fused kernels round differently)."""
    return torch.compile(model, dynamic=dynamic)


# -----------------------------------------------------------------------------
# serving: the integer model compiled once per machine


def compile_cache_dir() -> str:
    """Where Inductor keeps compiled graphs and kernels between processes: $TORCHINDUCTOR_CACHE_DIR if set, else
    $XDG_CACHE_HOME/xtc/inductor (~/.cache/xtc/inductor), so a machine pays the compilation once."""
    return os.environ.get("TORCHINDUCTOR_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "xtc", "inductor")


def _first_cause(e: BaseException) -> str:
    """'Type: first line' of the exception that started a chain (Dynamo wraps a backend's error in its own)."""
    while getattr(e, "inner_exception", None) is not None or e.__cause__ is not None:
        e = getattr(e, "inner_exception", None) or e.__cause__
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:200] if lines else ''}"


# -----------------------------------------------------------------------------
# the native engine: which models it serves (its op and module: xtc.native)


def _encoder_of(model: nn.Module):
    """(base model, its encoder) of a Hugging Face encoder-only model, or (None, None)."""
    base = getattr(model, "base_model", None)
    enc = getattr(base, "encoder", None)
    return (base, enc) if isinstance(enc, nn.Module) else (None, None)


def native_unsupported(model: nn.Module) -> str | None:
    """Why xtc.native.NativeEncoder cannot run `model`'s encoder (one line), or None when it can: every layer a BERT
    layer (self-attention through sdpa, no cross-attention, chunked feed-forward or relative positions) whose six
    Linear layers are integer (IntLinear, per-token activations of at most 8 bits) and whose activation is the
    exact (erf) GELU, on the CPU."""
    why = _native_model_unsupported(model)
    if why:
        return why
    for i, layer in enumerate(_encoder_of(model)[1].layer):
        why = _native_layer_unsupported(layer, i)
        if why:
            return why
    return None


def _native_model_unsupported(model: nn.Module) -> str | None:
    """native_unsupported's checks of the model as a whole (its config and encoder), not of its layers."""
    base, enc = _encoder_of(model)
    layers = getattr(enc, "layer", None)
    cfg = getattr(model, "config", None)
    if base is None or not isinstance(layers, nn.ModuleList) or len(layers) == 0 or cfg is None:
        return "not an encoder-only model with a layer list (model.base_model.encoder.layer)"
    if getattr(cfg, "is_decoder", False) or getattr(cfg, "add_cross_attention", False):
        return "a decoder or cross-attention model"
    if getattr(cfg, "_attn_implementation", None) != "sdpa":
        return f"attention implementation {getattr(cfg, '_attn_implementation', None)!r} (the native one is sdpa's)"
    if getattr(cfg, "position_embedding_type", "absolute") != "absolute":
        return f"position_embedding_type {cfg.position_embedding_type!r}"
    return None


def _native_layer_unsupported(layer: nn.Module, i: int) -> str | None:
    """native_unsupported's checks of encoder layer `i`."""
    from transformers.activations import GELUActivation

    try:
        lins = native.layer_linears(layer)
        att, out = layer.attention.self, layer.attention.output
        act = layer.intermediate.intermediate_act_fn
        norms = [out.LayerNorm, layer.output.LayerNorm]
    except AttributeError:
        return f"layer {i} is not a BERT layer"
    if getattr(layer, "chunk_size_feed_forward", 0) or getattr(layer, "add_cross_attention", False):
        return f"layer {i} chunks its feed-forward or has cross-attention"
    if not all(isinstance(m, IntLinear) for m in lins):
        return f"layer {i} has Linear layers that are not integer (IntLinear)"
    if any(not m.act_per_token or m.abits > 8 or m.weight_codes_t.device.type != "cpu" for m in lins):
        return f"layer {i}: per-tensor activations, more than 8 bits, or not on the CPU"
    gelu = isinstance(act, AtenGelu) or (type(act) is GELUActivation and act.act is nn.functional.gelu)
    if not gelu:
        return f"layer {i} activation {type(act).__name__} (the native one is the exact GELU)"
    if not all(isinstance(n, nn.LayerNorm) and n.elementwise_affine and n.bias is not None for n in norms):
        return f"layer {i}: LayerNorm without weight and bias"
    if not (len({m.in_features for m in lins[:4]}) == 1 and att.query.out_features == lins[0].in_features):
        return f"layer {i}: query/key/value/output shapes differ from the hidden size"
    return None


def _pack_layers_as_loaded(model: nn.Module):
    """-> a callback for _swap_in_integer_modules that packs each encoder layer for the native engine
    (xtc.native.pack_layer, its int8 codes released) as soon as its six Linear layers are integer."""
    layers = _encoder_of(model)[1].layer

    def after_swap(name: str) -> None:
        found = re.search(r"(?:^|\.)encoder\.layer\.(\d+)\.", name)
        if found:
            i = int(found.group(1))
            layer = layers[i]
            if "_native_packed" not in layer.__dict__ and _native_layer_unsupported(layer, i) is None:
                layer._native_packed = native.pack_layer(layer, release_codes=True)
                native.hand_back_free_memory()

    return after_swap


def use_native_encoder(model: nn.Module, keep_python_layers: bool = True) -> str | None:
    """Replace `model`'s encoder by NativeEncoder -> None, or why not (one line; the model is then unchanged).
    Idempotent. Also keep_freed_memory()."""
    base, enc = _encoder_of(model)
    if isinstance(enc, native.NativeEncoder):
        return None
    why = native_unsupported(model) or native.load()
    if why:
        return why
    cfg = model.config
    base.encoder = native.NativeEncoder(enc, cfg.num_attention_heads, float(cfg.layer_norm_eps), keep_python_layers)
    native.keep_freed_memory()
    return None


ENGINES = ("auto", "native", "compiled", "eager")


class ServedModel(nn.Module):
    """An integer model as `xtc predict` and `serve` run it, by one of three engines (`engine`):

    - "native": the encoder in C++ (xtc.native.NativeEncoder: one call per forward, the eager path's steps, the
      same logits bit for bit); BERT-layout integer models on the CPU. Fastest at every shape measured, no
      compilation (the op library is built once per machine, ~10-70 s, and cached). It keeps the codes once, at
      their bit-width: logits only (no gradients or per-layer outputs).
    - "compiled": the model compiled by Inductor once for every batch size and length (dynamic shapes; batch 1 is
      a second graph), its compiled graphs cached on disk (compile_cache_dir); ~1 min per process even with the
      cache warm. If compilation fails, one line on stderr and the eager model from then on.
    - "eager": the Python integer path as loaded.

    "auto" takes "native" where the model and machine allow it, else `fallback` ("compiled" or "eager"); why the
    native engine was not taken is in `native_unavailable`. `engine="native"` on a model it cannot run raises
    ValueError naming why. The native engine replaces `model`'s encoder in place.

    `model` is the eager integer model (load_int_model); attributes it has (config, base_model, ...) are read
    through. The eager and compiled engines' int8 GEMMs run on oneDNN's prepacked weights
    (xtc.quant.int8_matmul_f32), the native one on its own kernel; all are exact in int32. Compiled, LayerNorm and
    GELU stay ATen's (ATEN_KEPT_WHEN_COMPILED; the model's GELU modules become AtenGelu, the same numbers), so
    that every engine computes what the eager one does: the same labels on MRPC and SST-2 dev
    (bench/serve_exactness.py)."""

    def __init__(self, model: nn.Module, engine: str = "auto", fallback: str = "compiled", backend="inductor"):
        super().__init__()
        if engine not in ENGINES or fallback not in ("compiled", "eager"):
            raise ValueError(f"engine must be one of {', '.join(ENGINES)} (fallback: compiled or eager), got "
                             f"{engine!r} / {fallback!r}")
        self.model = model
        self.fallback: str | None = None  # why the compiled model was given up
        self.native_unavailable: str | None = None  # why "auto" did not take the native engine
        object.__setattr__(self, "compiled", None)
        if engine in ("auto", "native"):
            why = use_native_encoder(model, keep_python_layers=False)  # serving: one copy of the codes
            if why is None:
                engine = "native"
            elif engine == "native":
                raise ValueError(f"the native engine cannot serve this model: {why}")
            else:
                self.native_unavailable, engine = why, fallback
        self.engine = engine
        if engine == "compiled":
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", compile_cache_dir())
            if backend == "inductor":
                backend = _inductor_keeping_aten_ops
                _opaque_gelus(model)
            # not a registered submodule: state_dict() and parameters() stay those of `model`
            object.__setattr__(self, "compiled", torch.compile(model, dynamic=True, backend=backend))

    def forward(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as e:  # noqa: BLE001  (a genuine input error raises again from the eager model)
                self.fallback = _first_cause(e)
                object.__setattr__(self, "compiled", None)
                self.engine = "eager"
                print(f"xtc: compiling the integer model failed ({self.fallback}); running it eager",
                      file=sys.stderr)
        return self.model(*args, **kwargs)

    @property
    def is_compiled(self) -> bool:
        return self.compiled is not None

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)


# ops Inductor would decompose into its own kernels, kept as ATen's: LayerNorm and GELU outputs are quantized
# by the next layer, so a one-ulp difference from another summation order can move an activation code (and a
# 1-bit student's prediction). LayerNorm here; GELU through the opaque xtc::gelu op (AtenGelu) below. With both
# kept, the compiled model computes the eager integer path's activation codes
ATEN_KEPT_WHEN_COMPILED = ("native_layer_norm",)


@torch.library.custom_op("xtc::gelu", mutates_args=())
def _gelu_op(x: torch.Tensor) -> torch.Tensor:
    """ATen's exact GELU as one opaque op: Inductor's decomposition rounds differently, and its fallback to
    aten.gelu ran ~100x slower than eager at length 128 (bench/README.md, "Serving a packed student")."""
    return torch.nn.functional.gelu(x.contiguous())


@_gelu_op.register_fake
def _(x):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


class AtenGelu(nn.Module):
    """GELU (erf form) through the xtc::gelu op: the same numbers as nn.functional.gelu, kept opaque when compiled."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.xtc.gelu(x)


def _opaque_gelus(model: nn.Module) -> None:
    """Every exact (erf) GELU activation module of `model` -> AtenGelu."""
    from transformers.activations import GELUActivation

    for name, m in list(model.named_modules()):
        if type(m) is GELUActivation and getattr(m, "act", None) is nn.functional.gelu:
            replace_submodule(model, name, AtenGelu())


def _inductor_keeping_aten_ops(gm, example_inputs):
    """Inductor backend that leaves ATEN_KEPT_WHEN_COMPILED to ATen (its implicit fallback for ops it neither
    decomposes nor lowers) and fuses the rest: the quantize steps, the rescales, the masks and embeddings."""
    from torch._inductor.compile_fx import compile_fx
    from torch._inductor.decomposition import select_decomp_table

    kept = {getattr(torch.ops.aten, name).default for name in ATEN_KEPT_WHEN_COMPILED}
    table = {op: fn for op, fn in select_decomp_table().items() if op not in kept}
    return compile_fx(gm, example_inputs, decompositions=table)


def serve(path: str, threads: int | None = None, engine: str = "auto", device: str | torch.device | None = None):
    """Load a .xtc for serving -> (ServedModel, tokenizer): the integer model on `engine` (see ServedModel; auto:
    native, else compiled), on `threads` CPU threads (torch.set_num_threads, process-wide) when given. Run it
    under torch.inference_mode() or torch.no_grad()."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    model, tok = load_for_serving(path, engine, device)
    return ServedModel(model, engine=engine), tok


def load_for_serving(path: str, engine: str = "auto", device: str | torch.device | None = None,
                     with_tokenizer: bool = True):
    """load_int_model for ServedModel(model, engine) -> (model, tokenizer). Where the native engine will serve it
    (engine auto or native, on the CPU, the op library built), each encoder layer is packed for it as it loads
    (load_int_model's pack_native): the load's peak memory is then ~1 layer's int8 codes above the served model's,
    not all of them. Should the native engine still decline the model, it is loaded again, whole."""
    on_cpu = device is None or torch.device(device).type == "cpu"
    if engine not in ("auto", "native") or not on_cpu or native.load():
        return load_int_model(path, device=device, with_tokenizer=with_tokenizer)
    model, tok = load_int_model(path, with_tokenizer=with_tokenizer, pack_native=True)
    layers = _encoder_of(model)[1]
    packed = layers is not None and any("_native_packed" in m.__dict__ for m in getattr(layers, "layer", []))
    if packed and native_unsupported(model):  # (another engine will serve it: it needs every layer's codes)
        model, tok = load_int_model(path, device=device, with_tokenizer=with_tokenizer)
    return model, tok
