"""Bit-packed `.xtc` artifacts: a 1-bit BERT that is actually small on disk.

Format `xtc-packed`, version 1: one ZIP file with these members

  manifest.json        (deflated) format, version, model_class, quant_spec, and
                       "members": {name: {"sha256": hex, "bytes": int}} for every other member,
                       "tensors": one entry per state_dict tensor, in state_dict order:
                         {"name", "shape", "dtype", "role", "bits", "method", "groups",
                          "scheme": binary|ternary|uniform|none, "packing", "key", "scales_key",
                          "scale_dtype"}
  weights.safetensors  (stored, already dense) for a quantized tensor `<param>`:
                         `<param>.packed`  uint8 [nbytes]   the packed codes (row-major, flattened)
                         `<param>.scales`  float32 [groups] one scale per group of rows (fp32: bit-exact)
                       every other tensor under its own name, floating point as float32
  config.json          (deflated) the model config (includes xtc_quant)
  tokenizer/<file>     (deflated) whatever tokenizer.save_pretrained wrote; optional

Packings (all little-endian within a byte, element i of the flattened tensor first):
  "binary-8"   codes {-1,+1}: bit = (code > 0), 8 per byte, LSB first    -> ceil(n/8) bytes
  "ternary-5"  codes {-1,0,1}: t = code+1, byte = sum t_j 3^j over 5 trits -> ceil(n/5) bytes (max 242)
  "uint-k"     k-bit codes: u = code + 2^(k-1) in [0, 2^k), dense bitstream,
               bit j of u at stream position i*k + j, LSB first            -> ceil(n*k/8) bytes
Tail padding is zero. A tensor's values are dequantize_codes(unpack(...), scales), which equals the
fake-quant forward of the model it was exported from bit for bit.
"""
from __future__ import annotations

import hashlib
import contextlib
import json
import math
import os
import re
import struct
import tempfile
import zipfile
import zlib

import numpy as np
import torch
import transformers
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import __version__
from .checkpoint import check_out_file
from .files import atomic_write, exclusive_writer
from .quant import (QuantLinear, QuantSpec, apply_quantization, dequantize_codes, min_weight_bytes,
                    quantize_weight_codes, quantized_modules, role_of, scheme_of, size_summary)

FORMAT = "xtc-packed"
VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
CONFIG = "config.json"
TOKENIZER_DIR = "tokenizer/"


class PackedFormatError(ValueError):
    """A .xtc file is truncated, corrupted or not in the expected format."""


# -----------------------------------------------------------------------------
# packing of int8 code tensors (any shape; flattened row-major)


def _np_codes(codes) -> np.ndarray:
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    return np.ascontiguousarray(codes).reshape(-1).astype(np.int16)  # int16: room for offsets


def _check_len(data: np.ndarray, expected: int, what: str) -> None:
    if data.size != expected:
        raise ValueError(f"{what}: expected {expected} packed bytes, got {data.size}")


def _np_bytes(data) -> np.ndarray:
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    return np.ascontiguousarray(data).reshape(-1).astype(np.uint8, copy=False)


def pack_binary(codes) -> torch.Tensor:
    """{-1,+1} codes -> uint8, 8 per byte, LSB first."""
    c = _np_codes(codes)
    if c.size and not np.all((c == 1) | (c == -1)):
        raise ValueError("pack_binary expects codes in {-1, +1}")
    return torch.from_numpy(np.packbits(c > 0, bitorder="little"))


def unpack_binary(data, numel: int) -> torch.Tensor:
    d = _np_bytes(data)
    _check_len(d, math.ceil(numel / 8), "unpack_binary")
    bits = np.unpackbits(d, count=numel, bitorder="little").astype(np.int8)
    return torch.from_numpy(bits * 2 - 1)


_POW3 = 3 ** np.arange(5, dtype=np.int16)


def pack_ternary(codes) -> torch.Tensor:
    """{-1,0,1} codes -> uint8, 5 base-3 digits per byte (3^5 = 243 <= 256), first digit lowest."""
    c = _np_codes(codes)
    if c.size and (c.min() < -1 or c.max() > 1):
        raise ValueError("pack_ternary expects codes in {-1, 0, 1}")
    t = np.zeros(math.ceil(c.size / 5) * 5, dtype=np.int16)
    t[: c.size] = c + 1
    return torch.from_numpy((t.reshape(-1, 5) @ _POW3).astype(np.uint8))


def unpack_ternary(data, numel: int) -> torch.Tensor:
    d = _np_bytes(data)
    _check_len(d, math.ceil(numel / 5), "unpack_ternary")
    if d.size and d.max() > 242:
        raise ValueError("unpack_ternary: byte value > 242 cannot hold 5 trits (corrupted data)")
    trits = (d.astype(np.int16)[:, None] // _POW3) % 3
    return torch.from_numpy((trits.reshape(-1)[:numel] - 1).astype(np.int8))


def pack_uint(codes, bits: int) -> torch.Tensor:
    """Signed k-bit codes in [-2^(k-1), 2^(k-1)) -> dense little-endian bitstream of ceil(n*k/8) bytes."""
    if not 1 <= bits <= 8:
        raise ValueError(f"pack_uint: bits must be 1..8, got {bits}")
    c = _np_codes(codes)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if c.size and (c.min() < lo or c.max() > hi):
        raise ValueError(f"pack_uint expects {bits}-bit codes in [{lo}, {hi}]")
    u = (c + 2 ** (bits - 1)).astype(np.uint8)
    stream = (u[:, None] >> np.arange(bits, dtype=np.uint8)) & 1  # [n, k], bit j of element i
    return torch.from_numpy(np.packbits(stream.reshape(-1), bitorder="little"))


def unpack_uint(data, numel: int, bits: int) -> torch.Tensor:
    if not 1 <= bits <= 8:
        raise ValueError(f"unpack_uint: bits must be 1..8, got {bits}")
    d = _np_bytes(data)
    _check_len(d, math.ceil(numel * bits / 8), "unpack_uint")
    stream = np.unpackbits(d, count=numel * bits, bitorder="little").reshape(numel, bits)
    u = (stream.astype(np.int16) << np.arange(bits, dtype=np.int16)).sum(axis=1)
    return torch.from_numpy((u - 2 ** (bits - 1)).astype(np.int8))


def _packing(bits: int, method: str) -> str:
    return {"binary": "binary-8", "ternary": "ternary-5", "uniform": f"uint-{bits}"}[scheme_of(bits, method)]


def pack_codes(codes: torch.Tensor, bits: int, method: str) -> torch.Tensor:
    """Pack with the packing that (bits, method) uses in the artifact."""
    p = _packing(bits, method)
    if p == "binary-8":
        return pack_binary(codes)
    if p == "ternary-5":
        return pack_ternary(codes)
    return pack_uint(codes, bits)


def unpack_codes(data, numel: int, bits: int, method: str) -> torch.Tensor:
    p = _packing(bits, method)
    if p == "binary-8":
        return unpack_binary(data, numel)
    if p == "ternary-5":
        return unpack_ternary(data, numel)
    return unpack_uint(data, numel, bits)


# -----------------------------------------------------------------------------
# export


def _sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _quant_params(model) -> dict[str, object]:
    """state_dict key of each quantized weight -> its wrapper."""
    out = {}
    for name, m in quantized_modules(model):
        if m.wbits < 32:
            out[f"{name}.weight"] = m  # never the root: export takes a whole model
    return out


def _tokenizer_files(tokenizer) -> dict[str, bytes]:
    if tokenizer is None:
        return {}
    with tempfile.TemporaryDirectory() as d:
        tokenizer.save_pretrained(d)
        files = {}
        for root, _, names in os.walk(d):
            for n in sorted(names):
                p = os.path.join(root, n)
                rel = os.path.relpath(p, d).replace(os.sep, "/")
                with open(p, "rb") as f:
                    files[TOKENIZER_DIR + rel] = f.read()
        return dict(sorted(files.items()))


def export_packed(model, tokenizer, out_path: str, overwrite: bool = False) -> dict:
    """Write model (with apply_quantization applied, latent fp32 weights) as a packed .xtc file.

    Returns size_report(out_path). Written atomically; refuses to replace an existing file unless
    overwrite=True.
    """
    out_path = os.fspath(out_path)
    check_out_file(out_path)
    qparams = _quant_params(model)
    frozen = [k for k, m in qparams.items() if m.frozen]
    if frozen:
        # re-quantizing already-quantized values is not guaranteed to give the same codes
        raise ValueError(f"{frozen[0]} is frozen (loaded from a packed file); copy that .xtc file "
                         f"instead of re-exporting it")
    qd = getattr(model.config, "xtc_quant", None)
    spec = QuantSpec.from_dict(qd) if qd is not None else QuantSpec()
    if qparams and qd is None:
        raise ValueError("model has quant wrappers but no config.xtc_quant; use apply_quantization")

    tensors, entries = {}, []
    for key, t in model.state_dict().items():
        role = role_of(key.rpartition(".")[0])
        if key in qparams:
            m = qparams[key]
            codes, scales = quantize_weight_codes(t, m.wbits, m.groups, m.method)
            tensors[f"{key}.packed"] = pack_codes(codes, m.wbits, m.method)
            tensors[f"{key}.scales"] = scales.to(torch.float32).contiguous()
            entries.append({"name": key, "shape": list(t.shape), "dtype": "float32", "role": role,
                            "bits": m.wbits, "method": m.method, "groups": m.groups,
                            "scheme": scheme_of(m.wbits, m.method), "packing": _packing(m.wbits, m.method),
                            "key": f"{key}.packed", "scales_key": f"{key}.scales", "scale_dtype": "float32"})
        else:
            t = t.detach().cpu()
            if t.is_floating_point():
                t = t.to(torch.float32)
            tensors[key] = t.contiguous().clone()  # clone: safetensors refuses shared storage
            entries.append({"name": key, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
                            "role": role, "bits": 32, "method": None, "groups": None, "scheme": "none",
                            "packing": "none", "key": key, "scales_key": None, "scale_dtype": None})
    members = {
        WEIGHTS: st_save(tensors, metadata={"format": "pt"}),  # one key: safetensors orders metadata randomly
        CONFIG: model.config.to_json_string().encode("utf-8"),
        **_tokenizer_files(tokenizer),
    }
    manifest = {
        "format": FORMAT, "version": VERSION, "created_by": f"xtc-bench {__version__}",
        "model_class": type(model).__name__, "quant_spec": spec.to_dict(),
        "members": {n: {"sha256": _sha256(b), "bytes": len(b)} for n, b in members.items()},
        "tensors": entries,
    }

    size = sum(len(b) for b in members.values())
    with exclusive_writer(out_path, "export"), \
            atomic_write(out_path, "wb", overwrite=overwrite, what="the packed model", size=size) as f:
        with zipfile.ZipFile(f, "w") as zf:
            for name, data in [(MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"))] + list(members.items()):
                zi = zipfile.ZipInfo(name)  # its default timestamp is fixed (1980-01-01): same model, same bytes
                # weights are already dense: deflate would only cost time
                zi.compress_type = zipfile.ZIP_STORED if name == WEIGHTS else zipfile.ZIP_DEFLATED
                zf.writestr(zi, data)
    return size_report(out_path)


# -----------------------------------------------------------------------------
# reading and verifying

_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError,
               NotImplementedError, RuntimeError, KeyError, struct.error)


def is_packed(path) -> bool:
    """Whether `path` is a packed xtc file by its content (a ZIP whose manifest says so), whatever its name."""
    try:
        with zipfile.ZipFile(os.fspath(path)) as zf:
            with zf.open(MANIFEST) as f:
                return json.loads(f.read(1 << 20)).get("format") == FORMAT
    except (*_ZIP_ERRORS, AttributeError):
        return False


def _open_verified(path: str) -> tuple[dict, dict[str, bytes]]:
    """Read a .xtc file, check manifest, member list, lengths and sha256. -> (manifest, members)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    bad = lambda why: PackedFormatError(f"{path}: {why}")  # noqa: E731
    try:
        zf = zipfile.ZipFile(path, "r")
    except _ZIP_ERRORS as e:
        raise bad(f"not a readable .xtc ZIP archive (truncated or corrupted?): {e}") from e
    with zf:
        def read(name: str, expected_len: int | None = None) -> bytes:
            try:
                info = zf.getinfo(name)
                if expected_len is not None and info.file_size != expected_len:
                    raise bad(f"member {name} is {info.file_size} bytes, manifest says {expected_len}")
                return zf.read(info)
            except PackedFormatError:
                raise
            except _ZIP_ERRORS as e:
                raise bad(f"cannot read member {name} (truncated or corrupted?): {e}") from e

        try:
            manifest = json.loads(read(MANIFEST).decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise bad(f"{MANIFEST} is not valid JSON: {e}") from e
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise bad(f"{MANIFEST} does not describe a {FORMAT!r} file")
        if manifest.get("version") != VERSION:
            raise bad(f"format version {manifest.get('version')!r} is not supported (this reader: {VERSION})")
        try:
            listed = dict(manifest["members"])
            for k in ("tensors", "quant_spec", "model_class"):
                manifest[k]
        except (KeyError, TypeError, ValueError) as e:
            raise bad(f"{MANIFEST} lacks a required field: {e}") from e
        names = set(zf.namelist())
        if len(names) != len(zf.namelist()):
            raise bad("duplicate member names in the archive")
        if names != set(listed) | {MANIFEST}:
            missing, extra = set(listed) - names, names - set(listed) - {MANIFEST}
            raise bad(f"archive members do not match the manifest (missing {sorted(missing)}, "
                      f"unexpected {sorted(extra)})")
        for need in (WEIGHTS, CONFIG):
            if need not in listed:
                raise bad(f"manifest lists no {need}")
        members = {}
        for name, meta in listed.items():
            try:
                n, digest = int(meta["bytes"]), str(meta["sha256"])
            except (KeyError, TypeError, ValueError) as e:
                raise bad(f"manifest entry for {name} is malformed: {e}") from e
            data = read(name, n)
            if len(data) != n:
                raise bad(f"member {name} is {len(data)} bytes, manifest says {n} (truncated?)")
            if _sha256(data) != digest:
                raise bad(f"member {name} fails its sha256 check (corrupted)")
            members[name] = data
    return manifest, members


def _load_tensors(path: str, manifest: dict, members: dict[str, bytes],
                  codes_out: dict | None = None) -> dict[str, torch.Tensor]:
    """Check the safetensors member against the manifest; -> state_dict of dequantized tensors (and, into
    `codes_out`, each quantized tensor's (int8 codes, fp32 scales))."""
    bad = lambda why: PackedFormatError(f"{path}: {why}")  # noqa: E731
    try:
        raw = st_load(members[WEIGHTS])
    except Exception as e:  # safetensors raises its own error type for a bad header
        raise bad(f"{WEIGHTS} is not a valid safetensors file: {e}") from e
    sd, used = {}, set()
    for e in manifest["tensors"]:
        try:
            name, shape, bits = e["name"], tuple(int(s) for s in e["shape"]), int(e["bits"])
            numel = math.prod(shape)
            if e["scheme"] == "none":
                t = raw.get(e["key"])
                if t is None or tuple(t.shape) != shape:
                    raise bad(f"tensor {name}: expected shape {list(shape)} in {WEIGHTS}, got "
                              f"{None if t is None else list(t.shape)}")
                used.add(e["key"])
                sd[name] = t
                continue
            groups, method = int(e["groups"]), e["method"]
            if e["packing"] != _packing(bits, method) or e["scheme"] != scheme_of(bits, method):
                raise bad(f"tensor {name}: packing {e['packing']!r} does not fit bits={bits} method={method}")
            packed, scales = raw.get(e["key"]), raw.get(e["scales_key"])
            nbytes = min_weight_bytes(numel, bits, method)  # the packings are exactly the minimum
            if packed is None or packed.dtype != torch.uint8 or tuple(packed.shape) != (nbytes,):
                raise bad(f"tensor {name}: packed data should be uint8 [{nbytes}], got "
                          f"{None if packed is None else (packed.dtype, list(packed.shape))}")
            if scales is None or scales.dtype != torch.float32 or tuple(scales.shape) != (groups,):
                raise bad(f"tensor {name}: scales should be float32 [{groups}], got "
                          f"{None if scales is None else (scales.dtype, list(scales.shape))}")
            if groups < 1 or (shape[0] if shape else 1) % groups:
                raise bad(f"tensor {name}: {groups} groups do not divide shape {list(shape)}")
            codes = unpack_codes(packed, numel, bits, method).reshape(shape)
            sd[name] = dequantize_codes(codes, scales, bits, groups, method)
            if codes_out is not None:
                codes_out[name] = (codes, scales)
            used.update((e["key"], e["scales_key"]))
        except PackedFormatError:
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise bad(f"tensor entry {e.get('name') if isinstance(e, dict) else e!r} is invalid: {err}") from err
    extra = set(raw) - used
    if extra:
        raise bad(f"{WEIGHTS} holds tensors the manifest does not describe: {sorted(extra)[:5]}")
    return sd


def build_model(path: str, manifest: dict, members: dict[str, bytes], meta: bool = False):
    """The quantized model a verified .xtc file describes (its class, config and quant spec), weights not yet
    loaded; `meta=True` allocates no weight at all (the integer path fills its own tensors)."""
    bad = lambda why: PackedFormatError(f"{path}: {why}")  # noqa: E731
    cls = getattr(transformers, str(manifest["model_class"]), None)
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise bad(f"unknown model class {manifest['model_class']!r}")
    try:
        config = cls.config_class.from_dict(json.loads(members[CONFIG].decode("utf-8")))
        spec = QuantSpec.from_dict(manifest["quant_spec"]).validate()
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise bad(f"bad config or quant_spec: {e}") from e
    with torch.device("meta") if meta else contextlib.nullcontext():
        model = cls(config)
    apply_quantization(model, spec)
    return model


def load_packed(path: str):
    """Verify and load a .xtc file -> (model in eval mode with frozen quantized weights, tokenizer or None)."""
    path = os.fspath(path)
    manifest, members = _open_verified(path)
    codes = {}
    sd = _load_tensors(path, manifest, members, codes)
    model = build_model(path, manifest, members)
    bad = lambda why: PackedFormatError(f"{path}: {why}")  # noqa: E731

    qparams = _quant_params(model)
    qentries = {e["name"]: e for e in manifest["tensors"] if e["scheme"] != "none"}
    if set(qentries) != set(qparams):
        raise bad(f"quantized tensors in the file ({len(qentries)}) do not match the quant spec "
                  f"({len(qparams)}): e.g. {sorted(set(qentries) ^ set(qparams))[:3]}")
    for k, m in qparams.items():
        e = qentries[k]
        if (e["bits"], e["groups"], e["method"]) != (m.wbits, m.groups, m.method):
            raise bad(f"tensor {k}: stored as bits={e['bits']} groups={e['groups']} method={e['method']}, "
                      f"the quant spec says bits={m.wbits} groups={m.groups} method={m.method}")
    own = model.state_dict()
    if set(own) != set(sd):
        diff = sorted(set(own) ^ set(sd))
        raise bad(f"tensor names do not match {manifest['model_class']} built from config.json: {diff[:5]}")
    for k, t in own.items():
        if t.shape != sd[k].shape:
            raise bad(f"tensor {k}: shape {list(sd[k].shape)} in file, model expects {list(t.shape)}")
    model.load_state_dict(sd)  # strict: the names were compared above
    for k, m in qparams.items():
        m.frozen = True  # the weight now holds dequantized codes: use as is
        if isinstance(m, QuantLinear):  # integer evaluation uses the file's codes (QuantLinear.integer_eval)
            m.set_codes(*codes[k])
    model.eval()

    return model, unpack_tokenizer(path, members)


def unpack_tokenizer(path: str, members: dict[str, bytes]):
    """The tokenizer stored under TOKENIZER_DIR of a packed file's members (None if it has none), loaded from a
    temporary folder; a member whose name leaves that folder is a PackedFormatError."""
    tok_files = {n: b for n, b in members.items() if n.startswith(TOKENIZER_DIR)}
    if not tok_files:
        return None
    with tempfile.TemporaryDirectory() as d:
        for n, b in tok_files.items():
            p = os.path.normpath(os.path.join(d, n[len(TOKENIZER_DIR):]))
            if not p.startswith(os.path.abspath(d) + os.sep):
                raise PackedFormatError(f"{path}: tokenizer member {n} points outside its folder")
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(b)
        return transformers.AutoTokenizer.from_pretrained(d)


# -----------------------------------------------------------------------------
# size report


def size_report(path_or_model, teacher_fp32_bytes: int | None = None) -> dict:
    """Sizes of a .xtc file (or of a model, by exporting it to a temporary file without tokenizer).

    compression_ratio = fp32 bytes of the same architecture / bytes of the weights member;
    compression_ratio_file uses the whole file (tokenizer included); ratio_to_teacher =
    teacher_fp32_bytes / weights bytes.
    """
    if not isinstance(path_or_model, (str, os.PathLike)):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "model.xtc")
            export_packed(path_or_model, None, p)
            return size_report(p, teacher_fp32_bytes)
    path = os.fspath(path_or_model)
    manifest, members = _open_verified(path)
    # BERT's state_dict holds parameters only, so this counts what model_size() counts
    size = size_summary((math.prod(e["shape"]), e["role"], e["bits"], e["method"],
                         e["groups"]) for e in manifest["tensors"])
    total = size["total_params"]
    tok = sum(len(b) for n, b in members.items() if n.startswith(TOKENIZER_DIR))
    file_bytes, weights_bytes = os.path.getsize(path), len(members[WEIGHTS])
    rep = {
        "path": path,
        "params_by_role": size["params_by_role"],
        "total_params": total,
        "quantized_params": size["quantized_params"],
        "quant_spec": manifest["quant_spec"],
        "fp32_bytes": size["fp32_bytes"],
        "theoretical_bytes": size["quantized_bytes"],
        "file_bytes": file_bytes,
        "weights_bytes": weights_bytes,
        "tokenizer_bytes": tok,
        "config_bytes": len(members[CONFIG]),
        "bits_per_weight": 8 * weights_bytes / max(total, 1),
        "compression_ratio": 4 * total / weights_bytes,
        "compression_ratio_file": 4 * total / file_bytes,
        "weights_over_theoretical": weights_bytes / size["quantized_bytes"],
    }
    if teacher_fp32_bytes is not None:
        rep["teacher_fp32_bytes"] = teacher_fp32_bytes
        rep["ratio_to_teacher"] = teacher_fp32_bytes / weights_bytes
        rep["ratio_to_teacher_file"] = teacher_fp32_bytes / file_bytes
    return rep


# -----------------------------------------------------------------------------
# public read access for other loaders (xtc.infer reads codes without dequantizing them)


def read_verified(path: str) -> tuple[dict, dict[str, bytes]]:
    """Verify a .xtc file (manifest, member list, lengths, sha256) -> (manifest, {member name: bytes}).
    Raises PackedFormatError for a truncated, corrupted or foreign file."""
    return _open_verified(path)


def packing_of(bits: int, method: str) -> str:
    """The packing ("binary-8", "ternary-5" or "uint-k") that (bits, method) uses in the artifact."""
    return _packing(bits, method)
