"""Tests for xtc.distill: layer reduction, score capture, layer maps and KD losses (tiny CPU models)."""
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import BertForSequenceClassification

from conftest import tiny_config
from xtc.distill import (KDConfig, LayerMap, ModelInternals, evenly_spaced_layers, forward_with_internals, kd_loss,
                         label_loss, layer_maps, parse_layer_list, reduce_layers, soft_cross_entropy)


def make_batch(seed=0, b=3, t=9, labels=2):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, 6:] = 0  # padded rows exercise the additive mask
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    batch["labels"] = torch.randint(0, labels, (b,), generator=g) if labels > 1 else torch.rand(b, generator=g)
    return batch


def make_model(layers=4, num_labels=2, seed=0):
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_config(num_labels, layers)).eval()


# ---------------------------------------------------------------- layer lists


@pytest.mark.parametrize(
    "n,k,want",
    [(12, 6, [1, 3, 5, 7, 9, 11]), (12, 5, [2, 4, 6, 8, 10]), (6, 3, [1, 3, 5]), (12, 12, list(range(12))), (4, 4, [0, 1, 2, 3])],
)
def test_evenly_spaced_layers(n, k, want):
    assert evenly_spaced_layers(n, k) == want


@pytest.mark.parametrize("k", [0, -1, 13])
def test_evenly_spaced_layers_errors(k):
    with pytest.raises(ValueError, match="12-layer teacher"):
        evenly_spaced_layers(12, k)


def test_parse_layer_list_ok():
    assert parse_layer_list("1,3,5", 6) == [1, 3, 5]
    assert parse_layer_list(" 0, 2 ,4 ", 6) == [0, 2, 4]
    assert parse_layer_list([1, 3, 5], 6) == [1, 3, 5]


@pytest.mark.parametrize(
    "arg,match",
    [
        ("", "empty"),
        ([], "empty"),
        ("1,x,5", "not an integer"),
        ("1,2.5", "not an integer"),
        ([1, 2.0], "not an integer"),
        ("1,,3", "not an integer"),
        ("1,6", "out of range"),
        ("-1,2", "out of range"),
        ("1,1,3", "repeated"),
        ("3,1,5", "not strictly increasing"),
    ],
)
def test_parse_layer_list_errors(arg, match):
    with pytest.raises(ValueError, match=match) as e:
        parse_layer_list(arg, 6)
    assert "strictly increasing 0-indexed teacher layers in 0..5" in str(e.value)  # the fix is named


# ---------------------------------------------------------------- layer maps


def test_layer_maps_no_reduction():
    m = layer_maps(6, 12, None)
    assert m.attention == [(i, 2 * i + 1) for i in range(6)]
    assert m.hidden == [(i, 2 * i) for i in range(7)]
    assert m.hidden[-1] == (6, 12)
    same = layer_maps(4, 4, None)
    assert same.attention == [(i, i) for i in range(4)] and same.hidden == [(i, i) for i in range(5)]
    with pytest.raises(ValueError, match="multiple"):
        layer_maps(5, 12, None)


def test_layer_maps_with_reduction():
    m = layer_maps(6, 12, [1, 3, 5, 7, 9, 11])
    assert m.attention == list(enumerate([1, 3, 5, 7, 9, 11]))
    assert m.hidden == list(enumerate([0, 2, 4, 6, 8, 10, 12]))
    m = layer_maps(3, 6, [1, 3, 5])
    assert m.attention == [(0, 1), (1, 3), (2, 5)]
    assert m.hidden == list(enumerate([0, 2, 4, 6]))
    m = layer_maps(3, 6, [0, 2, 4])
    assert m.attention == [(0, 0), (1, 2), (2, 4)]
    assert m.hidden == list(enumerate([0, 1, 3, 5]))  # L[0]-1 = -1 clamped to 0
    with pytest.raises(ValueError, match="entries"):
        layer_maps(2, 6, [1, 3, 5])


# ---------------------------------------------------------------- reduce_layers


def test_reduce_layers_shapes_and_copies():
    teacher = make_model(4)
    student = reduce_layers(teacher, [1, 3])
    assert len(student.bert.encoder.layer) == 2 and len(teacher.bert.encoder.layer) == 4
    assert student.config.num_hidden_layers == 2 and student.config.xtc_teacher_layers == [1, 3]
    assert teacher.config.num_hidden_layers == 4  # teacher untouched
    assert student.bert.config is student.config  # submodules see the new depth
    for i, t in enumerate([1, 3]):
        s_sd = student.bert.encoder.layer[i].state_dict()
        t_sd = teacher.bert.encoder.layer[t].state_dict()
        assert all(torch.equal(s_sd[k], t_sd[k]) for k in t_sd)
        assert student.bert.encoder.layer[i].attention.self.layer_idx == i
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert torch.equal(student.bert.pooler.dense.weight, teacher.bert.pooler.dense.weight)
    # a real copy: training the student does not move the teacher
    student.bert.encoder.layer[0].attention.self.query.weight.data.add_(1.0)
    assert not torch.equal(student.bert.encoder.layer[0].attention.self.query.weight,
                           teacher.bert.encoder.layer[1].attention.self.query.weight)
    b = make_batch()
    out = forward_with_internals(student, b, attentions=True, hidden=True)
    assert out.logits.shape == (3, 2) and len(out.hidden_states) == 3 and len(out.attention_scores) == 2


def test_reduce_layers_full_list_is_identity():
    teacher = make_model(4)
    student = reduce_layers(teacher, "0,1,2,3")
    b = make_batch()
    with torch.no_grad():
        t = teacher(**{k: v for k, v in b.items() if k != "labels"}).logits
        s = student(**{k: v for k, v in b.items() if k != "labels"}).logits
    assert torch.equal(s, t)


# ---------------------------------------------------------------- score capture


def test_captured_scores_match_eager_attentions():
    model = make_model(4)
    b = make_batch()
    inputs = {k: v for k, v in b.items() if k != "labels"}
    with torch.no_grad():
        cap = forward_with_internals(model, b, attentions=True, hidden=True)
        plain = forward_with_internals(model, b, attentions=False, hidden=False)
        model.set_attn_implementation("eager")
        eager = model(**inputs, output_attentions=True)
        model.set_attn_implementation("sdpa")
    assert model.config._attn_implementation == "sdpa"  # restored after capture
    assert plain.attention_scores is None and plain.hidden_states is None
    assert len(cap.attention_scores) == 4 and len(cap.hidden_states) == 5
    for s, a in zip(cap.attention_scores, eager.attentions):
        assert s.shape == (3, 4, 9, 9)
        torch.testing.assert_close(F.softmax(s, -1), a, rtol=0, atol=1e-6)
        # pre-softmax, not probabilities: real scores are not confined to [0,1] rows summing to 1
        assert not torch.allclose(s.sum(-1), torch.ones_like(s.sum(-1)))
    # padded keys carry the additive mask; real keys do not
    s0 = cap.attention_scores[0]
    assert (s0[1, :, :, 6:] < -1e30).all() and (s0[1, :, :, :6].abs() < 1e3).all()
    assert torch.equal(cap.logits, eager.logits)  # capture does not change the computation
    torch.testing.assert_close(plain.logits, cap.logits, rtol=0, atol=1e-5)  # sdpa path agrees
    # embedding output comes first
    torch.testing.assert_close(cap.hidden_states[0], model.bert.embeddings(input_ids=b["input_ids"]))


# ---------------------------------------------------------------- losses


def _internals(model, b):
    return forward_with_internals(model, b, attentions=True, hidden=True)


@pytest.mark.parametrize("reduce", [False, True])
def test_kd_loss_zero_when_student_is_teacher(reduce):
    teacher = make_model(4)
    student = reduce_layers(teacher, [0, 1, 2, 3]) if reduce else teacher
    lm = layer_maps(4, 4, student.config.xtc_teacher_layers if reduce else None)
    b = make_batch()
    with torch.no_grad():
        t = _internals(teacher, b)
    s = _internals(student, b)
    loss, logs = kd_loss(s, t, lm, KDConfig(), regression=False, attention_mask=b["attention_mask"])
    assert logs["hidden"] == 0.0 and logs["attention"] == 0.0
    # the logit term is soft CE minus the teacher's entropy (KL): 0 here, and its gradient vanishes
    assert abs(logs["logit"]) < 1e-6 and abs(loss.item()) < 1e-6
    loss.backward()
    assert max(p.grad.abs().max().item() for p in student.parameters() if p.grad is not None) < 1e-6
    # the unmasked (TinyBERT threshold) path is exactly 0 too
    _, logs2 = kd_loss(s, t, lm, KDConfig(), regression=False, terms=("hidden", "attention"))
    assert logs2 == {"hidden": 0.0, "attention": 0.0}


def test_kd_loss_regression_zero_and_mse():
    teacher = make_model(2, num_labels=1)
    b = make_batch(labels=1)
    with torch.no_grad():
        t = _internals(teacher, b)
    s = _internals(teacher, b)
    lm = layer_maps(2, 2, None)
    _, logs = kd_loss(s, t, lm, KDConfig(), regression=True, attention_mask=b["attention_mask"])
    assert logs == {"logit": 0.0, "hidden": 0.0, "attention": 0.0}
    s.logits = s.logits + 0.5
    loss, logs = kd_loss(s, t, lm, KDConfig(), regression=True, terms=("logit",))
    assert logs["logit"] == pytest.approx(0.25) and loss.item() == pytest.approx(0.25)
    lab = label_loss(t.logits, b["labels"], regression=True)
    assert lab.item() == pytest.approx(F.mse_loss(t.logits.view(-1), b["labels"]).item())


def test_only_requested_terms():
    teacher, student = make_model(4), make_model(2, seed=1)
    b = make_batch()
    t = forward_with_internals(teacher, b, attentions=False, hidden=False)
    s = forward_with_internals(student, b, attentions=False, hidden=False)
    lm = layer_maps(2, 4, None)
    # logit-only (two-stage KD, stage 2) works without any internals captured
    loss, logs = kd_loss(s, t, lm, KDConfig(), regression=False, terms=("logit",))
    assert set(logs) == {"logit"} and loss.item() == pytest.approx(logs["logit"])
    entropy = soft_cross_entropy(t.logits, t.logits).item()
    assert logs["logit"] == pytest.approx(soft_cross_entropy(s.logits, t.logits).item() - entropy)
    with pytest.raises(ValueError, match="hidden=True"):
        kd_loss(s, t, lm, KDConfig(), regression=False, terms=("hidden",))
    with pytest.raises(ValueError, match="unknown"):
        kd_loss(s, t, lm, KDConfig(), regression=False, terms=("logits",))
    # stage 1: hidden + attention only, weights applied
    t = _internals(teacher, b)
    s = _internals(student, b)
    cfg = KDConfig(hidden_weight=2.0, attention_weight=0.5)
    loss, logs = kd_loss(s, t, lm, cfg, regression=False, terms=("hidden", "attention"), attention_mask=b["attention_mask"])
    assert set(logs) == {"hidden", "attention"} and logs["hidden"] > 0 and logs["attention"] > 0
    assert loss.item() == pytest.approx(2.0 * logs["hidden"] + 0.5 * logs["attention"], rel=1e-5)


def test_masked_losses_ignore_padding():
    teacher, student = make_model(4), make_model(2, seed=1)
    b = make_batch()
    lm = layer_maps(2, 4, None)
    t, s = _internals(teacher, b), _internals(student, b)
    _, base = kd_loss(s, t, lm, KDConfig(), False, ("hidden", "attention"), b["attention_mask"])
    # perturb only padded positions of the student: the masked losses must not move
    pad = (b["attention_mask"] == 0)
    hs = tuple(h + 100.0 * pad[..., None] for h in s.hidden_states)
    sc = tuple(a + 100.0 * pad[:, None, :, None] for a in s.attention_scores)  # padded query rows
    s2 = type(s)(s.logits, hs, sc)
    _, pert = kd_loss(s2, t, lm, KDConfig(), False, ("hidden", "attention"), b["attention_mask"])
    assert pert["hidden"] == pytest.approx(base["hidden"]) and pert["attention"] == pytest.approx(base["attention"])
    assert torch.isfinite(torch.tensor(list(base.values()))).all()


def test_soft_cross_entropy_and_label_loss():
    s, t = torch.tensor([[1.0, 2.0, 0.5]]), torch.tensor([[0.0, 3.0, -1.0]])
    want = -(F.softmax(t, -1) * F.log_softmax(s, -1)).sum()
    assert soft_cross_entropy(s, t).item() == pytest.approx(want.item())
    want_t2 = -(F.softmax(t / 2, -1) * F.log_softmax(s / 2, -1)).sum()
    assert soft_cross_entropy(s, t, 2.0).item() == pytest.approx(want_t2.item())
    assert label_loss(s, torch.tensor([1]), False).item() == pytest.approx(F.cross_entropy(s, torch.tensor([1])).item())


def test_kd_training_reduces_loss():
    teacher = make_model(4)
    torch.manual_seed(1)
    # a random 2-layer student (not a copy) so there is something to learn
    student = BertForSequenceClassification(tiny_config(2, 2)).train()
    lm = layer_maps(2, 4, None)
    b = make_batch(b=4, t=10)
    with torch.no_grad():
        t = _internals(teacher, b)
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss, _ = kd_loss(_internals(student, b), t, lm, KDConfig(), False, attention_mask=b["attention_mask"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ---------------------------------------------------------------- pinned by mutation testing (issue 14)


def test_a_one_layer_student_and_a_first_kept_layer_past_one():
    assert evenly_spaced_layers(4, 1) == [2]
    one = layer_maps(1, 4, None)  # depth 1 divides any teacher
    assert one.attention == [(0, 3)] and one.hidden == [(0, 0), (1, 4)]
    m = layer_maps(2, 6, [2, 4])  # the first student hidden state is matched to the teacher's L[0]-1 = 1
    assert m.hidden == [(0, 1), (1, 3), (2, 5)]


def test_scores_attention_function_by_hand():
    from xtc.distill import _scores_attention_forward

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 4, 5, generator=g) for _ in range(3))  # (B, heads, T, d)
    mask = torch.zeros(2, 1, 4, 4)
    mask[1, ..., 3] = torch.finfo(torch.float32).min
    module = torch.nn.Module()
    want_scores = q @ k.transpose(2, 3) * 0.25 + mask
    want_out = (F.softmax(want_scores, -1) @ v).transpose(1, 2)
    for training in (True, False):  # dropout 0 in training is no dropout at all
        module.train(training)
        out, scores = _scores_attention_forward(module, q, k, v, mask, scaling=0.25, dropout=0.0)
        torch.testing.assert_close(scores, want_scores)
        torch.testing.assert_close(out, want_out)
    out, scores = _scores_attention_forward(module, q, k, v, None, scaling=0.25, dropout=0.0)
    torch.testing.assert_close(scores, q @ k.transpose(2, 3) * 0.25)


def test_forward_with_internals_restores_the_attention_implementation_and_uses_sdpa_without_scores():
    model = make_model(2)
    model.set_attn_implementation("eager")
    seen = []
    model.register_forward_pre_hook(lambda m, a: seen.append(m.config._attn_implementation))
    b = make_batch()
    forward_with_internals(model, b, attentions=True, hidden=False)
    assert model.config._attn_implementation == "eager"
    forward_with_internals(model, b, attentions=False, hidden=True)
    assert model.config._attn_implementation == "eager"
    assert seen == ["xtc_scores", "sdpa"]  # scores need the eager function; otherwise the fused kernel


def test_soft_cross_entropy_of_a_batch_by_hand():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 2.0]])
    t = torch.tensor([[0.0, 3.0, -1.0], [1.0, 1.0, 0.0]])
    for T in (1.0, 2.0):
        rows = [-(F.softmax(t[i] / T, 0) * F.log_softmax(s[i] / T, 0)).sum() for i in range(2)]
        assert soft_cross_entropy(s, t, T).item() == pytest.approx(((rows[0] + rows[1]) / 2).item(), rel=1e-6)


def test_masked_hidden_and_attention_mse_by_hand():
    from xtc.distill import _attention_mse, _hidden_mse

    s = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])  # (B=1, T=3, d=2); token 3 is padding
    t = torch.zeros(1, 3, 2)
    mask = torch.tensor([[1, 1, 0]])
    assert _hidden_mse(s, t, mask).item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    one = torch.tensor([[1, 0, 0]])  # one real token of width 1: divided by exactly 1
    assert _hidden_mse(s[..., :1] * 3, t[..., :1], one).item() == pytest.approx(9.0)
    assert _hidden_mse(s, t, torch.zeros(1, 3, dtype=torch.long)).item() == 0.0  # nothing real: 0, not NaN
    sc = torch.arange(9.0).view(1, 1, 3, 3)  # (B, heads, T, T)
    assert _attention_mse(sc, torch.zeros_like(sc), mask).item() == pytest.approx((0 + 1 + 9 + 16) / 4)
    assert _attention_mse(sc + 2, torch.zeros_like(sc), one).item() == pytest.approx(4.0)
    # unmasked (TinyBERT): scores at or below -100 count as masked and become 0 in both
    s2 = torch.tensor([[[[-100.0, 1.0], [2.0, -100.5]]]])
    assert _attention_mse(s2, torch.zeros_like(s2), None).item() == pytest.approx((1 + 4) / 4)
    assert _attention_mse(torch.zeros_like(s2), s2, None).item() == pytest.approx((1 + 4) / 4)


def test_kd_loss_temperature_errors_and_missing_internals():
    teacher, student = make_model(4), make_model(2, seed=1)
    b = make_batch()
    t, s = _internals(teacher, b), _internals(student, b)
    lm = layer_maps(2, 4, None)
    _, logs = kd_loss(s, t, lm, KDConfig(temperature=2.0), False, ("logit",))
    want = soft_cross_entropy(s.logits, t.logits, 2.0) - soft_cross_entropy(t.logits, t.logits, 2.0)
    assert logs["logit"] == pytest.approx(want.item(), rel=1e-6)
    with pytest.raises(ValueError, match=r"unknown or no KD terms \['bogus'\]; choose from"):
        kd_loss(s, t, lm, KDConfig(), False, ("logit", "bogus"))
    with pytest.raises(ValueError, match=r"unknown or no KD terms \[\]; choose from"):
        kd_loss(s, t, lm, KDConfig(), False, ())
    only_teacher = type(s)(s.logits)  # a student forward without internals
    with pytest.raises(ValueError, match=r"^the hidden term needs forward_with_internals\(\.\.\., hidden=True\) for both"):
        kd_loss(only_teacher, t, lm, KDConfig(), False, ("hidden",))
    with pytest.raises(ValueError, match=r"^the attention term needs forward_with_internals\(\.\.\., attentions=True\) "
                                         r"for both models$"):
        kd_loss(only_teacher, t, lm, KDConfig(), False, ("attention",))


def test_label_losses_of_a_regression_model():
    from xtc.distill import label_objective

    model = make_model(2, num_labels=1)
    b = make_batch(labels=1)
    logits = model(**{k: v for k, v in b.items() if k != "labels"}).logits
    want = F.mse_loss(logits.view(-1), b["labels"]).item()
    loss, logs = label_objective(model, b)
    assert loss.item() == pytest.approx(want, rel=1e-5) and logs == {"label": pytest.approx(want, rel=1e-5)}
    # float64 labels (from user code) are cast, not refused
    double = label_loss(logits, b["labels"].double(), True)
    assert double.dtype == torch.float32 and double.item() == pytest.approx(want, rel=1e-5)


def test_kd_objective_reads_the_cache_when_the_batch_has_indices_and_the_live_teacher_otherwise():
    from xtc.distill import make_kd_loss

    teacher, student = make_model(2, num_labels=1), make_model(2, num_labels=1, seed=1)
    b = make_batch(labels=1)
    live_t = forward_with_internals(teacher, b, attentions=False, hidden=True)
    calls = []

    class SpyCache:
        def lookup(self, index, width, device, need_hidden=True, need_attention=True):
            calls.append((index.tolist(), width, device, need_hidden, need_attention))
            return live_t

    lm = layer_maps(2, 2, None)
    kd = make_kd_loss(teacher, True, KDConfig(), lm, SpyCache())
    s = forward_with_internals(student, b, attentions=False, hidden=True)
    want = F.mse_loss(s.logits, live_t.logits).item()  # regression: the logit term is an MSE
    loss, logs = kd(("logit", "hidden"))(student, {**b, "index": torch.tensor([4, 5, 6])})
    assert calls == [([4, 5, 6], 9, torch.device("cpu"), True, False)]
    assert logs["logit"] == pytest.approx(want, rel=1e-5)
    kd(("logit",))(student, {**b, "index": torch.tensor([4, 5, 6])})
    assert calls[-1][3:] == (False, False)  # a logits-only stage gathers nothing else
    calls.clear()
    _, live_logs = kd(("logit", "hidden"))(student, b)  # no indices (e.g. an evaluation batch): the live teacher
    assert calls == [] and live_logs == pytest.approx(logs, rel=1e-5)


# ---------------------------------------------------------------- pins (issue 14's mutation check)


def _hand_internals(hidden, scores):
    return ModelInternals(logits=torch.zeros(1, 2), hidden_states=hidden, attention_scores=scores)


def test_masked_hidden_and_attention_kd_losses_are_mse_not_l1():
    """Bug: L1 (or unmasked) distances in the intermediate KD terms. Hand-computed: differences of 2 on real
    tokens give MSE 4 (L1 would give 2); the padded position differs by 100 and must not count."""
    mask = torch.tensor([[1, 1, 0]])
    s_h, t_h = torch.zeros(1, 3, 4), torch.zeros(1, 3, 4)
    s_h[0, :2] = 2.0
    s_h[0, 2] = 100.0  # padding
    s_a, t_a = torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3)
    s_a[0, 0, :2, :2] = torch.tensor([[3.0, -1.0], [1.0, 1.0]])  # squares 9, 1, 1, 1 -> mean 3 (L1: 1.5)
    s_a[0, 0, 2, :] = 50.0
    s_a[0, 0, :, 2] = 50.0
    lm = LayerMap(attention=[(0, 0)], hidden=[(0, 0)])
    _, terms = kd_loss(_hand_internals([s_h], [s_a]), _hand_internals([t_h], [t_a]), lm, KDConfig(), False,
                       ("hidden", "attention"), attention_mask=mask)
    assert terms["hidden"] == pytest.approx(4.0) and terms["attention"] == pytest.approx(3.0)


def test_temperature_changes_the_logit_loss():
    """And the temperature reaches the loss: soft targets at T=2 give a different (hand-checked) KL."""
    s, t = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    lm = LayerMap([], [])

    def kl(T):
        p, q = torch.softmax(t / T, -1), torch.log_softmax(s / T, -1)
        return float((p * (p.log() - q)).sum())

    for T in (1.0, 2.0):
        _, terms = kd_loss(ModelInternals(s), ModelInternals(t), lm, KDConfig(temperature=T), False, ("logit",))
        assert terms["logit"] == pytest.approx(kl(T), rel=1e-6)
    assert not math.isclose(kl(1.0), kl(2.0), rel_tol=0.05)
