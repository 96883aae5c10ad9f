"""xtc.quant: quantizers against hand-computed values, STE, wrappers on a tiny BERT."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from transformers import BertForSequenceClassification

from conftest import tiny_config
from xtc.quant import (ROLES, QuantEmbedding, QuantLinear, QuantSpec, activation_scale, apply_quantization,
                       dequantize_codes, model_size, quantize_activation, quantize_weight,
                       quantize_weight_codes, quantized_modules, role_of)

T = torch.tensor


def ids_batch(vocab: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (3, 11), generator=g)


# ---------------------------------------------------------------- weight quantizers


def test_binary_hand_computed_per_group_and_zero_maps_to_plus_a():
    w = T([[0.5, -1.5, 0.0, 2.0],     # mean|w| = 4/4 = 1.0
           [-0.25, 0.25, -0.75, 0.75]])  # mean|w| = 2/4 = 0.5
    q = quantize_weight(w, 1, groups=2)
    assert torch.equal(q, T([[1.0, -1.0, 1.0, 1.0], [-0.5, 0.5, -0.5, 0.5]]))
    # per tensor: a = 6/8 = 0.75
    assert torch.equal(quantize_weight(w, 1), 0.75 * T([[1.0, -1, 1, 1], [-1, 1, -1, 1]]))
    # -0.0 is >= 0 too: no value may be 0
    assert torch.equal(quantize_weight(T([[-0.0, -2.0]]), 1), T([[1.0, -1.0]]))


def test_ternary_threshold_and_scale_hand_computed():
    w = T([[1.0, -2.0, 0.5, 0.0, -0.25, 3.0, -1.0, 0.25]])  # mean|w| = 1 -> d = 0.7
    codes, scales = quantize_weight_codes(w, 2)
    assert codes.tolist() == [[1, -1, 0, 0, 0, 1, -1, 0]]
    assert scales.tolist() == [1.75]  # mean of |1|,|-2|,|3|,|-1|
    q = quantize_weight(w, 2)
    assert torch.equal(q, 1.75 * codes.float())
    assert set(q.unique().tolist()) == {-1.75, 0.0, 1.75}
    # 0.71 > d = 0.7 * mean(0.71, 1.0, 0, 0.29) = 0.35: kept; 0.29 is dropped
    c2, s2 = quantize_weight_codes(T([[0.71, -1.0, 0.0, 0.29]]), 2)
    assert c2.tolist() == [[1, -1, 0, 0]] and s2.item() == pytest.approx((0.71 + 1.0) / 2)


def test_ternary_all_zero_group_gives_zero_scale():
    codes, scales = quantize_weight_codes(torch.zeros(2, 3), 2, groups=2)
    assert codes.abs().sum() == 0 and scales.tolist() == [0.0, 0.0]
    assert torch.equal(quantize_weight(torch.zeros(2, 3), 2), torch.zeros(2, 3))


@pytest.mark.parametrize("bits,expected_q", [
    (2, [-2, -1, 0, 0, 1, 1]),          # s = 0.5:   W/s = -2 -0.6 0 0.4 1.2 2; 2 clamps to 1
    (4, [-8, -2, 0, 2, 5, 7]),          # s = 1/8:   8 clamps to 7
    (8, [-128, -38, 0, 26, 77, 127]),   # s = 1/128: 128 clamps to 127
])
def test_uniform_levels_and_clamp(bits, expected_q):
    w = T([[-1.0, -0.3, 0.0, 0.2, 0.6, 1.0]])
    codes, scales = quantize_weight_codes(w, bits, method="uniform")
    s = 2.0 / 2**bits
    assert scales.tolist() == [s]
    assert codes.tolist() == [expected_q]
    assert torch.equal(quantize_weight(w, bits, method="uniform"), T([expected_q]) * s)


def test_xtc_method_uses_uniform_from_3_bits_and_ternary_at_2():
    torch.manual_seed(0)
    w = torch.randn(8, 6)
    w[0, :4] = torch.tensor([-3.0, -1.2, 0.0, 1.2])  # max|w| = 3 -> scale 1.5: levels -2, -1, 0, 1 all present
    assert torch.equal(quantize_weight(w, 3), quantize_weight(w, 3, method="uniform"))
    assert quantize_weight(w, 2).unique().numel() <= 3
    assert quantize_weight(w, 2, method="uniform").unique().numel() > 3  # 4 levels per tensor


def test_bits32_is_identity_and_bad_args_raise():
    w = torch.randn(4, 4)
    assert quantize_weight(w, 32) is w
    for bits, method in [(0, "xtc"), (9, "xtc"), (16, "xtc"), (1, "uniform"), (4, "nf4")]:
        with pytest.raises(ValueError):
            quantize_weight(w, bits, method=method)
    with pytest.raises(ValueError, match="divide"):
        quantize_weight(w, 1, groups=3)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_weight_ste_gradient_is_identity(bits):
    w = torch.randn(6, 5, requires_grad=True)
    g = torch.randn(6, 5)
    quantize_weight(w, bits, groups=3).backward(g)
    assert torch.equal(w.grad, g)  # no clipping mask, no scaling


@pytest.mark.parametrize("bits,groups,method", [(1, 1, "xtc"), (1, 4, "xtc"), (2, 2, "xtc"), (2, 4, "uniform"),
                                                (3, 1, "xtc"), (4, 8, "xtc"), (8, 2, "uniform")])
def test_codes_roundtrip_is_bit_exact_and_scale_shapes(bits, groups, method):
    torch.manual_seed(bits * 10 + groups)
    w = torch.randn(8, 13) * 0.05
    codes, scales = quantize_weight_codes(w, bits, groups, method)
    assert codes.dtype == torch.int8 and codes.shape == w.shape
    assert scales.dtype == torch.float32 and scales.shape == (groups,)
    assert torch.equal(dequantize_codes(codes, scales, bits, groups, method), quantize_weight(w, bits, groups, method))
    # groups are contiguous blocks of rows: quantizing each block alone gives the same result
    blocks = [quantize_weight(b, bits, 1, method) for b in w.chunk(groups, dim=0)]
    assert torch.equal(torch.cat(blocks), quantize_weight(w, bits, groups, method))


@pytest.mark.parametrize("bits,groups,method", [(1, 1, "xtc"), (1, 4, "xtc"), (2, 1, "xtc"), (2, 4, "xtc"),
                                                (4, 2, "uniform")])
def test_fake_quant_in_the_matmul_dtype_is_the_cast_of_the_fp32_values(bits, groups, method):
    """Under bf16 autocast QuantLinear asks for bf16 weights directly: the same numbers autocast would have
    made from the fp32 fake-quant weights, with an fp32 straight-through gradient for the latent weight."""
    torch.manual_seed(bits + groups)
    w = (torch.randn(8, 12) * 0.05).requires_grad_(True)
    w.data[0, :3] = 0.0  # ties at the binary threshold and a group that ternary may empty
    fp32 = quantize_weight(w, bits, groups, method)
    bf16 = quantize_weight(w, bits, groups, method, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and torch.equal(bf16, fp32.detach().to(torch.bfloat16))
    g = torch.randn(8, 12, dtype=torch.bfloat16)
    bf16.backward(g)
    assert w.grad.dtype == torch.float32 and torch.equal(w.grad, g.float())


def test_quant_linear_under_autocast_matches_autocast_of_the_fp32_path():
    torch.manual_seed(0)
    layer = QuantLinear.from_module(nn.Linear(16, 8), wbits=1, abits=8)
    x = torch.randn(3, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(x)
        want = torch.nn.functional.linear(quantize_activation(x, 8), quantize_weight(layer.weight, 1), layer.bias)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)
    xb = torch.randn(4, 16).to(torch.bfloat16)  # bf16 activations quantize to the values of their fp32 copy
    assert torch.equal(quantize_activation(xb, 8), quantize_activation(xb.float(), 8).to(torch.bfloat16))


def test_embedding_style_per_row_scales():
    w = torch.randn(10, 4)
    codes, scales = quantize_weight_codes(w, 1, groups=10)
    assert scales.shape == (10,)
    assert torch.allclose(scales, w.abs().mean(dim=1))


# ---------------------------------------------------------------- activations


def test_activation_per_token_error_bound_and_scale_shape():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16) * torch.linspace(0.01, 10, 5)[None, :, None]  # very different row ranges
    q = quantize_activation(x, 8)
    s = activation_scale(x, 8, per_token=True)
    assert s.shape == (2, 5, 1)
    assert torch.allclose(s, 2 * x.abs().amax(-1, keepdim=True) / 256)
    levels = q / s
    assert torch.allclose(levels, levels.round(), atol=1e-4) and levels.min() >= -128 and levels.max() <= 127
    err = (x - q).abs()
    # the positive maximum sits at +128 s and is clamped to 127 s: error s there, s/2 elsewhere
    clipped = x / s > 127.5
    assert torch.all(err[~clipped] <= s.expand_as(x)[~clipped] / 2 * (1 + 1e-5))
    assert torch.all(err[clipped] <= s.expand_as(x)[clipped] * (1 + 1e-5))
    # per token: the small row keeps a fine grid even though another row is 1000x larger
    assert err[:, 0].max() < 1e-3 and err[:, 4].max() > 1e-3


def test_activation_per_tensor_scale_and_ste():
    x = torch.randn(3, 7, requires_grad=True)
    s = activation_scale(x, 4, per_token=False)
    assert s.shape == ()
    q = quantize_activation(x, 4, per_token=False)
    assert (q / s - (q / s).round()).abs().max() < 1e-4
    assert q.detach().unique().numel() <= 16
    g = torch.randn(3, 7)
    q.backward(g)
    assert torch.equal(x.grad, g)
    assert quantize_activation(x, 32) is x


# ---------------------------------------------------------------- roles


def test_role_of_bert_names():
    p = "bert.encoder.layer.3."
    assert role_of(p + "attention.self.query") == "query"
    assert role_of(p + "attention.self.key") == "key"
    assert role_of(p + "attention.self.value") == "value"
    assert role_of(p + "attention.output.dense") == "attn_out"
    assert role_of(p + "intermediate.dense") == "ffn_in"
    assert role_of(p + "output.dense") == "ffn_out"
    assert role_of("bert.embeddings.word_embeddings") == "word_embeddings"
    for name in ["bert.pooler.dense", "classifier", "bert.embeddings.position_embeddings",
                 "bert.embeddings.token_type_embeddings", p + "output.LayerNorm", p + "attention.output.LayerNorm",
                 "bert.embeddings.LayerNorm", p + "attention.self"]:
        assert role_of(name) is None, name


# ---------------------------------------------------------------- wrappers on a tiny BERT


def test_apply_quantization_replaces_exactly_the_roles(tiny_model):
    keys_before = list(tiny_model.state_dict())
    params_before = {n: p for n, p in tiny_model.named_parameters()}
    pooler, classifier = tiny_model.bert.pooler.dense, tiny_model.classifier
    pos = tiny_model.bert.embeddings.position_embeddings
    layers = tiny_model.config.num_hidden_layers

    out = apply_quantization(tiny_model, QuantSpec(wbits=1, abits=8))
    assert {r: len(v) for r, v in out.items()} == {**{r: layers for r in ROLES[:-1]}, "word_embeddings": 1}
    assert len(list(quantized_modules(tiny_model))) == 6 * layers + 1
    assert type(tiny_model.bert.pooler.dense) is nn.Linear and tiny_model.bert.pooler.dense is pooler
    assert type(tiny_model.classifier) is nn.Linear and tiny_model.classifier is classifier
    assert type(tiny_model.bert.embeddings.position_embeddings) is nn.Embedding
    assert tiny_model.bert.embeddings.position_embeddings is pos
    assert type(tiny_model.bert.embeddings.token_type_embeddings) is nn.Embedding
    assert all(type(m) is nn.LayerNorm for n, m in tiny_model.named_modules() if n.endswith("LayerNorm"))
    emb = tiny_model.bert.embeddings.word_embeddings
    assert isinstance(emb, QuantEmbedding) and emb.groups == emb.num_embeddings
    q = tiny_model.bert.encoder.layer[0].attention.self.query
    assert isinstance(q, QuantLinear) and (q.wbits, q.abits, q.frozen) == (1, 8, False)
    # same names, same Parameter objects (optimizers built before the swap still work)
    assert list(tiny_model.state_dict()) == keys_before
    assert all(p is params_before[n] for n, p in tiny_model.named_parameters())
    assert tiny_model.config.xtc_quant["wbits"] == 1
    with pytest.raises(ValueError, match="already quantized"):
        apply_quantization(tiny_model, QuantSpec(wbits=1))


def test_quantized_forward_uses_quantized_weights(tiny_model):
    ids = ids_batch(tiny_model.config.vocab_size)
    with torch.no_grad():
        ref = tiny_model(input_ids=ids).logits
    apply_quantization(tiny_model, QuantSpec(wbits=1, abits=8))
    with torch.no_grad():
        q = tiny_model(input_ids=ids).logits
    assert not torch.allclose(q, ref)
    # a quantized layer's output equals F.linear with the hand-quantized weight and input
    layer = tiny_model.bert.encoder.layer[1].intermediate.dense
    x = torch.randn(2, 4, layer.in_features)
    expected = torch.nn.functional.linear(quantize_activation(x, 8), quantize_weight(layer.weight, 1), layer.bias)
    assert torch.equal(layer(x), expected)
    assert set(quantize_weight(layer.weight, 1).detach().abs().unique().tolist()) == {
        layer.weight.detach().abs().mean().item()}


def test_embedding_bits_32_keeps_embeddings_and_roles_subset(tiny_model):
    out = apply_quantization(tiny_model, QuantSpec(wbits=1, embedding_bits=32, roles=("query", "ffn_in",
                                                                                      "word_embeddings")))
    assert out["word_embeddings"] == [] and len(out["query"]) == len(out["ffn_in"]) == 4
    assert set(out) == {"query", "ffn_in", "word_embeddings"}
    assert type(tiny_model.bert.embeddings.word_embeddings) is nn.Embedding
    assert type(tiny_model.bert.encoder.layer[0].attention.self.key) is nn.Linear


def test_groups_must_divide_rows_and_failure_leaves_model_untouched(tiny_model):
    with pytest.raises(ValueError, match="does not divide"):
        apply_quantization(tiny_model, QuantSpec(wbits=1, groups=3))  # hidden 32 % 3 != 0
    assert not list(quantized_modules(tiny_model))
    out = apply_quantization(tiny_model, QuantSpec(wbits=2, groups=8))
    assert len(out["ffn_out"]) == 4


def test_frozen_wrapper_uses_stored_weight():
    lin = QuantLinear.from_module(nn.Linear(6, 4), wbits=1, abits=32)
    x = torch.randn(3, 6)
    ref = lin(x)
    with torch.no_grad():
        lin.weight.copy_(quantize_weight(lin.weight, 1))
    lin.frozen = True
    assert torch.equal(lin(x), ref)
    with torch.no_grad():
        lin.weight.mul_(1.5)  # no longer a binary-with-mean scale: frozen must not re-quantize
    assert torch.allclose(lin(x) - lin.bias, (ref - lin.bias) * 1.5, atol=1e-6)


def test_quant_training_step_updates_latent_weights(tiny_model):
    apply_quantization(tiny_model, QuantSpec(wbits=1, abits=8))
    tiny_model.train()
    w = tiny_model.bert.encoder.layer[0].attention.self.query.weight
    before = w.detach().clone()
    out = tiny_model(input_ids=ids_batch(tiny_model.config.vocab_size), labels=torch.tensor([0, 1, 1]))
    out.loss.backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    torch.optim.SGD(tiny_model.parameters(), lr=0.1).step()
    assert not torch.equal(w.detach(), before)


def test_save_pretrained_roundtrip_identical_logits(tiny_model, tmp_path):
    apply_quantization(tiny_model, QuantSpec(wbits=2, abits=8, groups=4))
    ids = ids_batch(tiny_model.config.vocab_size)
    with torch.no_grad():
        ref = tiny_model(input_ids=ids).logits
    tiny_model.save_pretrained(tmp_path)
    back = BertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert back.config.xtc_quant == tiny_model.config.xtc_quant
    apply_quantization(back)  # spec read from config.xtc_quant
    with torch.no_grad():
        assert torch.equal(back(input_ids=ids).logits, ref)


def test_model_size_hand_computed(tiny_model):
    cfg = tiny_model.config
    total = sum(p.numel() for p in tiny_model.parameters())
    assert model_size(tiny_model)["quantized_bytes"] == 4 * total
    apply_quantization(tiny_model, QuantSpec(wbits=1, abits=8))
    r = model_size(tiny_model)
    h, i, L, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    linear = L * (4 * h * h + 2 * h * i)
    assert r["params_by_role"]["query"] == L * h * h and r["params_by_role"]["ffn_in"] == L * h * i
    assert r["params_by_role"]["word_embeddings"] == V * h
    assert r["total_params"] == total and r["fp32_bytes"] == 4 * total
    fp = total - linear - V * h
    assert r["params_by_role"]["full_precision"] == fp
    expected = linear // 8 + 6 * L * 4 + V * h // 8 + V * 4 + 4 * fp  # codes + fp32 scales + fp params
    assert r["quantized_bytes"] == expected
    assert r["bits_per_weight"] == pytest.approx(8 * expected / total)


def test_model_size_ternary_counts_five_trits_per_byte():
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(layers=1))
    apply_quantization(model, QuantSpec(wbits=2, roles=("query",)))
    r = model_size(model)
    h = model.config.hidden_size
    fp = r["total_params"] - h * h
    assert r["quantized_bytes"] == -(-h * h // 5) + 4 + 4 * fp


def test_embedding_quantizes_looked_up_rows_like_the_whole_table():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 16)
    ids = torch.tensor([[3, 7, 7, 0], [49, 1, 2, 3]])
    for bits in (1, 2, 4):
        q = QuantEmbedding.from_module(emb, wbits=bits)
        want = torch.nn.functional.embedding(ids, quantize_weight(emb.weight, bits, groups=50))
        assert torch.equal(q(ids), want)


# ----------------------------------------------------------------------------------------- mutation survivors


def test_dequantize_codes_defaults_checks_and_message():
    from xtc.quant import dequantize_codes

    codes = torch.tensor([[1, -1], [0, 1]], dtype=torch.int8)
    scales = torch.tensor([0.5, 2.0])
    out = dequantize_codes(codes, scales, 2, 2)  # method defaults to xtc (ternary codes)
    assert torch.equal(out, torch.tensor([[0.5, -0.5], [0.0, 2.0]]))
    with pytest.raises(ValueError, match="1-bit needs method='xtc'"):
        dequantize_codes(codes, scales, 1, 2, method="uniform")  # the method is checked, not ignored
    with pytest.raises(ValueError, match="expected 2 scales, got 1"):
        dequantize_codes(codes, scales[:1], 2, 2)


def test_weight_gradient_of_a_bf16_fake_quant_weight_is_fp32():
    w = torch.randn(4, 6, requires_grad=True)
    wq = quantize_weight(w, 1, dtype=torch.bfloat16)
    assert wq.dtype == torch.bfloat16
    (wq.float() * torch.arange(24.0).reshape(4, 6)).sum().backward()
    assert w.grad.dtype == torch.float32  # straight through, cast back to the latent weight's dtype
    assert torch.equal(w.grad, torch.arange(24.0).reshape(4, 6).bfloat16().float())


def test_activation_scale_defaults_zero_rows_and_bf16_inputs():
    x = torch.tensor([[1.0, -3.0, 2.0], [0.0, 0.0, 0.0]])
    s = activation_scale(x)  # defaults: 8 bits, one scale per token
    assert s.shape == (2, 1) and s.dtype == torch.float32
    assert s[0, 0].item() == 2 * 3.0 / 256 and s[1, 0].item() == 1.0  # an all-zero row gets scale 1, not 0
    xb = torch.tensor([[1.0, -3.015625, 2.0]], dtype=torch.bfloat16)
    sb = activation_scale(xb)
    assert sb.dtype == torch.float32 and sb.item() == 2 * 3.015625 / 256  # an fp32 scale, also for bf16 inputs


def test_activation_fake_quant_defaults_and_bf16_maths():
    from xtc.quant import quantize_activation

    x = torch.tensor([[0.3, -1.7, 1.1, 0.05]])
    assert torch.equal(quantize_activation(x), quantize_activation(x, 8, True))  # 8-bit, per token by default
    with pytest.raises(ValueError, match="unsupported activation bit-width 9; use 2..8 or 32"):
        quantize_activation(x, 9)
    # bf16 input: divided and rounded in fp32 (as the integer path does), the result cast back to bf16
    xb = torch.tensor([[0.3, -1.7, 1.1, 0.05, 0.77]], dtype=torch.bfloat16)
    s = activation_scale(xb)
    want = (xb.float() / s).round().clamp(-128, 127) * s
    got = quantize_activation(xb)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want.to(torch.bfloat16))


def test_min_weight_bytes_and_size_summary_by_hand():
    from xtc.quant import min_weight_bytes, size_summary

    assert min_weight_bytes(1000, 2) == 200  # xtc by default: ternary, 5 trits per byte
    assert min_weight_bytes(1000, 2, "uniform") == 250  # uniform 2-bit codes: 4 per byte
    assert min_weight_bytes(1000, 4, "uniform") == 500 and min_weight_bytes(9, 1) == 2
    s = size_summary([(1000, None, 1, "xtc", 2), (600, "attention", 2, "uniform", 1), (50, None, 32, None, None)])
    assert s["params_by_role"] == {"quantized": 1000, "attention": 600, "full_precision": 50}
    assert s["total_params"] == 1650 and s["quantized_params"] == 1600 and s["fp32_bytes"] == 6600
    assert s["quantized_bytes"] == (125 + 8) + (150 + 4) + 200
    assert s["bits_per_weight"] == 8 * 487 / 1650
    one = size_summary([(1, None, 1, "xtc", 1)])  # a single 1-bit weight: 1 byte of codes + its fp32 scale
    assert one["bits_per_weight"] == 40.0


def test_wrappers_built_directly_equal_wrapped_modules():
    """QuantLinear(...) and QuantEmbedding(...) as constructors (public API, like nn.Linear's) give the same
    module as wrapping a plain one with from_module."""
    torch.manual_seed(0)
    direct = QuantLinear(8, 6, bias=False, wbits=2, abits=8, groups=3, method="uniform", act_per_token=False,
                         dtype=torch.float64)
    plain = nn.Linear(8, 6, bias=False, dtype=torch.float64)
    plain.weight.data.copy_(direct.weight.data)
    wrapped = QuantLinear.from_module(plain, wbits=2, abits=8, groups=3, method="uniform", act_per_token=False)
    attrs = ("in_features", "out_features", "wbits", "abits", "groups", "method", "act_per_token", "frozen",
             "weight_codes_t", "row_scales")
    assert {a: getattr(direct, a) for a in attrs} == {a: getattr(wrapped, a) for a in attrs}
    assert direct.bias is None and direct.weight.dtype == torch.float64 and direct.wbits == 2
    assert (direct.abits, direct.groups, direct.method, direct.act_per_token) == (8, 3, "uniform", False)
    x = torch.randn(2, 8, dtype=torch.float64)
    torch.testing.assert_close(direct.train()(x), wrapped.train()(x), rtol=0, atol=0)
    defaults = QuantLinear(4, 2)
    assert (defaults.wbits, defaults.abits, defaults.groups, defaults.method, defaults.act_per_token) == \
        (32, 32, 1, "xtc", True) and defaults.bias is not None and defaults.weight.dtype == torch.float32
    assert not defaults.frozen and defaults.weight_codes_t is None and defaults.row_scales is None

    emb = QuantEmbedding(10, 4, padding_idx=0, wbits=1, method="xtc", dtype=torch.float64)
    plain_e = nn.Embedding(10, 4, padding_idx=0, dtype=torch.float64)
    plain_e.weight.data.copy_(emb.weight.data)
    wrapped_e = QuantEmbedding.from_module(plain_e, wbits=1)
    e_attrs = ("num_embeddings", "embedding_dim", "padding_idx", "wbits", "abits", "groups", "method",
               "act_per_token", "frozen")
    assert {a: getattr(emb, a) for a in e_attrs} == {a: getattr(wrapped_e, a) for a in e_attrs}
    assert (emb.wbits, emb.abits, emb.groups, emb.padding_idx, emb.weight.dtype) == (1, 32, 10, 0, torch.float64)
    ids = torch.tensor([[0, 3, 9]])
    torch.testing.assert_close(emb(ids), wrapped_e(ids), rtol=0, atol=0)
    d = QuantEmbedding(5, 3)
    assert (d.wbits, d.method, d.padding_idx, d.weight.dtype) == (32, "xtc", None, torch.float32)
    assert QuantLinear(4, 2, device="meta").weight.device.type == "meta"
    assert QuantEmbedding(5, 3, device="meta").weight.device.type == "meta"


# ---------------------------------------------------------------- pinned by mutation testing (issue 14), part 2


def test_int8_routes_by_device_and_shape():
    from xtc.quant import int8_route

    assert int8_route("cpu", 1, 3, 5) == "int_mm"  # oneDNN takes any shape
    assert int8_route("cuda", 17, 16, 24) == "int_mm"
    assert int8_route("cuda", 16, 16, 24) == "int_mm_padded"  # CUDA's kernel needs more than 16 rows
    assert int8_route("cuda", 1, 16, 24) == "int_mm_padded"
    for k, n in ((12, 24), (16, 20), (9, 9)):  # K or N not a multiple of 8
        assert int8_route("cuda", 64, k, n) == "float64"
    assert int8_route("mps", 64, 16, 16) == "float64" and int8_route("meta", 64, 16, 16) == "float64"


@pytest.mark.parametrize("route", ["int_mm", "int_mm_padded", "float64"])
def test_every_int8_route_gives_the_exact_product(route, monkeypatch):
    import xtc.quant as Q

    g = torch.Generator().manual_seed(0)
    q = torch.randint(-128, 128, (5, 16), generator=g, dtype=torch.int8)
    w_t = torch.randint(-128, 128, (16, 24), generator=g, dtype=torch.int8)
    want = (q.to(torch.int64) @ w_t.to(torch.int64)).to(torch.int32)
    calls = []
    real = torch._int_mm
    monkeypatch.setattr(torch, "_int_mm", lambda a, b: calls.append(tuple(a.shape)) or real(a, b))
    monkeypatch.setattr(Q, "int8_route", lambda *a: route)  # each route, run on the CPU
    got = Q.int8_matmul(q, w_t)
    assert got.dtype == torch.int32 and torch.equal(got, want)
    assert calls == {"int_mm": [(5, 16)], "int_mm_padded": [(32, 16)], "float64": []}[route]


def test_the_cpu_uses_the_int8_kernel(monkeypatch):
    from xtc.quant import int8_matmul

    calls = []
    real = torch._int_mm
    monkeypatch.setattr(torch, "_int_mm", lambda a, b: calls.append(1) or real(a, b))
    int8_matmul(torch.ones(3, 4, dtype=torch.int8), torch.ones(4, 2, dtype=torch.int8))
    assert calls == [1]


def test_ternary_threshold_boundary_and_a_single_kept_weight():
    w = torch.tensor([[7.0, -7.0, 13.0, -13.0]])  # mean |w| 10: threshold exactly 7, and |w| = 7 is not kept
    codes, scales = quantize_weight_codes(w, 2)
    assert codes.tolist() == [[0, 0, 1, -1]] and scales.tolist() == [13.0]
    assert quantize_weight(w, 2).tolist() == [[0.0, 0.0, 13.0, -13.0]]
    one = torch.tensor([[10.0, 0.0, 0.0, 0.0]])  # one weight kept: its scale is its own magnitude
    assert quantize_weight(one, 2).tolist() == [[10.0, 0.0, 0.0, 0.0]]
    assert quantize_weight_codes(one, 2)[1].tolist() == [10.0]


def test_bf16_weights_are_quantized_in_fp32():
    g = torch.Generator().manual_seed(1)
    w = (torch.randn(8, 512, generator=g) * 0.05).to(torch.bfloat16)
    for bits in (1, 2):
        want = quantize_weight(w.float(), bits, groups=2).to(torch.bfloat16)
        assert torch.equal(quantize_weight(w, bits, groups=2), want)


def test_quantize_tokens_scales_are_fp32_per_token_and_one_for_zero_rows():
    from xtc.quant import quantize_tokens

    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 8, generator=g)
    x[1, 2] = 0.0
    q, s = quantize_tokens(x, 8, True)
    assert s.shape == (2, 3, 1) and s.dtype == torch.float32 and q.dtype == torch.int8
    torch.testing.assert_close(s[0, 0, 0], x[0, 0].abs().max() / 128)
    assert s[1, 2, 0] == 1.0 and (q[1, 2] == 0).all()  # an all-zero token: scale 1, not 0
    qt, st = quantize_tokens(x.reshape(-1, 8), 8, False)
    assert st.shape == (1, 1) and st.item() == pytest.approx(x.abs().max().item() / 128)
    xb = x.to(torch.bfloat16)
    qb, sb = quantize_tokens(xb, 8, True)
    q32, s32 = quantize_tokens(xb.float(), 8, True)
    assert sb.dtype == torch.float32 and torch.equal(qb, q32) and torch.equal(sb, s32)


def test_set_codes_stores_int8_whatever_it_is_given():
    m = QuantLinear(4, 2, wbits=1, abits=8)
    m.set_codes(torch.tensor([[1, -1, 1, 1], [-1, -1, 1, -1]], dtype=torch.int64), torch.tensor([0.5]))
    assert m.weight_codes_t.dtype == torch.int8 and m.weight_codes_t.shape == (4, 2)
    assert m.row_scales.tolist() == [0.5, 0.5]


def test_code_and_group_errors_and_zero_weights():
    with pytest.raises(ValueError, match=r"^groups must be >= 1, got 0$"):
        quantize_weight_codes(torch.ones(4, 2), 2, groups=0)
    with pytest.raises(ValueError, match=r"^32-bit weights have no codes$"):
        quantize_weight_codes(torch.ones(4, 2), 32)
    zero = torch.tensor([[0.0, 2.0, -2.0, 0.0]])
    assert quantize_weight_codes(zero, 1)[0].tolist() == [[1, 1, -1, 1]]  # 0 is on the + side, in both paths
    assert quantize_weight(zero, 1).tolist() == [[1.0, 1.0, -1.0, 1.0]]
    codes, scales = quantize_weight_codes(torch.zeros(2, 3), 4, groups=2, method="uniform")
    assert codes.abs().sum() == 0 and scales.tolist() == [1.0, 1.0]  # an all-zero group: scale 1, not 0


def test_codes_of_bf16_weights_and_row_scales_are_fp32():
    from xtc.quant import row_scales_of

    g = torch.Generator().manual_seed(3)
    w = (torch.randn(4, 256, generator=g) * 0.05).to(torch.bfloat16)
    for bits, method in ((1, "xtc"), (2, "xtc"), (4, "uniform")):
        c16, s16 = quantize_weight_codes(w, bits, 2, method)
        c32, s32 = quantize_weight_codes(w.float(), bits, 2, method)
        assert torch.equal(c16, c32) and s16.dtype == torch.float32 and torch.equal(s16, s32)
    rows = row_scales_of(torch.tensor([0.5, 2.0], dtype=torch.float64), 2, 4)
    assert rows.dtype == torch.float32 and rows.tolist() == [0.5, 0.5, 2.0, 2.0]


def test_integer_eval_returns_the_input_dtype_and_autocast_quantizes_straight_to_bf16(monkeypatch):
    import xtc.quant as Q

    torch.manual_seed(0)
    lin = QuantLinear.from_module(nn.Linear(16, 8), wbits=1, abits=8).eval()
    with torch.no_grad():
        assert lin.uses_integer_eval() and lin(torch.randn(3, 16).to(torch.bfloat16)).dtype == torch.bfloat16
    seen = []
    real = Q.quantize_weight
    monkeypatch.setattr(Q, "quantize_weight",
                        lambda w, b, g, m, dtype=None: seen.append(dtype) or real(w, b, g, m, dtype))
    lin.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lin(torch.randn(3, 16))
    lin(torch.randn(3, 16))
    assert seen == [torch.bfloat16, None]  # the weight is written in the matmul's dtype under autocast


def test_embedding_wrapper_behaves_like_nn_embedding_and_has_fixed_attributes():
    torch.manual_seed(0)
    for kw in ({"padding_idx": 0, "scale_grad_by_freq": True}, {"max_norm": 0.5, "norm_type": 1.0},
               {"sparse": True}):
        plain = nn.Embedding(10, 4, **kw)
        wrapped = QuantEmbedding.from_module(nn.Embedding(10, 4, **kw), wbits=32, method="xtc")
        wrapped.weight.data.copy_(plain.weight.data)
        ids = torch.tensor([[0, 3, 3, 9]])
        out_p, out_w = plain(ids), wrapped(ids)
        torch.testing.assert_close(out_w, out_p, rtol=0, atol=0)
        out_p.sum().backward()
        out_w.sum().backward()
        gp, gw = plain.weight.grad, wrapped.weight.grad
        assert gw.is_sparse == gp.is_sparse
        torch.testing.assert_close(gw.to_dense(), gp.to_dense(), rtol=0, atol=0)
    e = QuantEmbedding.from_module(nn.Embedding(5, 3), wbits=1, method="xtc")
    assert (e.abits, e.act_per_token, e.groups) == (32, True, 5) and e.frozen is False
    d = QuantEmbedding.from_module(nn.Embedding(5, 3))
    assert (d.wbits, d.method) == (32, "xtc")
    lin = QuantLinear.from_module(nn.Linear(4, 2))
    assert (lin.wbits, lin.abits, lin.groups, lin.method, lin.act_per_token) == (32, 32, 1, "xtc", True)


def test_scheme_of_defaults_and_messages():
    from xtc.quant import scheme_of

    assert (scheme_of(1), scheme_of(2), scheme_of(4), scheme_of(32)) == ("binary", "ternary", "uniform", "none")
    with pytest.raises(ValueError, match=r"^unknown quantization method 'foo'; use one of \('xtc', 'uniform'\)$"):
        scheme_of(1, "foo")
    with pytest.raises(ValueError, match=r"^unsupported weight bit-width 9 for method 'xtc'; use 1\.\.8 or 32$"):
        scheme_of(9, "xtc")
    with pytest.raises(ValueError, match=r"^unsupported weight bit-width 1 for method 'uniform'; use 2\.\.8 or 32 "
                                         r"\(1-bit needs method='xtc'\)$"):
        scheme_of(1, "uniform")


def _bert():
    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_config())


def test_apply_quantization_refusals_name_the_module_and_the_fix():
    plain = nn.Sequential(nn.Linear(2, 2))
    for model in (plain, _bert()):
        with pytest.raises(ValueError, match=r"^no QuantSpec given and model.config has no xtc_quant$"):
            apply_quantization(model)
    done = _bert()
    apply_quantization(done, QuantSpec(wbits=1))
    first = next(n for n, _ in quantized_modules(done))
    with pytest.raises(ValueError, match=rf"^model is already quantized \(\d+ wrappers, e.g. '{first}'\); "):
        apply_quantization(done, QuantSpec(wbits=1))
    odd = _bert()
    odd.bert.embeddings.word_embeddings = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"^bert.embeddings.word_embeddings has role word_embeddings but is a Linear, "
                                         r"not nn.Embedding$"):
        apply_quantization(odd, QuantSpec(wbits=1))
    odd = _bert()
    odd.bert.encoder.layer[0].attention.self.query = nn.Embedding(2, 2)
    with pytest.raises(ValueError, match=r"^bert.encoder.layer.0.attention.self.query has role query but is a "
                                         r"Embedding, not nn.Linear$"):
        apply_quantization(odd, QuantSpec(wbits=1))


def test_apply_quantization_wraps_exactly_what_the_spec_quantizes():
    model = _bert()
    out = apply_quantization(model, QuantSpec())  # W32A32: nothing to quantize
    assert list(quantized_modules(model)) == [] and all(v == [] for v in out.values())
    model = _bert()
    out = apply_quantization(model, QuantSpec(wbits=32, abits=8, groups=3))  # groups only matter for weights
    assert out["query"] == [f"bert.encoder.layer.{i}.attention.self.query" for i in range(4)]
    assert out["word_embeddings"] == []  # the embedding follows the weights' width: 32, not wrapped
    model = _bert()
    apply_quantization(model, QuantSpec(wbits=4, abits=8, method="uniform", act_per_token=False))
    mods = dict(quantized_modules(model))
    assert mods["bert.embeddings.word_embeddings"].method == "uniform"
    lin = mods["bert.encoder.layer.0.attention.self.query"]
    assert (lin.method, lin.act_per_token, lin.wbits, lin.abits) == ("uniform", False, 4, 8)


def test_int8_matmul_asks_the_route_for_its_own_shapes(monkeypatch):
    import xtc.quant as Q

    asked = []
    monkeypatch.setattr(Q, "int8_route", lambda *a: asked.append(a) or "float64")
    Q.int8_matmul(torch.ones(5, 16, dtype=torch.int8), torch.ones(16, 24, dtype=torch.int8))
    assert asked == [("cpu", 5, 16, 24)]


# ---------------------------------------------------------------- pins (issue 14's mutation check)


def test_ternary_threshold_is_0_7_of_mean_abs_weight():
    """Bug: threshold 0.75 x mean|W| instead of 0.7. |W| = 0, 0, 0.58, 1, 2.5: mean 0.816, so d = 0.5712 with 0.7
    (0.58 is kept) but 0.612 with 0.75 (it would be zeroed). a = mean of kept |W| = (0.58 + 1 + 2.5) / 3."""
    w = torch.tensor([[0.0, 0.0, -0.58, 1.0, 2.5]])
    codes, scales = quantize_weight_codes(w, 2, 1, "xtc")
    assert codes.tolist() == [[0, 0, -1, 1, 1]]
    assert scales.tolist() == pytest.approx([(0.58 + 1.0 + 2.5) / 3])
    assert quantize_weight(w, 2).tolist()[0] == pytest.approx([0.0, 0.0, -1.36, 1.36, 1.36])
