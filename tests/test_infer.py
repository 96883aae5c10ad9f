"""xtc.infer: the integer path computes what the fake-quant model computes, from the packed file alone."""
from __future__ import annotations

import csv
import json
import os

import pytest
import torch
from conftest import tiny_config
from transformers import BertForSequenceClassification, BertTokenizerFast

from xtc.cli import main
from xtc.infer import IntLinear, PackedEmbedding, int8_matmul, int_modules, load_int_model, quantize_tokens
from xtc.pack import PackedFormatError, export_packed, load_packed, pack_codes
from xtc.quant import (QuantEmbedding, QuantLinear, QuantSpec, apply_quantization, quantize_activation,
                       quantize_weight_codes)

# (wbits, groups, method): binary, ternary, every uniform width, several scale groups
WEIGHT_CASES = [(1, 1, "xtc"), (1, 4, "xtc"), (2, 1, "xtc"), (2, 8, "xtc"), (3, 1, "uniform"), (4, 2, "xtc"),
                (5, 1, "xtc"), (6, 1, "uniform"), (7, 4, "xtc"), (8, 1, "xtc")]


def _pair(wbits, groups, method, abits=8, per_token=True, n_in=96, n_out=64, seed=0):
    """A fake-quant QuantLinear (frozen weight = dequantized codes, as load_packed makes it) and the IntLinear
    built from the same codes."""
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(n_in, n_out)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n_out, n_in, generator=g) * 0.05)
        lin.bias.copy_(torch.randn(n_out, generator=g))
    codes, scales = quantize_weight_codes(lin.weight, wbits, groups, method)
    fake = QuantLinear.from_module(lin, wbits, abits, groups, method, per_token).eval()
    intl = IntLinear(codes, scales, lin.bias.detach(), wbits, abits, groups, method, per_token)
    return fake, intl, codes


@pytest.mark.parametrize("wbits,groups,method", WEIGHT_CASES)
@pytest.mark.parametrize("per_token", [True, False])
def test_int_linear_matches_fake_quant_linear(wbits, groups, method, per_token):
    fake, intl, codes = _pair(wbits, groups, method, per_token=per_token)
    x = torch.randn(3, 17, 96, generator=torch.Generator().manual_seed(1)) * 4
    x[0, 0] = 0  # an all-zero token: scale falls back to 1, q = 0
    # the int8 activations are exactly the training quantizer's: q * s == fake-quant(x)
    q, s = quantize_tokens(x.reshape(-1, 96), 8, per_token)
    assert q.dtype == torch.int8
    assert torch.equal(q.float() * s, quantize_activation(x, 8, per_token).reshape(-1, 96))
    # integer accumulation is bit-exact against an int64 reference
    acc = intl.int_accumulate(q)
    assert acc.dtype == torch.int32
    assert torch.equal(acc.long(), q.long() @ codes.long().t())
    # evaluation of the fake-quant layer (eval mode, no autograd) is the same integer maths, bit for bit
    with torch.no_grad():
        want, got = fake(x), intl(x)
    assert torch.equal(want, got)
    # its fp32 fake-quant maths (training, or integer_eval off) equal them to fp32 rounding of a 96-term sum
    fake.integer_eval = False
    with torch.no_grad():
        want = fake(x)
    fake.integer_eval = True
    fake.train()  # training: the fp32 fake-quant maths whatever integer_eval says
    assert torch.equal(fake(x).detach(), want)
    w_abs = codes.abs().double() * intl.row_scales.double()[:, None]
    exact = (q.double() * s.double()) @ (codes.double() * intl.row_scales.double()[:, None]).t() + intl.bias.double()
    # standard bound for a K-term fp32 dot product plus bias: (K + 2) eps (sum of |terms| + |bias|), per element
    bound = (96 + 2) * torch.finfo(torch.float32).eps * (
        (q.abs().double() * s.double()) @ w_abs.t() + intl.bias.double().abs())
    assert ((got.reshape(-1, 64).double() - exact).abs() <= bound).all()
    assert ((want.reshape(-1, 64).double() - exact).abs() <= bound).all()
    assert got.shape == want.shape and got.dtype == torch.float32


def test_int8_matmul_fallback_is_exact():
    # the float64 route (other devices, odd CUDA shapes) gives the same int32 result as _int_mm
    g = torch.Generator().manual_seed(0)
    q = torch.randint(-128, 128, (5, 24), generator=g, dtype=torch.int8)
    w = torch.randint(-128, 128, (24, 16), generator=g, dtype=torch.int8)
    ref = torch.matmul(q.double(), w.double()).to(torch.int32)
    assert torch.equal(int8_matmul(q, w), ref)
    assert torch.equal(ref.long(), q.long() @ w.long())


def test_int_linear_refuses_wide_activations():
    codes, scales = quantize_weight_codes(torch.randn(8, 8), 1)
    with pytest.raises(ValueError, match="abits"):
        IntLinear(codes, scales, None, 1, 32, 1)


@pytest.mark.parametrize("bits,method", [(1, "xtc"), (2, "xtc"), (3, "uniform"), (5, "xtc"), (8, "xtc")])
@pytest.mark.parametrize("dim", [40, 32, 13])  # 40: all rows byte-aligned; 13: rows start mid-byte
def test_packed_embedding_rows_equal_dequantized_table(bits, method, dim):
    torch.manual_seed(bits)
    emb = torch.nn.Embedding(50, dim)
    qe = QuantEmbedding.from_module(emb, wbits=bits, method=method).eval()
    codes, scales = quantize_weight_codes(emb.weight, bits, 50, method)
    pe = PackedEmbedding(pack_codes(codes, bits, method), scales, 50, dim, bits, 50, method)
    ids = torch.tensor([[0, 49, 7, 7], [13, 1, 2, 48]])
    with torch.no_grad():
        assert torch.equal(pe(ids), qe(ids))
    assert torch.equal(pe.decode_codes(torch.arange(50)).to(torch.int8), codes)


def _export(tmp_path, spec, name="m.xtc", tokenizer=None, seed=0):
    torch.manual_seed(seed)
    model = BertForSequenceClassification(tiny_config()).eval()
    apply_quantization(model, spec)
    path = str(tmp_path / name)
    export_packed(model, tokenizer, path)
    return path


@pytest.mark.parametrize("spec", [QuantSpec(wbits=1, abits=8), QuantSpec(wbits=2, abits=8, groups=4),
                                  QuantSpec(wbits=4, abits=8, embedding_bits=32),
                                  QuantSpec(wbits=3, abits=8, method="uniform", act_per_token=False),
                                  QuantSpec(wbits=1, abits=8, roles=("ffn_in", "ffn_out"))],
                         ids=["w1a8", "w2a8-groups", "w4a8-fp32-emb", "w3a8-uniform-per-tensor", "w1a8-ffn-only"])
def test_tiny_model_same_predictions_on_both_paths(tmp_path, spec):
    path = _export(tmp_path, spec)
    fake, _ = load_packed(path)
    intm, _ = load_int_model(path)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 120, (16, 24), generator=g)
    mask = torch.ones_like(ids)
    mask[3, 10:] = 0
    mask[7, 2:] = 0
    types = torch.zeros_like(ids)
    types[:, 12:] = 1
    with torch.no_grad():
        a = fake(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        b = intm(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    # the fake-quant model evaluates its quantized layers on integers (the file's codes): identical logits
    assert torch.equal(a, b)
    for m in fake.modules():
        if isinstance(m, QuantLinear):
            m.integer_eval = False  # its fp32 fake-quant maths: equal to fp32 rounding
    with torch.no_grad():
        c = fake(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    assert torch.equal(c.argmax(-1), b.argmax(-1))
    assert (c - b).abs().max() < 1e-4
    n_int = sum(isinstance(m, IntLinear) for _, m in int_modules(intm))
    assert n_int == sum(isinstance(m, QuantLinear) for m in fake.modules())


def test_no_fp32_copy_of_quantized_weights(tmp_path):
    path = _export(tmp_path, QuantSpec(wbits=1, abits=8))
    model, _ = load_int_model(path)
    cfg = model.config
    names = dict(model.state_dict())
    for name, m in int_modules(model):
        tensors = dict(m.named_buffers(recurse=False)) | dict(m.named_parameters(recurse=False))
        if isinstance(m, IntLinear):
            assert tensors["weight_codes_t"].dtype == torch.int8
            assert tensors["weight_codes_t"].shape == (m.in_features, m.out_features)
            floats = {k: t for k, t in tensors.items() if t.is_floating_point()}
            assert set(floats) <= {"row_scales", "bias"}
            assert all(t.dim() == 1 for t in floats.values())  # vectors only, never a [out, in] matrix
        else:
            assert tensors["packed"].dtype == torch.uint8 and tensors["scales"].dim() == 1
            assert tensors["packed"].numel() == (cfg.vocab_size * cfg.hidden_size + 7) // 8 + 1
    # nowhere in the model is there a float tensor shaped like a quantized weight (or its transpose)
    qshapes = {(cfg.hidden_size, cfg.hidden_size), (cfg.intermediate_size, cfg.hidden_size),
               (cfg.hidden_size, cfg.intermediate_size), (cfg.vocab_size, cfg.hidden_size)}
    fp = [k for k, t in names.items() if t.is_floating_point() and tuple(t.shape) in qshapes]
    assert fp == [k for k in fp if k.startswith("bert.pooler.")]  # the pooler stays fp32 in the recipe
    assert not any(isinstance(m, (torch.nn.Linear, torch.nn.Embedding)) and "encoder" in n
                   for n, m in model.named_modules())


def test_corrupt_or_truncated_file_fails_with_packed_format_error(tmp_path):
    path = _export(tmp_path, QuantSpec(wbits=2, abits=8))
    data = open(path, "rb").read()
    with open(tmp_path / "trunc.xtc", "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(PackedFormatError):
        load_int_model(str(tmp_path / "trunc.xtc"))
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF  # inside the stored weights member: fails its sha256
    with open(tmp_path / "flip.xtc", "wb") as f:
        f.write(bytes(flipped))
    with pytest.raises(PackedFormatError):
        load_int_model(str(tmp_path / "flip.xtc"))
    with open(tmp_path / "junk.xtc", "wb") as f:
        f.write(b"not a zip at all")
    with pytest.raises(PackedFormatError):
        load_int_model(str(tmp_path / "junk.xtc"))


def _tokenizer():
    from conftest import _vocab

    return BertTokenizerFast(vocab={w: i for i, w in enumerate(_vocab())}, do_lower_case=True)


def test_cli_predict_and_evaluate_use_the_integer_path(tmp_path, capsys, glue_dir):
    path = _export(tmp_path, QuantSpec(wbits=1, abits=8), tokenizer=_tokenizer())
    out = tmp_path / "preds.csv"
    assert main(["predict", "--model", path, "--task", "sst2", "--glue-dir", glue_dir, "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["path"] == "integer" and summary["examples"] == 32 and "accuracy" in summary["metrics"]
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 32 and set(rows[0]) == {"index", "prediction", "label", "logit_0", "logit_1"}
    # the fake-quant path predicts the same labels
    out_fq = tmp_path / "preds_fq.csv"
    assert main(["predict", "--model", path, "--task", "sst2", "--glue-dir", glue_dir, "--out", str(out_fq),
                 "--fake-quant"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == "fake-quant"
    assert [r["prediction"] for r in rows] == [r["prediction"] for r in csv.DictReader(open(out_fq))]
    # an existing --out is not overwritten silently
    before = out.read_bytes()
    assert main(["predict", "--model", path, "--task", "sst2", "--glue-dir", glue_dir, "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before
    # a TSV of inputs, with generic column names and no labels
    tsv = tmp_path / "in.tsv"
    tsv.write_text("text_a\nthe movie was great\nboring plot\n")
    assert main(["predict", "--model", path, "--task", "sst2", "--input", str(tsv)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "index,prediction,logit_0,logit_1" and len(lines) == 3
    tsv.write_text("wrong\nx\n")
    assert main(["predict", "--model", path, "--task", "sst2", "--input", str(tsv)]) == 2
    assert "text column" in capsys.readouterr().err
    # evaluate: integer path by default, --fake-quant to compare; same metrics here
    res = {}
    for flag in ([], ["--fake-quant"]):
        assert main(["evaluate", "--model", path, "--task", "sst2", "--glue-dir", glue_dir, *flag]) == 0
        res[tuple(flag)] = json.loads(capsys.readouterr().out)
    assert res[()]["path"] == "integer" and res[("--fake-quant",)]["path"] == "fake-quant"
    assert res[()]["metrics"] == res[("--fake-quant",)]["metrics"]


def test_cli_predict_rejects_corrupt_file(tmp_path, capsys, glue_dir):
    path = _export(tmp_path, QuantSpec(wbits=1, abits=8), tokenizer=_tokenizer())
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-100])
    out = tmp_path / "p.csv"
    assert main(["predict", "--model", path, "--task", "sst2", "--glue-dir", glue_dir, "--out", str(out)]) == 2
    assert path in capsys.readouterr().err and not os.path.exists(out)
