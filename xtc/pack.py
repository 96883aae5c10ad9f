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

The packings ("binary-8", "ternary-5", "uint-k") are the codecs' (xtc.codec, which documents each). A
tensor's values are dequantize_codes(unpack(...), scales), which equals the fake-quant forward of the model it
was exported from bit for bit.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass

import torch
import transformers
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import __version__
from .files import check_out_file, sha256
from .codec import Binary, Codec, Ternary, UintK, codec_for
from .files import atomic_write, exclusive_writer
from .quant import (QuantLinear, QuantSpec, apply_quantization, quantize_weight_codes, quantized_modules,
                    role_of, size_summary)

FORMAT = "xtc-packed"
VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
CONFIG = "config.json"
TOKENIZER_DIR = "tokenizer/"


class PackedFormatError(ValueError):
    """A .xtc file is truncated, corrupted or not in the expected format."""


# -----------------------------------------------------------------------------
# packing of int8 code tensors (any shape; flattened row-major): the codecs', by (bits, method) or by name


def _codec(bits: int, method: str) -> Codec:
    codec = codec_for(bits, method)
    if codec is None:
        raise ValueError("32-bit weights have no codes")
    return codec


def pack_codes(codes: torch.Tensor, bits: int, method: str, groups: int = 1) -> torch.Tensor:
    """Pack with the packing that (bits, method) uses in the artifact."""
    return _codec(bits, method).pack(codes, groups)


def unpack_codes(data, numel: int, bits: int, method: str, groups: int = 1) -> torch.Tensor:
    return _codec(bits, method).unpack(data, numel, groups)


def pack_binary(codes) -> torch.Tensor:
    """{-1,+1} codes -> uint8, 8 per byte, LSB first."""
    return Binary().pack(codes, 1)


def unpack_binary(data, numel: int) -> torch.Tensor:
    return Binary().unpack(data, numel, 1)


def pack_ternary(codes) -> torch.Tensor:
    """{-1,0,1} codes -> uint8, 5 base-3 digits per byte (3^5 = 243 <= 256), first digit lowest."""
    return Ternary().pack(codes, 1)


def unpack_ternary(data, numel: int) -> torch.Tensor:
    return Ternary().unpack(data, numel, 1)


def _uint(bits: int, who: str) -> UintK:
    if not 1 <= bits <= 8:
        raise ValueError(f"{who}: bits must be 1..8, got {bits}")
    return UintK(bits)


def pack_uint(codes, bits: int) -> torch.Tensor:
    """Signed k-bit codes in [-2^(k-1), 2^(k-1)) -> dense little-endian bitstream of ceil(n*k/8) bytes."""
    return _uint(bits, "pack_uint").pack(codes, 1)


def unpack_uint(data, numel: int, bits: int) -> torch.Tensor:
    return _uint(bits, "unpack_uint").unpack(data, numel, 1)


# -----------------------------------------------------------------------------
# export


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
    spec = _exportable_spec(model)
    tensors, entries = _packed_state(model)
    members = {
        WEIGHTS: st_save(tensors, metadata={"format": "pt"}),  # one key: safetensors orders metadata randomly
        CONFIG: model.config.to_json_string().encode("utf-8"),
        **_tokenizer_files(tokenizer),
    }
    manifest = {
        "format": FORMAT, "version": VERSION, "created_by": f"xtc-bench {__version__}",
        "model_class": type(model).__name__, "quant_spec": spec.to_dict(),
        "members": {n: {"sha256": sha256(b), "bytes": len(b)} for n, b in members.items()},
        "tensors": entries,
    }
    _write_archive(out_path, manifest, members, overwrite)
    return size_report(out_path)


def _exportable_spec(model) -> QuantSpec:
    """The model's quant spec, after checking that its quantized weights are latent fp32 ones."""
    qparams = _quant_params(model)
    frozen = [k for k, m in qparams.items() if m.frozen]
    if frozen:
        # re-quantizing already-quantized values is not guaranteed to give the same codes
        raise ValueError(f"{frozen[0]} is frozen (loaded from a packed file); copy that .xtc file "
                         f"instead of re-exporting it")
    qd = getattr(model.config, "xtc_quant", None)
    if qparams and qd is None:
        raise ValueError("model has quant wrappers but no config.xtc_quant; use apply_quantization")
    return QuantSpec.from_dict(qd) if qd is not None else QuantSpec()


def _packed_state(model) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """(the weights member's tensors, the manifest's tensor entries), one per state_dict tensor, in order."""
    qparams = _quant_params(model)
    tensors, entries = {}, []
    for key, t in model.state_dict().items():
        entry = {"name": key, "shape": list(t.shape), "role": role_of(key.rpartition(".")[0])}
        if key in qparams:
            m = qparams[key]
            codec = codec_for(m.wbits, m.method)
            codes, scales = quantize_weight_codes(t, m.wbits, m.groups, m.method)
            tensors[f"{key}.packed"] = codec.pack(codes, m.groups)
            tensors[f"{key}.scales"] = scales.to(torch.float32).contiguous()
            entry.update(dtype="float32", bits=m.wbits, method=m.method, groups=m.groups, scheme=codec.scheme,
                         packing=codec.packing, key=f"{key}.packed", scales_key=f"{key}.scales",
                         scale_dtype="float32")
        else:
            t = t.detach().cpu()
            if t.is_floating_point():
                t = t.to(torch.float32)
            tensors[key] = t.contiguous().clone()  # clone: safetensors refuses shared storage
            entry.update(dtype=str(t.dtype).replace("torch.", ""), bits=32, method=None, groups=None,
                         scheme="none", packing="none", key=key, scales_key=None, scale_dtype=None)
        entries.append({k: entry[k] for k in _ENTRY_FIELDS})
    return tensors, entries


_ENTRY_FIELDS = ("name", "shape", "dtype", "role", "bits", "method", "groups", "scheme", "packing", "key",
                 "scales_key", "scale_dtype")  # the manifest's order


def _write_archive(out_path: str, manifest: dict, members: dict[str, bytes], overwrite: bool) -> None:
    size = sum(len(b) for b in members.values())
    with exclusive_writer(out_path, "export"), \
            atomic_write(out_path, "wb", overwrite=overwrite, what="the packed model", size=size) as f:
        with zipfile.ZipFile(f, "w") as zf:
            for name, data in [(MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"))] + list(members.items()):
                zi = zipfile.ZipInfo(name)  # its default timestamp is fixed (1980-01-01): same model, same bytes
                # weights are already dense: deflate would only cost time
                zi.compress_type = zipfile.ZIP_STORED if name == WEIGHTS else zipfile.ZIP_DEFLATED
                zf.writestr(zi, data)


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


def read_verified(path: str) -> tuple[dict, dict[str, bytes]]:
    """Read a .xtc file, check manifest, member list, lengths and sha256 -> (manifest, {member name: bytes}).
    Raises PackedFormatError for a truncated, corrupted or foreign file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    bad = lambda why: PackedFormatError(f"{path}: {why}")  # noqa: E731
    try:
        zf = zipfile.ZipFile(path, "r")
    except _ZIP_ERRORS as e:
        raise bad(f"not a readable .xtc ZIP archive (truncated or corrupted?): {e}") from e
    with zf:
        manifest, listed = _read_manifest(zf, bad)
        _check_member_names(zf, listed, bad)
        members = {name: _read_member(zf, name, meta, bad) for name, meta in listed.items()}
    return manifest, members


def _read_bytes(zf: zipfile.ZipFile, name: str, bad, expected_len: int | None = None) -> bytes:
    try:
        info = zf.getinfo(name)
        if expected_len is not None and info.file_size != expected_len:
            raise bad(f"member {name} is {info.file_size} bytes, manifest says {expected_len}")
        return zf.read(info)
    except PackedFormatError:
        raise
    except _ZIP_ERRORS as e:
        raise bad(f"cannot read member {name} (truncated or corrupted?): {e}") from e


def _read_manifest(zf: zipfile.ZipFile, bad) -> tuple[dict, dict]:
    """(the manifest, its member list), after checking format, version and the required fields."""
    try:
        manifest = json.loads(_read_bytes(zf, MANIFEST, bad).decode("utf-8"))
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
    return manifest, listed


def _check_member_names(zf: zipfile.ZipFile, listed: dict, bad) -> None:
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


def _read_member(zf: zipfile.ZipFile, name: str, meta, bad) -> bytes:
    """A member's bytes, checked against its manifest entry's length and sha256."""
    try:
        n, digest = int(meta["bytes"]), str(meta["sha256"])
    except (KeyError, TypeError, ValueError) as e:
        raise bad(f"manifest entry for {name} is malformed: {e}") from e
    data = _read_bytes(zf, name, bad, n)
    if len(data) != n:
        raise bad(f"member {name} is {len(data)} bytes, manifest says {n} (truncated?)")
    if sha256(data) != digest:
        raise bad(f"member {name} fails its sha256 check (corrupted)")
    return data


@dataclass
class StoredTensor:
    """One tensor of a .xtc file, its manifest entry checked against the weights member: a full-precision
    tensor (codec None: `data` is the tensor) or packed codes (`data` uint8) and fp32 scales [groups]."""
    name: str
    shape: tuple[int, ...]
    data: torch.Tensor
    codec: Codec | None = None
    groups: int | None = None
    scales: torch.Tensor | None = None

    @functools.cached_property
    def codes(self) -> torch.Tensor:
        """int8 codes shaped like the tensor (unpacked once, when first asked for)."""
        return self.codec.unpack(self.data, math.prod(self.shape), self.groups).reshape(self.shape)

    def values(self) -> torch.Tensor:
        """The tensor's values: the full-precision tensor, or codes * scales (dequantize_codes)."""
        if self.codec is None:
            return self.data
        return self.codec.dequantize(self.codes.reshape(self.groups, -1), self.scales).reshape(self.shape)


def read_tensors(path: str, manifest: dict, members: dict[str, bytes]) -> dict[str, StoredTensor]:
    """The one validator of a file's tensor entries: each checked against the weights member (packing, bytes,
    scales, groups), every stored tensor described -> {name: StoredTensor}, in manifest order."""
    bad = lambda why: PackedFormatError(f"{path}: {why}")  # noqa: E731
    try:
        raw = st_load(members[WEIGHTS])
    except Exception as e:  # safetensors raises its own error type for a bad header
        raise bad(f"{WEIGHTS} is not a valid safetensors file: {e}") from e
    stored, used = {}, set()
    for e in manifest["tensors"]:
        try:
            t = _stored_tensor(bad, e, raw)
            used.update(k for k in (e["key"], e["scales_key"]) if k is not None)
        except PackedFormatError:
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise bad(f"tensor entry {e.get('name') if isinstance(e, dict) else e!r} is invalid: {err}") from err
        stored[t.name] = t
    extra = set(raw) - used
    if extra:
        raise bad(f"{WEIGHTS} holds tensors the manifest does not describe: {sorted(extra)[:5]}")
    return stored


def _stored_tensor(bad, e: dict, raw: dict[str, torch.Tensor]) -> StoredTensor:
    name, shape, bits = e["name"], tuple(int(s) for s in e["shape"]), int(e["bits"])
    if e["scheme"] == "none":
        t = raw.get(e["key"])
        if t is None or tuple(t.shape) != shape:
            raise bad(f"tensor {name}: expected shape {list(shape)} in {WEIGHTS}, got "
                      f"{None if t is None else list(t.shape)}")
        return StoredTensor(name, shape, t)
    groups, method = int(e["groups"]), e["method"]
    codec = codec_for(bits, method)
    if codec is None or (e["packing"], e["scheme"]) != (codec.packing, codec.scheme):
        raise bad(f"tensor {name}: packing {e['packing']!r} does not fit bits={bits} method={method}")
    packed, scales = raw.get(e["key"]), raw.get(e["scales_key"])
    nbytes = codec.nbytes(math.prod(shape), groups)  # the packings are exactly the minimum
    if packed is None or packed.dtype != torch.uint8 or tuple(packed.shape) != (nbytes,):
        raise bad(f"tensor {name}: packed data should be uint8 [{nbytes}], got "
                  f"{None if packed is None else (packed.dtype, list(packed.shape))}")
    if scales is None or scales.dtype != torch.float32 or tuple(scales.shape) != (groups,):
        raise bad(f"tensor {name}: scales should be float32 [{groups}], got "
                  f"{None if scales is None else (scales.dtype, list(scales.shape))}")
    if groups < 1 or (shape[0] if shape else 1) % groups:
        raise bad(f"tensor {name}: {groups} groups do not divide shape {list(shape)}")
    why = codec.corruption(packed)
    if why:
        raise bad(f"tensor {name}: {why}")
    return StoredTensor(name, shape, packed, codec, groups, scales)


def check_fits(path: str, manifest: dict, stored: dict[str, StoredTensor], model) -> None:
    """The file's tensors against the model its config and quant spec build: the same quantized tensors at the
    same (bits, groups, method), the same names, the same shapes."""
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
    if set(own) != set(stored):
        diff = sorted(set(own) ^ set(stored))
        raise bad(f"tensor names do not match {manifest['model_class']} built from config.json: {diff[:5]}")
    for k, t in own.items():
        if tuple(t.shape) != stored[k].shape:
            raise bad(f"tensor {k}: shape {list(stored[k].shape)} in file, model expects {list(t.shape)}")


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
    manifest, members = read_verified(path)
    stored = read_tensors(path, manifest, members)
    model = build_model(path, manifest, members)
    check_fits(path, manifest, stored, model)
    model.load_state_dict({k: t.values() for k, t in stored.items()})  # strict: the names were compared
    for k, m in _quant_params(model).items():
        m.frozen = True  # the weight now holds dequantized codes: use as is
        if isinstance(m, QuantLinear):  # integer evaluation uses the file's codes (QuantLinear.integer_eval)
            m.set_codes(stored[k].codes, stored[k].scales)
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
    manifest, members = read_verified(path)
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
