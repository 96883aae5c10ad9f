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
fp32 copy of a quantized weight is ever made. The forward is plain PyTorch ops: `torch._int_mm` (oneDNN
s8s8s32 GEMM on x86, int8 tensor cores on CUDA) for the products; `compile_int_model` hands the model
to torch.compile, which fuses each quantize step and each rescale step into one kernel.
"""
from __future__ import annotations

import math
import os
import weakref

import torch
import torch.nn as nn
from safetensors.torch import load as st_load

from .pack import (WEIGHTS, PackedFormatError, build_model, packing_of, read_verified, unpack_codes,
                   unpack_tokenizer)
from .quant import (QuantEmbedding, QuantLinear, int8_matmul, integer_linear, min_weight_bytes,  # noqa: F401
                    quantize_tokens, quantized_modules, role_of, row_scales_of, scheme_of)

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        q, s = self.quantize_input(x)
        y = integer_linear(q, s, self.weight_codes_t, self.row_scales, self.bias)
        return y.reshape(*lead, self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, wbits={self.wbits}, "
                f"abits={self.abits}, groups={self.groups}, method={self.method}, bias={self.bias is not None}")


class PackedEmbedding(nn.Module):
    """Embedding table kept bit-packed as in the file; forward decodes only the looked-up rows.

    Buffers: `packed` uint8 (the file's flat packed codes, plus one zero byte so k-bit reads may look one
    byte ahead) and `scales` fp32 [groups]. A row's values are codes * its group's scale, exactly
    xtc.quant.dequantize_codes.
    """

    def __init__(self, packed: torch.Tensor, scales: torch.Tensor, num_embeddings: int, embedding_dim: int,
                 bits: int, groups: int, method: str = "xtc"):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.wbits, self.groups, self.method = bits, groups, method
        self.packing = packing_of(bits, method)
        self.rows_per_group = num_embeddings // groups
        self.register_buffer("packed", torch.cat([packed.reshape(-1).to(torch.uint8),
                                                  torch.zeros(1, dtype=torch.uint8)]))
        self.register_buffer("scales", scales.to(torch.float32).reshape(groups).contiguous())

    def decode_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """int32 codes [*ids.shape, dim] of the rows `ids`."""
        flat = ids.reshape(-1).to(torch.int64)
        dim, k = self.embedding_dim, self.wbits
        per_byte = 5 if self.packing == "ternary-5" else 8 // math.gcd(8, k)  # codes per whole byte run
        if dim % per_byte == 0:  # every row starts on a byte boundary: gather whole rows of bytes
            row_bytes = dim // 5 if self.packing == "ternary-5" else dim * k // 8
            rows = self.packed[: self.num_embeddings * row_bytes].view(self.num_embeddings, row_bytes)[flat]
            rows = rows.to(torch.int32).unsqueeze(-1)
            if self.packing == "binary-8":
                codes = ((rows >> torch.arange(8, device=ids.device, dtype=torch.int32)) & 1) * 2 - 1
            elif self.packing == "ternary-5":
                pow3 = torch.tensor([1, 3, 9, 27, 81], dtype=torch.int32, device=ids.device)
                codes = (rows // pow3) % 3 - 1
            else:
                bits = (rows >> torch.arange(8, device=ids.device, dtype=torch.int32)) & 1
                bits = bits.reshape(len(flat), dim, k) << torch.arange(k, device=ids.device, dtype=torch.int32)
                codes = bits.sum(-1, dtype=torch.int32) - 2 ** (k - 1)
            return codes.reshape(*ids.shape, dim)
        # rows start mid-byte: address each code by its element index
        elem = flat.unsqueeze(1) * dim + torch.arange(dim, device=ids.device)
        if self.packing == "binary-8":
            byte = self.packed[elem >> 3].to(torch.int32)
            codes = ((byte >> (elem & 7).to(torch.int32)) & 1) * 2 - 1
        elif self.packing == "ternary-5":
            byte = self.packed[elem // 5].to(torch.int32)
            pow3 = torch.tensor([1, 3, 9, 27, 81], dtype=torch.int32, device=ids.device)
            codes = (byte // pow3[elem % 5]) % 3 - 1
        else:  # uint-k: a code's k bits start at bit elem*k and span at most two bytes
            start = elem * k
            lo = self.packed[start >> 3].to(torch.int32)
            hi = self.packed[(start >> 3) + 1].to(torch.int32)
            codes = (((lo | (hi << 8)) >> (start & 7).to(torch.int32)) & (2**k - 1)) - 2 ** (k - 1)
        return codes.reshape(*ids.shape, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        scale = self.scales[torch.div(ids, self.rows_per_group, rounding_mode="floor")]
        return self.decode_codes(ids).to(torch.float32) * scale.unsqueeze(-1)

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, wbits={self.wbits}, method={self.method}, "
                f"packing={self.packing}")


INT_MODULES = (IntLinear, PackedEmbedding)


# -----------------------------------------------------------------------------
# loading a .xtc file into the integer model


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _non_persistent_buffer(name: str, meta: torch.Tensor) -> torch.Tensor:
    """Values of the buffers Hugging Face BERT builds in __init__ instead of saving them."""
    leaf = name.rpartition(".")[2]
    if leaf == "position_ids":
        return torch.arange(meta.shape[-1]).expand(meta.shape).contiguous()
    if leaf == "token_type_ids":
        return torch.zeros(meta.shape, dtype=meta.dtype)
    raise PackedFormatError(f"the model has a buffer {name} that is neither saved in the file nor known "
                            f"to the integer loader; load it with xtc.pack.load_packed instead")


def load_int_model(path: str, device: str | torch.device | None = None, with_tokenizer: bool = True):
    """Verify a .xtc file and load it for integer inference -> (model in eval mode, tokenizer or None).

    Quantized Linear layers with <= 8-bit activations become IntLinear and the quantized word embedding a
    PackedEmbedding; a quantized Linear with fp32 activations stays a fake-quant QuantLinear (its weight
    is then held dequantized: it is an fp32 computation). Raises PackedFormatError for a bad file.
    """
    path = os.fspath(path)
    manifest, members = read_verified(path)
    bad = lambda why: PackedFormatError(f"{path}: {why}")  # noqa: E731
    try:
        raw = st_load(members[WEIGHTS])
    except Exception as e:  # safetensors raises its own error type for a bad header
        raise bad(f"{WEIGHTS} is not a valid safetensors file: {e}") from e

    model = build_model(path, manifest, members, meta=True)  # shapes only: no fp32 weight is allocated
    wrappers = dict(quantized_modules(model))

    entries = {}
    for e in manifest["tensors"]:
        if not isinstance(e, dict) or "name" not in e:
            raise bad(f"malformed tensor entry {e!r}")
        entries[e["name"]] = e
    own = {**dict(model.named_parameters()), **{n: b for n, b in model.named_buffers()}}
    persistent = set(model.state_dict())
    if set(entries) != persistent:
        diff = sorted(set(entries) ^ persistent)
        raise bad(f"tensor names do not match {manifest['model_class']} built from config.json: {diff[:5]}")

    used: set[str] = set()

    def fp_tensor(name: str) -> torch.Tensor:
        e = entries[name]
        if e.get("scheme") != "none":
            raise bad(f"tensor {name} is stored quantized but the quant spec keeps it full precision")
        t = raw.get(e["key"])
        if t is None or tuple(t.shape) != tuple(own[name].shape):
            raise bad(f"tensor {name}: expected shape {list(own[name].shape)} in {WEIGHTS}, got "
                      f"{None if t is None else list(t.shape)}")
        used.add(e["key"])
        return t

    def packed_tensor(name: str, m) -> tuple[torch.Tensor, torch.Tensor]:
        e = entries[name]
        try:
            bits, groups, method = int(e["bits"]), int(e["groups"]), e["method"]
            if (bits, groups, method) != (m.wbits, m.groups, m.method):
                raise bad(f"tensor {name}: stored as bits={bits} groups={groups} method={method}, the quant "
                          f"spec says bits={m.wbits} groups={m.groups} method={m.method}")
            if e["packing"] != packing_of(bits, method) or e["scheme"] != scheme_of(bits, method):
                raise bad(f"tensor {name}: packing {e['packing']!r} does not fit bits={bits} method={method}")
            shape = tuple(int(s) for s in e["shape"])
            if shape != tuple(own[name].shape):
                raise bad(f"tensor {name}: shape {list(shape)} in file, model expects {list(own[name].shape)}")
            if groups < 1 or shape[0] % groups:
                raise bad(f"tensor {name}: {groups} groups do not divide shape {list(shape)}")
            packed, scales = raw.get(e["key"]), raw.get(e["scales_key"])
            nbytes = min_weight_bytes(math.prod(shape), bits, method)
            if packed is None or packed.dtype != torch.uint8 or tuple(packed.shape) != (nbytes,):
                raise bad(f"tensor {name}: packed data should be uint8 [{nbytes}], got "
                          f"{None if packed is None else (packed.dtype, list(packed.shape))}")
            if scales is None or scales.dtype != torch.float32 or tuple(scales.shape) != (groups,):
                raise bad(f"tensor {name}: scales should be float32 [{groups}], got "
                          f"{None if scales is None else (scales.dtype, list(scales.shape))}")
            if packed.numel() and method == "xtc" and bits == 2 and int(packed.max()) > 242:
                raise bad(f"tensor {name}: a ternary byte above 242 cannot hold 5 trits (corrupted data)")
        except PackedFormatError:
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise bad(f"tensor entry {name} is invalid: {err}") from err
        used.update((e["key"], e["scales_key"]))
        return packed, scales

    replaced = set()
    for name, m in wrappers.items():
        wkey = f"{name}.weight"
        if m.wbits == 32:
            continue  # fp32 weight (e.g. only activations quantized): stays a QuantLinear, filled below
        packed, scales = packed_tensor(wkey, m)
        if isinstance(m, QuantEmbedding):
            new = PackedEmbedding(packed, scales, m.num_embeddings, m.embedding_dim, m.wbits, m.groups, m.method)
            replaced.add(wkey)
        elif isinstance(m, QuantLinear) and m.abits <= 8:
            codes = unpack_codes(packed, m.out_features * m.in_features, m.wbits, m.method)
            bias = fp_tensor(f"{name}.bias") if m.bias is not None else None
            new = IntLinear(codes.reshape(m.out_features, m.in_features), scales, bias, m.wbits, m.abits,
                            m.groups, m.method, m.act_per_token)
            replaced.update((wkey, f"{name}.bias"))
        else:  # weights quantized, activations fp32: a float product of the dequantized codes
            continue
        _set_submodule(model, name, new)

    # everything still on the meta device comes from the file (fp32) or is a known non-persistent buffer
    fill = {}
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if not t.is_meta:
            continue
        if name in persistent:
            e = entries[name]
            if e.get("scheme") != "none":  # a kept QuantLinear/QuantEmbedding with quantized weight
                from .quant import dequantize_codes

                m = wrappers[name.rpartition(".")[0]]
                packed, scales = packed_tensor(name, m)
                codes = unpack_codes(packed, t.numel(), m.wbits, m.method).reshape(t.shape)
                fill[name] = dequantize_codes(codes, scales, m.wbits, m.groups, m.method)
            else:
                fill[name] = fp_tensor(name)
        else:
            fill[name] = _non_persistent_buffer(name, t)
    for name, value in fill.items():
        mod_name, _, leaf = name.rpartition(".")
        mod = model.get_submodule(mod_name) if mod_name else model
        if leaf in mod._parameters:
            mod._parameters[leaf] = nn.Parameter(value, requires_grad=False)
        else:
            mod._buffers[leaf] = value
    for name, m in wrappers.items():
        if not isinstance(model.get_submodule(name), INT_MODULES) and m.wbits < 32:
            m.frozen = True  # weight holds dequantized codes: use as is
    qkv_of: dict[str, list[IntLinear]] = {}  # query/key/value of one attention block read the same input
    for name, m in model.named_modules():
        if isinstance(m, IntLinear) and role_of(name) in ("query", "key", "value"):
            qkv_of.setdefault(name.rpartition(".")[0], []).append(m)
    for qkv in qkv_of.values():
        if len(qkv) == 3:
            memo = _InputMemo()
            for m in qkv:
                m.input_memo = memo
    extra = set(raw) - used
    if extra:
        raise bad(f"{WEIGHTS} holds tensors the manifest does not describe: {sorted(extra)[:5]}")
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise bad(f"tensors {left[:5]} were not filled from the file")
    model.requires_grad_(False)
    model.eval()
    if device is not None:
        model.to(device)
    return model, (unpack_tokenizer(path, members) if with_tokenizer else None)


def int_modules(model: nn.Module):
    """Yield (name, module) for every IntLinear / PackedEmbedding in model."""
    for name, m in model.named_modules():
        if isinstance(m, INT_MODULES):
            yield name, m


def compile_int_model(model: nn.Module, dynamic: bool = False):
    """torch.compile (Inductor) of an integer model: each quantize step (amax, divide, round, clamp, cast)
    and each rescale (x scale, row scales, bias) becomes one fused kernel around the int8 GEMM. One
    compilation per input shape with dynamic=False (fastest; pad to a few fixed lengths when serving).
    Logits agree with the eager model to fp32 rounding, not bit for bit (fused kernels round differently)."""
    return torch.compile(model, dynamic=dynamic)
