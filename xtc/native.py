"""The encoder of a BERT-layout integer model in C++ (xtc/csrc/int_encoder.cpp): one call per forward.

The Python integer path (xtc.infer.IntLinear inside Hugging Face's layers) spends much of a batch-1 forward
between ops: Python, module calls, separate quantize ops. `NativeEncoder` replaces the model's encoder with one
C++ op that runs every layer's steps in the same order, with ATen's kernels for attention, LayerNorm and GELU and
its own exact integer GEMM on the codes packed at their bit-width: the same logits bit for bit
(tests/test_native.py, bench/serve_exactness.py). Embeddings, the attention mask, pooler and classifier stay
the Hugging Face model's.

The op is compiled on first use on a machine (torch.utils.cpp_extension, ~1 min; g++, and ninja from PyPI) into
$XDG_CACHE_HOME/xtc/native (~/.cache/xtc/native), keyed by its source, torch's version and the CPU model (it is
built for the CPU it runs on), and loaded from there afterwards. `python -m xtc.native` builds it ahead of time
(`make install` does).
Where it cannot be built or a model is not of this layout, xtc.infer.use_native_encoder says why and the model is
left as it was.
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys

import torch
import torch.nn as nn

from .precision import cpu_model_name

SOURCE = os.path.join(os.path.dirname(__file__), "csrc", "int_encoder.cpp")
CFLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fopenmp"]  # no FMA contraction: the rescale rounds as
# ATen's ops do

_loaded: str | None = None  # the library loaded in this process
_load_error: str | None = None


def cache_dir() -> str:
    """Where built libraries are kept: $XDG_CACHE_HOME/xtc/native (~/.cache/xtc/native)."""
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "xtc", "native")


def build_key() -> str:
    """What a built library depends on: the source, the flags, torch's version and the CPU it was built for."""
    h = hashlib.sha256()
    with open(SOURCE, "rb") as f:
        h.update(f.read())
    h.update(" ".join(CFLAGS + [torch.__version__, cpu_model_name(), platform.machine()]).encode())
    return h.hexdigest()[:16]


def load(verbose: bool = False) -> str | None:
    """Build (first use on this machine) or load the op library -> None when `torch.ops.xtc_native` is ready,
    else why not (one line). Never raises."""
    global _loaded, _load_error
    if _loaded or _load_error:
        return _load_error
    if sys.platform != "linux":
        _load_error = f"the native encoder is built for Linux only (this is {sys.platform})"
        return _load_error
    try:
        name = f"xtc_native_{build_key()}"
        folder = os.path.join(cache_dir(), name)
        lib = os.path.join(folder, f"{name}.so")
        if os.path.exists(lib):  # built before: no compiler needed (and no import of the build tools)
            torch.ops.load_library(lib)
        else:
            from torch.utils.cpp_extension import load as build

            try:  # PyPI's ninja, where the venv's bin folder is not on PATH
                import ninja

                if ninja.BIN_DIR not in os.environ.get("PATH", "").split(os.pathsep):
                    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
            except ImportError:
                pass
            os.makedirs(folder, exist_ok=True)
            build(name=name, sources=[SOURCE], extra_cflags=CFLAGS, build_directory=folder,
                  is_python_module=False, verbose=verbose)
        _loaded = lib
    except Exception as e:  # noqa: BLE001  (no compiler, no ninja, a build error: the Python path serves)
        lines = str(e).strip().splitlines()
        _load_error = f"building the native encoder failed ({type(e).__name__}: {lines[0][:200] if lines else ''})"
    return _load_error


def layer_linears(layer: nn.Module) -> tuple:
    """A BERT layer's query, key, value, attention output, intermediate and output Linear modules."""
    att = layer.attention.self
    return (att.query, att.key, att.value, layer.attention.output.dense, layer.intermediate.dense,
            layer.output.dense)


def pack_layer(layer: nn.Module, release_codes: bool) -> list:
    """A BERT layer's IntLinear codes packed by xtc_native::pack_codes (bit-planes: 1 bit a weight for binary
    codes, 2 for ternary) -> [(planes, info)] for its four GEMMs: query/key/value side by side as one [in, 3 x
    hidden] GEMM, attention output, intermediate, output. `release_codes`: the modules' int8 codes are dropped once
    packed (they can then no longer run on their own)."""
    pack = torch.ops.xtc_native.pack_codes
    q, k, v, *others = layer_linears(layer)
    packed = [tuple(pack(torch.cat([q.weight_codes_t, k.weight_codes_t, v.weight_codes_t], dim=1)))]
    packed += [tuple(pack(m.weight_codes_t)) for m in others]
    for m in (q, k, v, *others):
        m._prepacked = m._prepacked_for = None  # the modules' own oneDNN copies, if any: the packed codes serve
        if release_codes:
            m.weight_codes_t = torch.empty(0, dtype=torch.int8)
    return packed


def layer_params(layer: nn.Module, packed: list) -> tuple[list, list]:
    """A BERT layer -> (its 20 tensors for the op, its 4 activation bit-widths): per GEMM its packed codes (from
    pack_layer), row scales and bias; the two LayerNorms' weight and bias after the attention output and output."""
    q, k, v, out_attn, inter, out_ffn = layer_linears(layer)
    if len({q.abits, k.abits, v.abits}) != 1:
        raise ValueError("query, key and value quantize their input with different bit-widths")
    qkv_bias = torch.cat([q.bias, k.bias, v.bias]) if q.bias is not None else torch.empty(0)
    params = [*packed[0], torch.cat([q.row_scales, k.row_scales, v.row_scales]), qkv_bias]
    norms = (layer.attention.output.LayerNorm, None, layer.output.LayerNorm)
    for lin, codes, norm in zip((out_attn, inter, out_ffn), packed[1:], norms):
        params += [*codes, lin.row_scales, lin.bias if lin.bias is not None else torch.empty(0)]
        if norm is not None:
            params += [norm.weight.detach(), norm.bias.detach()]
    # activation bit-widths: qkv (k and v quantize the same input as q), attention output, intermediate, output
    return params, [q.abits, out_attn.abits, inter.abits, out_ffn.abits]


class NativeEncoder(nn.Module):
    """A BERT encoder (Hugging Face's layers of IntLinear modules) run by the xtc_native::bert_encoder op.

    It holds each layer's codes packed by pack_layer (while loading, with load_int_model(pack_native=True)), and
    their scales, biases and LayerNorms (layer_params). With `keep_python_layers` (default) it also keeps the
    layers it replaced (`python_encoder`), which run what the op does not: training, gradients, per-layer outputs
    (output_hidden_states / output_attentions). Without, their int8 codes are released as each layer is packed
    (the served model then holds the packed codes only) and such calls raise ValueError."""

    def __init__(self, encoder: nn.Module, heads: int, eps: float, keep_python_layers: bool = True):
        super().__init__()
        self.heads, self.eps, self.keep_python_layers = heads, eps, keep_python_layers
        params, bits = [], []
        for i, layer in enumerate(encoder.layer):
            packed = layer.__dict__.pop("_native_packed", None)
            if packed is not None and keep_python_layers:
                raise ValueError(f"layer {i} was packed while loading (its int8 codes released): keep_python_layers "
                                 "needs a model loaded without pack_native")
            p, b = layer_params(layer, packed or pack_layer(layer, release_codes=not keep_python_layers))
            params += p
            bits += b
        # a plain list, not buffers: the op's argument list, not state (no state_dict entries)
        object.__setattr__(self, "params", params)
        self.bits = bits
        if keep_python_layers:
            self.python_encoder = encoder
        self.train(encoder.training)

    def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                cache=None, use_cache=None, **kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

        python = (encoder_hidden_states is not None or kwargs.get("output_attentions")
                  or kwargs.get("output_hidden_states") or hidden_states.dtype != torch.float32
                  or hidden_states.requires_grad or self.training)
        if python:
            if not self.keep_python_layers:
                raise ValueError("this model is served by the native engine, which computes the last layer's "
                                 "output only (no training, gradients or per-layer outputs); load it with "
                                 "xtc.infer.load_int_model for those")
            return self.python_encoder(hidden_states, attention_mask, encoder_hidden_states,
                                       encoder_attention_mask=encoder_attention_mask, cache=cache,
                                       use_cache=use_cache, **kwargs)
        with torch.no_grad():
            h = torch.ops.xtc_native.bert_encoder(hidden_states, attention_mask, self.params, self.bits, self.heads,
                                                  self.eps)
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=h)


# glibc's mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_BYTES = 32 << 20  # the largest M_MMAP_THRESHOLD glibc takes on 64-bit systems


def _libc():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def hand_back_free_memory() -> None:
    """glibc's malloc_trim(0): return the heap's free pages to the system (a load frees each layer's int8 codes
    once packed; kept, freed blocks of many sizes add up to more than the codes themselves)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed blocks of up to 32 MiB for reuse instead of returning them to the system
    (process-wide; what ONNX Runtime's arena does for its own buffers). A forward allocates and frees each
    layer's activations; handed back each time, they come back as fresh pages, and those page faults took a
    third of a batch-32 x 128 forward (bench/README.md, "Serving a packed student"). First hands back what is
    free now (malloc_trim: the codes the Python layers released). -> whether glibc took the settings."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    hand_back_free_memory()
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 4 * _KEEP_BYTES))


if __name__ == "__main__":  # python -m xtc.native: build (or find) the library for this machine, say where or why not
    why = load()
    print(f"xtc.native: {why}" if why else f"xtc.native: {_loaded}", file=sys.stderr)
    sys.exit(1 if why else 0)
