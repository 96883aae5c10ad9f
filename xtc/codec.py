"""Weight codecs: one small type per quantization scheme, owning everything about its integer codes.

A codec turns a weight into int8 codes and fp32 scales (one per group of rows), and the codes into bytes and
back. Fake quantization (xtc.quant), export and loading of a `.xtc` file (xtc.pack) and integer inference
(xtc.infer) all ask the codec of a (bits, method) pair, `codec_for(bits, method)`, and nothing else, so a new
scheme is one new Codec subclass with its entry in CODECS, and its tests. (A scheme under a new method name is
also a choice of the --quant-method setting: config.METHODS, which stays free of torch and so cannot read CODECS;
tests/test_codec.py fails until the two agree.)

  scheme    codes                          maths (per group of rows, a = the group's scale)
  binary    {-1,+1}                        a = mean|W|, code = +1 if W >= 0 else -1
  ternary   {-1,0,+1}                      d = 0.7 mean|W|, a = mean of |W| over |W| > d, code = 1[W > d] - 1[W < -d]
  uniform   [-2^(k-1), 2^(k-1))            a = 2 max|W| / 2^k, code = clamp(round(W / a))

A weight's values are always codes * its group's scale (`Codec.dequantize`).

Packings (all little-endian within a byte, element i of the flattened tensor first; tail padding is zero):
  "binary-8"   bit = (code > 0), 8 per byte, LSB first                          -> ceil(n/8) bytes
  "ternary-5"  t = code+1, byte = sum t_j 3^j over 5 trits (max 242)             -> ceil(n/5) bytes
  "uint-k"     u = code + 2^(k-1) in [0, 2^k), dense bitstream, bit j of u at
               stream position i*k + j, LSB first                               -> ceil(n*k/8) bytes
"""
from __future__ import annotations

import math

import numpy as np
import torch

POW3 = (1, 3, 9, 27, 81)  # a ternary byte's five digits


def _np_codes(codes) -> np.ndarray:
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    return np.ascontiguousarray(codes).reshape(-1).astype(np.int16)  # int16: room for offsets


def _np_bytes(data) -> np.ndarray:
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    return np.ascontiguousarray(data).reshape(-1).astype(np.uint8, copy=False)


def _check_len(data: np.ndarray, expected: int, what: str) -> None:
    if data.size != expected:
        raise ValueError(f"{what}: expected {expected} packed bytes, got {data.size}")


class Codec:
    """One weight scheme. `wf` is always an fp32 weight reshaped to [groups, rows * cols / groups].

    Subclasses define `scheme`, `packing`, `bits`, `methods` (the QuantSpec methods that select it) and
    quantize, nbytes, pack, unpack and the two row decoders; `groups` is passed to every byte-level method so
    that a scheme with per-group side data in its bytes (a zero point, say) fits the same interface.
    """
    scheme: str
    packing: str
    bits: int
    methods: tuple[str, ...]

    def quantize(self, wf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (int8 codes [groups, n], fp32 scales [groups]). The one place that does this scheme's maths."""
        raise NotImplementedError

    def fake_quant(self, wf: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """dequantize(*quantize(wf)) in `dtype` (the training forward). Subclasses may compute the same numbers
        without materialising codes."""
        return self.dequantize(*self.quantize(wf), dtype=dtype)

    @staticmethod
    def dequantize(codes: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """codes [groups, n] * scales [groups], in fp32, then cast to `dtype`."""
        return (codes.to(torch.float32) * scales.to(torch.float32)[:, None]).to(dtype)

    def nbytes(self, numel: int, groups: int) -> int:
        """Bytes of the packed codes of a tensor of `numel` values in `groups` groups (exactly what pack writes)."""
        raise NotImplementedError

    def pack(self, codes, groups: int) -> torch.Tensor:
        """int8 codes (any shape; flattened row-major) -> uint8 [nbytes]."""
        raise NotImplementedError

    def unpack(self, data, numel: int, groups: int) -> torch.Tensor:
        """uint8 [nbytes] -> int8 codes [numel]; ValueError for a wrong length or impossible bytes."""
        raise NotImplementedError

    def corruption(self, packed: torch.Tensor) -> str | None:
        """Why these packed bytes cannot be this scheme's (None: they can); checked when a file is loaded."""
        return None

    # ---- row decoding (xtc.infer.PackedEmbedding): the codes of a few rows of a packed table, in torch
    def row_buffer(self, packed: torch.Tensor) -> torch.Tensor:
        """What decode_rows reads: the packed bytes plus one zero byte (a k-bit code may straddle two bytes)."""
        return torch.cat([packed.reshape(-1).to(torch.uint8), torch.zeros(1, dtype=torch.uint8)])

    def codes_per_run(self) -> int:
        """Codes in the shortest run of whole bytes: a row of a multiple of this length starts on a byte."""
        raise NotImplementedError

    def decode_rows(self, buffer: torch.Tensor, ids: torch.Tensor, shape: tuple[int, int],
                    groups: int) -> torch.Tensor:
        """int32 codes [*ids.shape, dim] of rows `ids` of a packed [rows, dim] table (buffer: row_buffer)."""
        flat = ids.reshape(-1).to(torch.int64)
        rows, dim = shape
        if dim % self.codes_per_run() == 0:  # every row starts on a byte boundary: gather whole rows of bytes
            row_bytes = self.nbytes(dim, 1)
            data = buffer[: rows * row_bytes].view(rows, row_bytes)[flat].to(torch.int32).unsqueeze(-1)
            codes = self._decode_row_bytes(data, len(flat), dim)
        else:  # rows start mid-byte: address each code by its element index
            codes = self._decode_elements(buffer, flat.unsqueeze(1) * dim + torch.arange(dim, device=ids.device))
        return codes.reshape(*ids.shape, dim)

    def _decode_row_bytes(self, data: torch.Tensor, n: int, dim: int) -> torch.Tensor:
        """int32 [n, row_bytes, 1] whole rows of bytes -> int32 codes (any shape holding n * dim)."""
        raise NotImplementedError

    def _decode_elements(self, buffer: torch.Tensor, elem: torch.Tensor) -> torch.Tensor:
        """int32 codes of the flat element indices `elem`."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.packing})"


def _bit_range(device) -> torch.Tensor:
    return torch.arange(8, device=device, dtype=torch.int32)


class Binary(Codec):
    scheme, packing, bits, methods = "binary", "binary-8", 1, ("xtc",)

    @staticmethod
    def _decide(wf):
        # not torch.sign: a zero weight must become +a so every value is exactly +-a
        return wf >= 0, wf.abs().mean(dim=1, keepdim=True)

    def quantize(self, wf):
        positive, a = self._decide(wf)
        return torch.where(positive, 1, -1).to(torch.int8), a.reshape(-1)

    def fake_quant(self, wf, dtype):
        # one select between +-a per weight, written straight in the matmul's dtype (bf16 under autocast)
        positive, a = self._decide(wf)
        a = a.to(dtype)
        return torch.where(positive, a, -a)

    def nbytes(self, numel, groups):
        return math.ceil(numel / 8)

    def pack(self, codes, groups):
        c = _np_codes(codes)
        if c.size and not np.all((c == 1) | (c == -1)):
            raise ValueError("pack_binary expects codes in {-1, +1}")
        return torch.from_numpy(np.packbits(c > 0, bitorder="little"))

    def unpack(self, data, numel, groups):
        d = _np_bytes(data)
        _check_len(d, self.nbytes(numel, groups), "unpack_binary")
        bits = np.unpackbits(d, count=numel, bitorder="little").astype(np.int8)
        return torch.from_numpy(bits * 2 - 1)

    def codes_per_run(self):
        return 8

    def _decode_row_bytes(self, data, n, dim):
        return ((data >> _bit_range(data.device)) & 1) * 2 - 1

    def _decode_elements(self, buffer, elem):
        byte = buffer[elem >> 3].to(torch.int32)
        return ((byte >> (elem & 7).to(torch.int32)) & 1) * 2 - 1


class Ternary(Codec):
    scheme, packing, bits, methods = "ternary", "ternary-5", 2, ("xtc",)
    _MAX_BYTE = 3**5 - 1  # 242

    @staticmethod
    def _decide(wf):
        absw = wf.abs()
        d = 0.7 * absw.mean(dim=1, keepdim=True)
        pos, neg = wf > d, wf < -d
        keep = pos | neg
        # clamp(min=1): a group with nothing above d has sum 0, hence a = 0
        a = (absw * keep).sum(dim=1, keepdim=True) / keep.sum(dim=1, keepdim=True).clamp(min=1)
        return pos, neg, a

    def quantize(self, wf):
        pos, neg, a = self._decide(wf)
        return pos.to(torch.int8) - neg.to(torch.int8), a.reshape(-1)

    def fake_quant(self, wf, dtype):
        pos, neg, a = self._decide(wf)
        a = a.to(dtype)
        return torch.where(pos, a, torch.where(neg, -a, 0.0))  # a python 0.0 takes a's dtype

    def nbytes(self, numel, groups):
        return math.ceil(numel / 5)

    def pack(self, codes, groups):
        c = _np_codes(codes)
        if c.size and (c.min() < -1 or c.max() > 1):
            raise ValueError("pack_ternary expects codes in {-1, 0, 1}")
        t = np.zeros(math.ceil(c.size / 5) * 5, dtype=np.int16)
        t[: c.size] = c + 1
        return torch.from_numpy((t.reshape(-1, 5) @ np.array(POW3, dtype=np.int16)).astype(np.uint8))

    def unpack(self, data, numel, groups):
        d = _np_bytes(data)
        _check_len(d, self.nbytes(numel, groups), "unpack_ternary")
        if d.size and d.max() > self._MAX_BYTE:
            raise ValueError("unpack_ternary: byte value > 242 cannot hold 5 trits (corrupted data)")
        trits = (d.astype(np.int16)[:, None] // np.array(POW3, dtype=np.int16)) % 3
        return torch.from_numpy((trits.reshape(-1)[:numel] - 1).astype(np.int8))

    def corruption(self, packed):
        if packed.numel() and int(packed.max()) > self._MAX_BYTE:
            return "a ternary byte above 242 cannot hold 5 trits (corrupted data)"
        return None

    def codes_per_run(self):
        return 5

    def _decode_row_bytes(self, data, n, dim):
        return (data // torch.tensor(POW3, dtype=torch.int32, device=data.device)) % 3 - 1

    def _decode_elements(self, buffer, elem):
        byte = buffer[elem // 5].to(torch.int32)
        return (byte // torch.tensor(POW3, dtype=torch.int32, device=elem.device)[elem % 5]) % 3 - 1


class UintK(Codec):
    """Symmetric uniform k-bit codes, stored as unsigned k-bit fields of a dense bitstream."""
    scheme = "uniform"

    def __init__(self, bits: int, methods: tuple[str, ...] = ("xtc", "uniform")):
        if not 1 <= bits <= 8:
            raise ValueError(f"uint-k packing: bits must be 1..8, got {bits}")
        self.bits, self.methods, self.packing = bits, methods, f"uint-{bits}"
        self.lo, self.hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def quantize(self, wf):
        scale = 2 * wf.abs().amax(dim=1) / 2**self.bits
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # all-zero group: q = 0 anyway
        q = torch.round(wf / scale[:, None]).clamp(self.lo, self.hi)
        return q.to(torch.int8), scale

    def nbytes(self, numel, groups):
        return math.ceil(numel * self.bits / 8)

    def pack(self, codes, groups):
        c = _np_codes(codes)
        if c.size and (c.min() < self.lo or c.max() > self.hi):
            raise ValueError(f"pack_uint expects {self.bits}-bit codes in [{self.lo}, {self.hi}]")
        u = (c - self.lo).astype(np.uint8)
        stream = (u[:, None] >> np.arange(self.bits, dtype=np.uint8)) & 1  # [n, k], bit j of element i
        return torch.from_numpy(np.packbits(stream.reshape(-1), bitorder="little"))

    def unpack(self, data, numel, groups):
        d = _np_bytes(data)
        _check_len(d, self.nbytes(numel, groups), "unpack_uint")
        stream = np.unpackbits(d, count=numel * self.bits, bitorder="little").reshape(numel, self.bits)
        u = (stream.astype(np.int16) << np.arange(self.bits, dtype=np.int16)).sum(axis=1)
        return torch.from_numpy((u + self.lo).astype(np.int8))

    def codes_per_run(self):
        return 8 // math.gcd(8, self.bits)

    def _decode_row_bytes(self, data, n, dim):
        k = self.bits
        bits = (data >> _bit_range(data.device)) & 1
        bits = bits.reshape(n, dim, k) << torch.arange(k, device=data.device, dtype=torch.int32)
        return bits.sum(-1, dtype=torch.int32) + self.lo

    def _decode_elements(self, buffer, elem):
        start = elem * self.bits  # a code's k bits start at bit elem*k and span at most two bytes
        lo = buffer[start >> 3].to(torch.int32)
        hi = buffer[(start >> 3) + 1].to(torch.int32)
        return (((lo | (hi << 8)) >> (start & 7).to(torch.int32)) & (2**self.bits - 1)) + self.lo


# -----------------------------------------------------------------------------
# the registry: which codec a (bits, method) pair means. A new scheme: one entry here.

CODECS: tuple[Codec, ...] = (Binary(), Ternary(), UintK(2, ("uniform",)), *(UintK(k) for k in range(3, 9)))
_BY_KEY = {(method, c.bits): c for c in CODECS for method in c.methods}
METHODS = tuple(dict.fromkeys(m for c in CODECS for m in c.methods))  # ("xtc", "uniform")
NO_QUANTIZATION = 32  # the weight width that means "keep fp32"


def _widths(method: str) -> str:
    ks = sorted(k for m, k in _BY_KEY if m == method)
    return f"{ks[0]}..{ks[-1]}" if ks == list(range(ks[0], ks[-1] + 1)) else ", ".join(map(str, ks))


def codec_for(bits: int, method: str = "xtc") -> Codec | None:
    """The codec of a (bits, method) pair; None for 32 bits (no quantization). ValueError for anything else."""
    if method not in METHODS:
        raise ValueError(f"unknown quantization method {method!r}; use one of {METHODS}")
    if bits == NO_QUANTIZATION:
        return None
    codec = _BY_KEY.get((method, bits))
    if codec is None:
        other = [m for m in METHODS if (m, bits) in _BY_KEY]
        hint = f" ({bits}-bit needs method={other[0]!r})" if other else ""
        raise ValueError(f"unsupported weight bit-width {bits} for method {method!r}; "
                         f"use {_widths(method)} or {NO_QUANTIZATION}{hint}")
    return codec
