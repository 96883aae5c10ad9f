"""xtc.pack: bit packing round trips and the .xtc artifact (bit-exact reload, corruption, sizes)."""
from __future__ import annotations

import json
import math
import os
import zipfile

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from xtc.pack import (PackedFormatError, export_packed, load_packed, pack_binary, pack_codes, pack_ternary,
                      pack_uint, size_report, unpack_binary, unpack_codes, unpack_ternary, unpack_uint)
from xtc.quant import (QuantSpec, apply_quantization, model_size, quantize_weight, quantize_weight_codes,
                       quantized_modules)

LENGTHS = [1, 7, 13, 1001]


def rand_codes(n, lo, hi, seed=0, exclude_zero=False):
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(lo, hi + 1, (n,), generator=g, dtype=torch.int64)
    if exclude_zero:
        c = torch.where(c == 0, torch.ones_like(c), c)
    return c.to(torch.int8)


# ---------------------------------------------------------------- packing


@pytest.mark.parametrize("n", LENGTHS)
def test_binary_roundtrip_and_length(n):
    c = rand_codes(n, -1, 1, seed=n, exclude_zero=True)
    data = pack_binary(c)
    assert data.dtype == torch.uint8 and data.numel() == math.ceil(n / 8)
    assert torch.equal(unpack_binary(data, n), c)


def test_binary_bit_order_is_documented_lsb_first():
    assert pack_binary(torch.tensor([1, -1, -1, -1, -1, -1, -1, -1, 1], dtype=torch.int8)).tolist() == [1, 1]
    with pytest.raises(ValueError):
        pack_binary(torch.tensor([1, 0], dtype=torch.int8))


@pytest.mark.parametrize("n", LENGTHS)
def test_ternary_roundtrip_and_length(n):
    c = rand_codes(n, -1, 1, seed=n)
    data = pack_ternary(c)
    assert data.dtype == torch.uint8 and data.numel() == math.ceil(n / 5)
    assert int(data.max()) <= 242
    assert torch.equal(unpack_ternary(data, n), c)


def test_ternary_digit_order():
    # trits t = code + 1 = [2, 0, 1, 1, 1] -> 2 + 0*3 + 1*9 + 1*27 + 1*81 = 119
    assert pack_ternary(torch.tensor([1, -1, 0, 0, 0], dtype=torch.int8)).tolist() == [119]
    with pytest.raises(ValueError, match="242"):
        unpack_ternary(torch.tensor([243], dtype=torch.uint8), 5)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", LENGTHS)
def test_uint_roundtrip_every_bitwidth(bits, n):
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    c = rand_codes(n, lo, hi, seed=bits * 1000 + n)
    c[0] = lo if n > 1 else hi  # both extremes present
    c[-1] = hi
    data = pack_uint(c, bits)
    assert data.dtype == torch.uint8 and data.numel() == math.ceil(n * bits / 8)
    assert torch.equal(unpack_uint(data, n, bits), c)


def test_uint_bitstream_layout_and_range_check():
    # 3-bit codes [-4, 3, 0] -> u = [0, 7, 4] -> stream bits 000 111 001 (LSB first) -> 0b00111000, 0b1
    assert pack_uint(torch.tensor([-4, 3, 0], dtype=torch.int8), 3).tolist() == [0b00111000, 0b1]
    with pytest.raises(ValueError):
        pack_uint(torch.tensor([4], dtype=torch.int8), 3)
    with pytest.raises(ValueError, match="packed bytes"):
        unpack_uint(torch.zeros(3, dtype=torch.uint8), 13, 2)  # needs 4 bytes


@pytest.mark.parametrize("bits,method", [(1, "xtc"), (2, "xtc"), (2, "uniform"), (5, "xtc")])
def test_pack_codes_dispatch_multidim(bits, method):
    w = torch.randn(6, 7)
    codes, _ = quantize_weight_codes(w, bits, 2, method)
    data = pack_codes(codes, bits, method)
    assert torch.equal(unpack_codes(data, codes.numel(), bits, method).reshape(6, 7), codes)


# ---------------------------------------------------------------- artifact


def load_tiny(model_dir):
    model = BertForSequenceClassification.from_pretrained(model_dir).eval()
    tok = BertTokenizerFast.from_pretrained(model_dir)
    return model, tok


def batch(vocab):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, vocab, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


@pytest.fixture  # per test, not per module: mutation testing maps a test to the code its own setup runs
def packed_1bit(tiny_model_dir, tmp_path_factory):
    model, tok = load_tiny(tiny_model_dir)
    apply_quantization(model, QuantSpec(wbits=1, abits=8))
    path = str(tmp_path_factory.mktemp("packed") / "m1.xtc")
    report = export_packed(model, tok, path)
    return model, tok, path, report


@pytest.mark.parametrize("spec", [QuantSpec(wbits=1, abits=8), QuantSpec(wbits=2, abits=8),
                                  QuantSpec(wbits=4, abits=8, groups=4),
                                  QuantSpec(wbits=1, abits=8, embedding_bits=32, groups=2)],
                         ids=["w1a8", "w2a8", "w4a8g4", "w1a8-emb32-g2"])
def test_export_reload_gives_identical_logits(spec, tiny_model_dir, tmp_path):
    model, tok = load_tiny(tiny_model_dir)
    apply_quantization(model, spec)
    # training moves the latent weights off their init; the export must follow the latent weights
    with torch.no_grad():
        for _, m in quantized_modules(model):
            m.weight.add_(0.01 * torch.randn_like(m.weight))
    inputs = batch(model.config.vocab_size)
    ref = logits(model, inputs)
    path = tmp_path / "m.xtc"
    export_packed(model, tok, str(path))
    back, tok2 = load_packed(str(path))
    assert type(back) is BertForSequenceClassification and not back.training
    assert torch.equal(logits(back, inputs), ref)
    assert back.config.xtc_quant == spec.to_dict()
    for (name, m), (name2, m2) in zip(quantized_modules(model), quantized_modules(back)):
        assert name == name2 and m2.frozen and not m.frozen
        assert torch.equal(m2.weight, quantize_weight(m.weight, m.wbits, m.groups, m.method))
        assert (m2.wbits, m2.abits, m2.groups) == (m.wbits, m.abits, m.groups)
    # tokenizer travels too
    text = ["the movie was really fun", "a dog sat on the mat"]
    assert tok2(text)["input_ids"] == tok(text)["input_ids"]


def test_artifact_is_small_and_report_is_consistent(packed_1bit):
    model, _, path, rep = packed_1bit
    ms = model_size(model)
    assert rep["file_bytes"] == os.path.getsize(path)
    assert rep["theoretical_bytes"] == ms["quantized_bytes"]
    assert rep["params_by_role"] == ms["params_by_role"]
    assert rep["fp32_bytes"] == ms["fp32_bytes"]
    assert rep["tokenizer_bytes"] > 0
    assert rep["weights_bytes"] < ms["fp32_bytes"] / 3  # tiny model: fp32 pooler/positions dominate
    assert rep["compression_ratio"] == pytest.approx(ms["fp32_bytes"] / rep["weights_bytes"])
    with zipfile.ZipFile(path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        manifest = json.loads(zf.read("manifest.json"))
    assert infos["weights.safetensors"].compress_type == zipfile.ZIP_STORED
    assert infos["config.json"].compress_type == zipfile.ZIP_DEFLATED
    assert infos["weights.safetensors"].file_size == rep["weights_bytes"]
    assert manifest["format"] == "xtc-packed" and manifest["version"] == 1
    assert set(manifest["members"]) == set(infos) - {"manifest.json"}
    assert any(n.startswith("tokenizer/") for n in infos)
    q = [e for e in manifest["tensors"] if e["name"] == "bert.encoder.layer.0.attention.self.query.weight"][0]
    assert (q["bits"], q["packing"], q["groups"], q["scale_dtype"]) == (1, "binary-8", 1, "float32")
    emb = [e for e in manifest["tensors"] if e["name"] == "bert.embeddings.word_embeddings.weight"][0]
    assert emb["groups"] == model.config.vocab_size
    assert size_report(path, teacher_fp32_bytes=10 * ms["fp32_bytes"])["ratio_to_teacher"] == pytest.approx(
        10 * ms["fp32_bytes"] / rep["weights_bytes"])


@pytest.mark.parametrize("wbits", [1, 2, 8])
def test_weights_member_close_to_theoretical_minimum(wbits, tmp_path):
    # wide enough that the quantized matrices, not the safetensors header or fp32 tensors, dominate
    cfg = BertConfig(vocab_size=512, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=512, max_position_embeddings=16, type_vocab_size=1)
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg).eval()
    apply_quantization(model, QuantSpec(wbits=wbits))
    rep = export_packed(model, None, str(tmp_path / "w.xtc"))
    theo = model_size(model)["quantized_bytes"]
    assert rep["theoretical_bytes"] == theo
    assert theo <= rep["weights_bytes"] <= 1.05 * theo
    assert rep["tokenizer_bytes"] == 0
    assert rep["compression_ratio"] > {1: 6, 2: 5, 8: 2.5}[wbits]
    back, tok = load_packed(str(tmp_path / "w.xtc"))
    assert tok is None
    ids = torch.randint(0, 512, (2, 9))
    with torch.no_grad():
        assert torch.equal(back(input_ids=ids).logits, model(input_ids=ids).logits)


def test_size_report_of_a_model_matches_file(packed_1bit):
    model, _, _, rep = packed_1bit
    r = size_report(model)
    assert r["weights_bytes"] == rep["weights_bytes"] and r["theoretical_bytes"] == rep["theoretical_bytes"]


def test_export_is_deterministic(packed_1bit, tmp_path):
    model, tok, path, _ = packed_1bit
    other = tmp_path / "again.xtc"
    export_packed(model, tok, str(other))
    assert other.read_bytes() == open(path, "rb").read()


def test_refuses_to_overwrite_and_leaves_no_temp_files(packed_1bit, tmp_path):
    model, tok, _, _ = packed_1bit
    path = tmp_path / "m.xtc"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
        export_packed(model, tok, str(path))
    assert path.read_bytes() == b"precious"
    export_packed(model, tok, str(path), overwrite=True)
    reloaded = load_packed(str(path))[0]  # the replacement is the model, complete
    assert reloaded.config.xtc_quant == model.config.xtc_quant
    assert set(reloaded.state_dict()) == set(model.state_dict())
    assert sorted(os.listdir(tmp_path)) == ["m.xtc"]


def test_frozen_model_cannot_be_reexported(packed_1bit, tmp_path):
    back, tok = load_packed(packed_1bit[2])
    with pytest.raises(ValueError, match="frozen"):
        export_packed(back, tok, str(tmp_path / "x.xtc"))


def _member_data_offset(path, name):
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        n, m = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    return info.header_offset + 30 + n + m, info.compress_size


def _flip(src, dst, pos):
    data = bytearray(open(src, "rb").read())
    data[pos] ^= 0x5A
    open(dst, "wb").write(bytes(data))


def test_corrupted_weight_byte_raises(packed_1bit, tmp_path):
    path = packed_1bit[2]
    start, size = _member_data_offset(path, "weights.safetensors")
    bad = tmp_path / "bad.xtc"
    _flip(path, bad, start + size // 2)
    with pytest.raises(PackedFormatError, match="bad.xtc.*weights.safetensors"):
        load_packed(str(bad))


@pytest.mark.parametrize("keep", [0.5, 0.99, 0.0])
def test_truncated_file_raises(packed_1bit, tmp_path, keep):
    data = open(packed_1bit[2], "rb").read()
    bad = tmp_path / "trunc.xtc"
    bad.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(PackedFormatError, match="trunc.xtc"):
        load_packed(str(bad))


def test_any_flipped_byte_is_caught_or_harmless(packed_1bit, tmp_path):
    # zip metadata (timestamps, attributes) is not covered by checksums; everything that matters is
    model, _, path, _ = packed_1bit
    inputs = batch(model.config.vocab_size)
    ref = logits(model, inputs)
    size = os.path.getsize(path)
    bad = tmp_path / "flip.xtc"
    caught = 0
    for pos in list(range(0, 64, 3)) + list(range(64, size - 200, max(1, size // 40))) + list(range(size - 200, size, 9)):
        _flip(path, bad, pos)
        try:
            back, _ = load_packed(str(bad))
        except PackedFormatError:
            caught += 1
            continue
        assert torch.equal(logits(back, inputs), ref), f"flipped byte {pos} changed the model silently"
    assert caught > 30


def test_manifest_mismatch_raises(packed_1bit, tmp_path):
    path = packed_1bit[2]
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    manifest = json.loads(members["manifest.json"])
    cases = {
        "version": lambda m: m.update(version=99),
        "sha256": lambda m: m["members"]["config.json"].update(sha256="0" * 64),
        "bytes": lambda m: m["members"]["weights.safetensors"].update(bytes=5),
        "packed data": lambda m: next(e for e in m["tensors"] if e["bits"] == 1)["shape"].__setitem__(0, 64),
        "shape": lambda m: next(e for e in m["tensors"] if e["bits"] == 32)["shape"].append(1),
    }
    for what, edit in cases.items():
        m = json.loads(json.dumps(manifest))
        edit(m)
        bad = tmp_path / f"{what}.xtc"
        with zipfile.ZipFile(bad, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, json.dumps(m) if name == "manifest.json" else data)
        with pytest.raises(PackedFormatError, match=what):
            load_packed(str(bad))
    extra = tmp_path / "extra.xtc"
    with zipfile.ZipFile(extra, "w") as zf:
        for name, data in {**members, "evil.py": b"print(1)"}.items():
            zf.writestr(name, data)
    with pytest.raises(PackedFormatError, match="evil.py"):
        load_packed(str(extra))
    with pytest.raises(FileNotFoundError):
        load_packed(str(tmp_path / "missing.xtc"))


# ---------------------------------------------------------------- pinned by mutation testing (issue 14)


def test_packing_error_messages_and_range_limits():
    with pytest.raises(ValueError, match=r"^pack_binary expects codes in \{-1, \+1\}$"):
        pack_binary(torch.tensor([1, 0, -1]))
    for bad in ([2, 0], [-2, 0], [0, 5]):  # either end out of range alone is refused
        with pytest.raises(ValueError, match=r"^pack_ternary expects codes in \{-1, 0, 1\}$"):
            pack_ternary(torch.tensor(bad))
    with pytest.raises(ValueError, match=r"^pack_uint: bits must be 1\.\.8, got 9$"):
        pack_uint(torch.tensor([0]), 9)
    with pytest.raises(ValueError, match=r"^unpack_uint: bits must be 1\.\.8, got 9$"):
        unpack_uint(torch.zeros(9, dtype=torch.uint8), 8, 9)
    for code in (-3, 2):  # 2-bit codes are -2..1
        with pytest.raises(ValueError, match=r"^pack_uint expects 2-bit codes in \[-2, 1\]$"):
            pack_uint(torch.tensor([code]), 2)
    assert unpack_uint(pack_uint(torch.tensor([-2, 1]), 2), 2, 2).tolist() == [-2, 1]
    with pytest.raises(ValueError, match=r"^unpack_binary: expected 2 packed bytes, got 1$"):
        unpack_binary(torch.zeros(1, dtype=torch.uint8), 9)
    with pytest.raises(ValueError, match=r"^unpack_ternary: expected 2 packed bytes, got 1$"):
        unpack_ternary(torch.zeros(1, dtype=torch.uint8), 6)
    with pytest.raises(ValueError, match=r"^unpack_uint: expected 3 packed bytes, got 1$"):
        unpack_uint(torch.zeros(1, dtype=torch.uint8), 8, 3)
    with pytest.raises(ValueError, match=r"^unpack_ternary: byte value > 242 cannot hold 5 trits \(corrupted data\)$"):
        unpack_ternary(torch.tensor([243], dtype=torch.uint8), 5)


def test_is_packed_reads_the_content_not_the_name(packed_1bit, tmp_path):
    from xtc.pack import is_packed

    path = packed_1bit[2]
    renamed = tmp_path / "student.bin"
    renamed.write_bytes(open(path, "rb").read())
    assert is_packed(path) is True and is_packed(renamed) is True
    (tmp_path / "text.xtc").write_text("not a zip")
    foreign, no_manifest = tmp_path / "foreign.xtc", tmp_path / "plain.zip"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("manifest.json", json.dumps({"format": "something-else"}))
    with zipfile.ZipFile(no_manifest, "w") as zf:
        zf.writestr("a.txt", "x")
    for p in (tmp_path / "text.xtc", foreign, no_manifest, tmp_path / "absent.xtc", tmp_path):
        assert is_packed(p) is False


def _members(path):
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _write_variant(path, members, edit_manifest=None, tensors=None, config=None, extra=None):
    """A copy of a packed file with the manifest, weights or config edited, member checksums kept consistent
    (so that the check under test, not the sha256 check, is what fails)."""
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    members = dict(members)
    if tensors is not None:
        raw = st_load(members["weights.safetensors"])
        tensors(raw)
        members["weights.safetensors"] = st_save(raw)
    if config is not None:
        cfg = json.loads(members["config.json"])
        config(cfg)
        members["config.json"] = json.dumps(cfg).encode()
    members.update(extra or {})
    members = {n: b for n, b in members.items() if b is not None}  # extra {name: None} drops a member
    manifest = json.loads(members.pop("manifest.json"))
    manifest["members"] = {n: {"sha256": __import__("hashlib").sha256(b).hexdigest(), "bytes": len(b)}
                           for n, b in members.items()}
    if edit_manifest is not None:
        edit_manifest(manifest)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        for name, data in members.items():
            zf.writestr(name, data)
    return str(path)


Q = "bert.encoder.layer.0.attention.self.query.weight"
QB = "bert.encoder.layer.0.attention.self.query.bias"


def _entry(m, name):
    return next(e for e in m["tensors"] if e["name"] == name)


def _set_tensor(name, value):
    return lambda raw: raw.__setitem__(name, value)


CORRUPTIONS = [  # (id, manifest edit, weights edit, config edit, extra members, the message after "<path>: ")
    ("entry-not-a-dict", lambda m: m["tensors"].append("x"), None, None, None,
     "tensor entry 'x' is invalid: string indices must be integers, not 'str'"),
    ("entry-without-bits", lambda m: _entry(m, QB).pop("bits"), None, None, None,
     f"tensor entry '{QB}' is invalid: 'bits'"),
    ("fp32-shape", lambda m: _entry(m, QB)["shape"].append(1), None, None, None,
     f"tensor {QB}: expected shape [32, 1] in weights.safetensors, got [32]"),
    ("fp32-absent", None, lambda raw: raw.pop(QB), None, None,
     f"tensor {QB}: expected shape [32] in weights.safetensors, got None"),
    ("packing", lambda m: _entry(m, Q).update(packing="uint-1"), None, None, None,
     f"tensor {Q}: packing 'uint-1' does not fit bits=1 method=xtc"),
    ("scheme", lambda m: _entry(m, Q).update(scheme="uniform"), None, None, None,
     f"tensor {Q}: packing 'binary-8' does not fit bits=1 method=xtc"),
    ("packed-dtype", None, _set_tensor(Q + ".packed", torch.zeros(128, dtype=torch.int8)), None, None,
     f"tensor {Q}: packed data should be uint8 [128], got (torch.int8, [128])"),
    ("packed-length", None, _set_tensor(Q + ".packed", torch.zeros(127, dtype=torch.uint8)), None, None,
     f"tensor {Q}: packed data should be uint8 [128], got (torch.uint8, [127])"),
    ("packed-absent", None, lambda raw: raw.pop(Q + ".packed"), None, None,
     f"tensor {Q}: packed data should be uint8 [128], got None"),
    ("scales-dtype", None, _set_tensor(Q + ".scales", torch.ones(1, dtype=torch.float16)), None, None,
     f"tensor {Q}: scales should be float32 [1], got (torch.float16, [1])"),
    ("scales-shape", None, _set_tensor(Q + ".scales", torch.ones(2)), None, None,
     f"tensor {Q}: scales should be float32 [1], got (torch.float32, [2])"),
    ("scales-absent", None, lambda raw: raw.pop(Q + ".scales"), None, None,
     f"tensor {Q}: scales should be float32 [1], got None"),
    ("groups-divide", lambda m: _entry(m, Q).update(groups=3), _set_tensor(Q + ".scales", torch.ones(3)), None,
     None, f"tensor {Q}: 3 groups do not divide shape [32, 32]"),
    ("groups-zero", lambda m: _entry(m, Q).update(groups=0), _set_tensor(Q + ".scales", torch.ones(0)), None,
     None, f"tensor {Q}: 0 groups do not divide shape [32, 32]"),
    ("extra-tensors", None, lambda raw: raw.update({f"x{i}": torch.zeros(1) for i in range(6)}), None, None,
     "weights.safetensors holds tensors the manifest does not describe: ['x0', 'x1', 'x2', 'x3', 'x4']"),
    ("not-safetensors", None, None, None, {"weights.safetensors": b"garbage"},
     "weights.safetensors is not a valid safetensors file: "),
    ("unknown-class", lambda m: m.update(model_class="NotAModel"), None, None, None,
     "unknown model class 'NotAModel'"),
    ("class-not-a-model", lambda m: m.update(model_class="BertConfig"), None, None, None,
     "unknown model class 'BertConfig'"),
    ("bad-quant-spec", lambda m: m["quant_spec"].update(wbits=3, method="xtc", groups=-1), None, None, None,
     "bad config or quant_spec: "),
    ("spec-vs-tensors", lambda m: m["quant_spec"].update(embedding_bits=32), None, None, None,
     "quantized tensors in the file (25) do not match the quant spec (24): e.g. "
     "['bert.embeddings.word_embeddings.weight']"),
    ("spec-vs-entry", lambda m: m["quant_spec"].update(wbits=2), None, None, None,
     "tensor bert.embeddings.word_embeddings.weight: stored as bits=1 groups=127 method=xtc, the quant spec says "
     "bits=2 groups=127 method=xtc"),
    ("names", lambda m: [_entry(m, n).update(name=n + "2") for n in ("classifier.bias", "classifier.weight", QB)],
     None, None, None, "tensor names do not match BertForSequenceClassification built from config.json: "
     f"['{QB}', '{QB}2', 'classifier.bias', 'classifier.bias2', 'classifier.weight']"),
    ("model-shape", lambda m: _entry(m, "classifier.bias").update(shape=[3]),
     _set_tensor("classifier.bias", torch.zeros(3)), None, None,
     "tensor classifier.bias: shape [3] in file, model expects [2]"),
    ("tokenizer-escape", None, None, None, {"tokenizer/../evil.txt": b"x"},
     "tokenizer member tokenizer/../evil.txt points outside its folder"),
    ("version", lambda m: m.update(version=99), None, None, None,
     "format version 99 is not supported (this reader: 1)"),
    ("no-tensors-field", lambda m: m.pop("tensors"), None, None, None,
     "manifest.json lacks a required field: 'tensors'"),
    ("no-config", None, None, None, {"config.json": None}, "manifest lists no config.json"),
    ("malformed-entry", lambda m: m["members"].update({"config.json": {"bytes": "x", "sha256": "0"}}), None, None,
     None, "manifest entry for config.json is malformed: invalid literal for int() with base 10: 'x'"),
    ("sha256", lambda m: m["members"]["config.json"].update(sha256="0" * 64), None, None, None,
     "member config.json fails its sha256 check (corrupted)"),
    ("spec-32-bit", lambda m: m["quant_spec"].update(wbits=32, embedding_bits=32), None, None, None,
     "quantized tensors in the file (25) do not match the quant spec (0): e.g. ['bert.embeddings.word_embeddings."
     "weight', 'bert.encoder.layer.0.attention.output.dense.weight', 'bert.encoder.layer.0.attention.self.key."
     "weight']"),
]


@pytest.mark.parametrize("case", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_each_corruption_gets_its_own_message(packed_1bit, tmp_path, case):
    _, edit, tensors, config, extra, message = case
    path = _write_variant(tmp_path / f"{case[0]}.xtc", _members(packed_1bit[2]), edit, tensors, config, extra)
    with pytest.raises(PackedFormatError) as e:
        load_packed(path)
    assert str(e.value).startswith(f"{path}: {message}")
    if not message.endswith(": "):
        assert str(e.value) == f"{path}: {message}"


def test_archive_level_errors_name_the_file_and_the_problem(packed_1bit, tmp_path):
    members = _members(packed_1bit[2])
    missing = tmp_path / "missing.xtc"
    with pytest.raises(FileNotFoundError) as e:
        load_packed(str(missing))
    assert str(e.value) == str(missing)
    text = tmp_path / "text.xtc"
    text.write_text("not a zip")
    with pytest.raises(PackedFormatError, match=f"^{text}: not a readable .xtc ZIP archive \\(truncated or "):
        load_packed(str(text))
    short = _write_variant(tmp_path / "short.xtc", members, lambda m: m["members"]["config.json"].update(bytes=5))
    n = len(members["config.json"])
    with pytest.raises(PackedFormatError, match=f"^{short}: member config.json is {n} bytes, manifest says 5$"):
        load_packed(short)
    for name, manifest in (("json", b"{not json"), ("list", b"[1]")):
        p = tmp_path / f"{name}.xtc"
        with zipfile.ZipFile(p, "w") as zf:
            for k, v in members.items():
                zf.writestr(k, manifest if k == "manifest.json" else v)
        want = ("manifest.json is not valid JSON: " if name == "json"
                else "manifest.json does not describe a 'xtc-packed' file")
        with pytest.raises(PackedFormatError, match=f"^{p}: {want}"):
            load_packed(str(p))


def test_export_records_each_tensor_exactly(packed_1bit, tmp_path):
    from safetensors import safe_open

    from xtc import __version__

    _, _, path, _ = packed_1bit
    members = _members(path)
    manifest = json.loads(members["manifest.json"])
    assert members["manifest.json"].startswith(b'{\n "format": "xtc-packed",\n "version": 1,\n')  # indent 1
    assert manifest["created_by"] == f"xtc-bench {__version__}"
    assert _entry(manifest, Q) == {"name": Q, "shape": [32, 32], "dtype": "float32", "role": "query",
                                   "bits": 1, "method": "xtc", "groups": 1, "scheme": "binary",
                                   "packing": "binary-8", "key": Q + ".packed", "scales_key": Q + ".scales",
                                   "scale_dtype": "float32"}
    assert _entry(manifest, QB) == {"name": QB, "shape": [32], "dtype": "float32", "role": "query", "bits": 32,
                                    "method": None, "groups": None, "scheme": "none", "packing": "none",
                                    "key": QB, "scales_key": None, "scale_dtype": None}
    (tmp_path / "w.safetensors").write_bytes(members["weights.safetensors"])  # safe_open reads files only
    with safe_open(str(tmp_path / "w.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}  # what transformers' safetensors readers expect
    with zipfile.ZipFile(path) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}  # same model, same bytes


def test_export_of_bf16_fp32_activation_only_and_uniform_models(tiny_model_dir, tmp_path):
    inputs = batch(127)
    for name, spec, dtype in (("bf16", QuantSpec(wbits=1, abits=8), torch.bfloat16),
                              ("a8", QuantSpec(wbits=32, abits=8), torch.float32),
                              ("uniform2", QuantSpec(wbits=2, abits=8, method="uniform"), torch.float32),
                              ("plain", None, torch.float32)):
        model, tok = load_tiny(tiny_model_dir)
        if spec is not None:
            apply_quantization(model, spec)
        model = model.to(dtype)
        path = str(tmp_path / f"{name}.xtc")
        export_packed(model, None, path)
        manifest = json.loads(_members(path)["manifest.json"])
        assert {e["dtype"] for e in manifest["tensors"]} == {"float32"} or name == "plain" and \
            {e["dtype"] for e in manifest["tensors"]} == {"float32", "int64"}
        back, _ = load_packed(path)
        if name == "uniform2":
            assert _entry(manifest, Q)["packing"] == "uint-2" and _entry(manifest, Q)["scheme"] == "uniform"
            assert torch.equal(logits(back, inputs), logits(model, inputs))
        if name == "a8":
            assert all(e["scheme"] == "none" for e in manifest["tensors"])
            assert torch.equal(logits(back, inputs), logits(model, inputs))
        if name == "plain":
            assert manifest["quant_spec"] == QuantSpec().to_dict()
        if name == "bf16":
            assert {e["scale_dtype"] for e in manifest["tensors"] if e["bits"] < 32} == {"float32"}


def test_export_refusals_name_the_tensor_and_the_fix(packed_1bit, tiny_model_dir, tmp_path):
    back, tok = load_packed(packed_1bit[2])
    first = next(n for n, m in quantized_modules(back) if m.wbits < 32) + ".weight"
    with pytest.raises(ValueError, match=f"^{first} is frozen \\(loaded from a packed file\\); copy that .xtc file "
                                         f"instead of re-exporting it$"):
        export_packed(back, tok, str(tmp_path / "x.xtc"))
    model, _ = load_tiny(tiny_model_dir)
    apply_quantization(model, QuantSpec(wbits=1))
    del model.config.xtc_quant
    with pytest.raises(ValueError, match="^model has quant wrappers but no config.xtc_quant; use apply_quantization$"):
        export_packed(model, None, str(tmp_path / "y.xtc"))
    assert not os.listdir(tmp_path)


def test_size_report_fields_by_hand(packed_1bit, tmp_path, monkeypatch):
    model, _, path, rep = packed_1bit
    total = rep["total_params"]
    assert set(rep) == {"path", "params_by_role", "total_params", "quantized_params", "quant_spec", "fp32_bytes",
                        "theoretical_bytes", "file_bytes", "weights_bytes", "tokenizer_bytes", "config_bytes",
                        "bits_per_weight", "compression_ratio", "compression_ratio_file", "weights_over_theoretical"}
    ms = model_size(model)
    assert rep["path"] == path and total == ms["total_params"] and rep["quantized_params"] == ms["quantized_params"]
    assert rep["quant_spec"] == model.config.xtc_quant
    assert rep["config_bytes"] == len(_members(path)["config.json"])
    assert rep["bits_per_weight"] == pytest.approx(8 * rep["weights_bytes"] / total)
    assert rep["compression_ratio_file"] == pytest.approx(4 * total / rep["file_bytes"])
    assert rep["weights_over_theoretical"] == pytest.approx(rep["weights_bytes"] / rep["theoretical_bytes"])
    monkeypatch.chdir(tmp_path)
    of_model = size_report(model, teacher_fp32_bytes=1000)  # exported to a temporary folder, not the cwd
    assert os.listdir(tmp_path) == []
    assert of_model["ratio_to_teacher"] == pytest.approx(1000 / rep["weights_bytes"])
    assert of_model["teacher_fp32_bytes"] == 1000
    assert of_model["ratio_to_teacher_file"] == pytest.approx(1000 / of_model["file_bytes"])


def test_duplicate_member_names_are_refused(packed_1bit, tmp_path):
    import warnings

    path = _write_variant(tmp_path / "dup.xtc", _members(packed_1bit[2]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate it is asked to write
        with zipfile.ZipFile(path, "a") as zf:
            zf.writestr("config.json", b"{}")
    with pytest.raises(PackedFormatError) as e:
        load_packed(path)
    assert str(e.value) == f"{path}: duplicate member names in the archive"
