"""Pins of behaviours that a plausible one-line bug changed without any test noticing (issue 14's mutation check).
Each test names the bug it catches. (RNG restore on resume: tests/test_robustness.py; the one-stage vs two-stage
non-inferiority boundary lives in xtc/study/claims.py and is pinned with that module.)"""
import math
import re

import pytest
import torch
import torch.nn.functional as F

import xtc.train as train_mod
from xtc.cli import main
from xtc.data import Encoded
from xtc.distill import KDConfig, LayerMap, ModelInternals, kd_loss
from xtc.quant import quantize_weight, quantize_weight_codes
from xtc.tasks import get_task
from xtc.train import Stage, TrainConfig, train


def _data(n: int = 16) -> Encoded:
    g = torch.Generator().manual_seed(0)
    ids = [[2] + torch.randint(5, 40, (3 + i % 4,), generator=g).tolist() + [3] for i in range(n)]
    return Encoded(ids, [[0] * len(x) for x in ids], [i % 2 for i in range(n)])


def _objective(scale: float = 1.0):
    def loss_fn(model, batch):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"])
        loss = scale * F.cross_entropy(out.logits, batch["labels"])
        return loss, {}
    return loss_fn


def _train(model, tmp_path, cfg, loss_fn=None, epochs=None):
    data = _data()
    stage = Stage("s", cfg.epochs if epochs is None else epochs, 1.0, loss_fn or _objective())
    return train(model, [stage], data, {"dev": _data(8)}, get_task("sst2"), cfg, str(tmp_path / "run"), {}, "cpu",
                 quiet=True)


@pytest.fixture
def step_log(monkeypatch):
    """Every optimizer step: its learning rate and the gradient norm it applies (after clipping)."""
    log = []

    def pre_step(opt, args, kwargs):
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        log.append({"lr": opt.param_groups[0]["lr"], "grad_norm": float(torch.norm(torch.stack(
            [gr.norm() for gr in grads])))})

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(pre_step)
    yield log
    handle.remove()


def test_best_evaluation_is_kept_not_the_last(tiny_model, tmp_path, monkeypatch):
    """Bug: keeping the last evaluation (or the last of equal ones) instead of the first best one."""
    scores = iter([0.50, 0.90, 0.90, 0.60])
    snapshots = []

    def fake_evaluate(model, task, eval_sets, batch_size, device):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"accuracy": next(scores)}

    monkeypatch.setattr(train_mod, "evaluate", fake_evaluate)
    cfg = TrainConfig(epochs=1, lr=1e-3, batch_size=4, eval_every=1, warmup_epochs=0, seed=1)
    res = _train(tiny_model, tmp_path, cfg)
    assert [h["metrics"]["accuracy"] for h in res["history"]] == [0.5, 0.9, 0.9, 0.6]
    assert res["metrics"] == {"accuracy": 0.9} and res["best_step"] == 2
    kept = tiny_model.state_dict()
    assert all(torch.equal(kept[k], snapshots[1][k]) for k in kept)  # the weights of step 2 are loaded
    assert not all(torch.equal(kept[k], snapshots[3][k]) for k in kept)


@pytest.mark.parametrize("task, metrics, score", [
    ("mrpc", {"accuracy": 0.60, "f1": 0.80}, 0.70),
    ("qqp", {"accuracy": 0.90, "f1": 0.50}, 0.70),
    ("stsb", {"pearson": 0.90, "spearman": 0.70}, 0.80),
    ("mnli", {"accuracy": 0.80, "accuracy_mm": 0.60}, 0.70),
    ("cola", {"mcc": 0.30, "accuracy": 0.90}, 0.30),  # CoLA is scored by MCC alone
])
def test_task_score_averages_all_of_its_metrics(task, metrics, score):
    """Bug: a task score that takes only the first (or one) of its GLUE metrics."""
    from xtc.study.aggregate import task_score

    assert task_score(task, metrics) == pytest.approx(score, abs=1e-12)
    assert task_score(task, {k: v for k, v in list(metrics.items())[:1]}) is None or task == "cola"


def _internals(hidden, scores):
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
    _, terms = kd_loss(_internals([s_h], [s_a]), _internals([t_h], [t_a]), lm, KDConfig(), False,
                       ("hidden", "attention"), attention_mask=mask)
    assert terms["hidden"] == pytest.approx(4.0) and terms["attention"] == pytest.approx(3.0)


def test_ternary_threshold_is_0_7_of_mean_abs_weight():
    """Bug: threshold 0.75 x mean|W| instead of 0.7. |W| = 0, 0, 0.58, 1, 2.5: mean 0.816, so d = 0.5712 with 0.7
    (0.58 is kept) but 0.612 with 0.75 (it would be zeroed). a = mean of kept |W| = (0.58 + 1 + 2.5) / 3."""
    w = torch.tensor([[0.0, 0.0, -0.58, 1.0, 2.5]])
    codes, scales = quantize_weight_codes(w, 2, 1, "xtc")
    assert codes.tolist() == [[0, 0, -1, 1, 1]]
    assert scales.tolist() == pytest.approx([(0.58 + 1.0 + 2.5) / 3])
    assert quantize_weight(w, 2).tolist()[0] == pytest.approx([0.0, 0.0, -1.36, 1.36, 1.36])


def test_gradients_are_clipped_to_max_grad_norm(tiny_model, tmp_path, step_log):
    """Bug: dropping gradient clipping. A loss scaled by 1e4 has gradient norms far above 1; every step must
    apply a norm of at most max_grad_norm."""
    cfg = TrainConfig(epochs=1, lr=1e-4, batch_size=4, eval_every=0, warmup_epochs=0, max_grad_norm=0.5)
    _train(tiny_model, tmp_path, cfg, _objective(1e4))
    assert len(step_log) == 4 and all(s["grad_norm"] <= 0.5 * (1 + 1e-5) for s in step_log)
    assert max(s["grad_norm"] for s in step_log) > 0.49  # clipped to the bound, not vanishing


def test_gradients_unclipped_when_bound_is_large(tiny_model, tmp_path, step_log):
    """The premise of the clipping pin: without a binding bound the same steps have norms far above 0.5."""
    cfg = TrainConfig(epochs=1, lr=1e-4, batch_size=4, eval_every=0, warmup_epochs=0, max_grad_norm=1e12)
    _train(tiny_model, tmp_path, cfg, _objective(1e4))
    assert min(s["grad_norm"] for s in step_log) > 10


def test_warmup_then_linear_decay_step_by_step(tiny_model, tmp_path, step_log):
    """Bug: the warm-up schedule off by one step. 16 examples / batch 4 = 4 steps per epoch, 2 epochs = 8 steps,
    warm-up 0.75 epoch = 3 steps: lr x 1/3, 2/3, 1 (peak on the last warm-up step), then (8 - step) / 5: 1, 4/5,
    ..., 1/5 (no step is taken at lr 0)."""
    cfg = TrainConfig(epochs=2, lr=1e-3, batch_size=4, eval_every=0, warmup_epochs=0.75)
    _train(tiny_model, tmp_path, cfg)
    expected = [1 / 3, 2 / 3, 1, 1, 4 / 5, 3 / 5, 2 / 5, 1 / 5]
    assert [s["lr"] / 1e-3 for s in step_log] == pytest.approx(expected, abs=1e-12)


def test_no_weight_decay_on_layernorm_and_biases(tiny_model):
    """Bug: weight decay on LayerNorm weights (or biases). Every parameter in exactly one group."""
    opt = train_mod.make_optimizer(tiny_model, 1e-3, 0.01)
    wd = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    named = dict(tiny_model.named_parameters())
    assert len(wd) == len(named)
    for name, p in named.items():
        no_decay = name.endswith("bias") or "LayerNorm" in name
        assert wd[id(p)] == (0.0 if no_decay else 0.01), name
    assert any("LayerNorm.weight" in n for n in named) and any(n.endswith("dense.weight") for n in named)


def test_no_weight_decay_on_layernorm_in_training(tiny_model, tmp_path):
    """The same through train(): with lr > 0 and zero gradients for LayerNorm, decay would shrink its weights."""
    ln = tiny_model.bert.embeddings.LayerNorm.weight
    before = ln.detach().clone()
    ln.register_hook(lambda g: torch.zeros_like(g))
    cfg = TrainConfig(epochs=1, lr=1e-1, batch_size=4, eval_every=0, warmup_epochs=0, weight_decay=0.5)
    _train(tiny_model, tmp_path, cfg)
    assert torch.equal(tiny_model.bert.embeddings.LayerNorm.weight.detach(), before)


def test_cli_passes_every_kd_setting(monkeypatch, tmp_path):
    """Bug: the CLI ignoring --temperature (or swapping the KD weights)."""
    import xtc.compress as compress_mod

    seen = {}

    def capture(*args, **kwargs):
        seen["kd"] = args[6]
        raise ValueError("captured")

    monkeypatch.setattr(compress_mod, "compress", capture)
    code = main(["compress", "--task", "sst2", "--teacher", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--temperature", "3.5", "--logit-weight", "0.25", "--hidden-weight", "2", "--attention-weight", "4"])
    assert code == 2
    assert seen["kd"] == KDConfig(logit_weight=0.25, hidden_weight=2.0, attention_weight=4.0, temperature=3.5)


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


def test_correlation_of_constant_or_nan_predictions_is_zero_and_unit_std_is_not_special():
    """Bugs (mutation survivors in metrics.py): the constant-prediction guard testing std == 1, or `and` for `or`,
    or NaN scored as a perfect 1.0."""
    from xtc.metrics import split_metrics

    stsb = get_task("stsb")
    assert split_metrics(stsb, [-1.0, 1.0, -1.0, 1.0], [0.0, 1.0, 0.0, 1.0]) == {"pearson": pytest.approx(1.0),
                                                                                "spearman": pytest.approx(1.0)}
    assert split_metrics(stsb, [0.0, 1.0, 0.0, 1.0], [-1.0, 1.0, -1.0, 1.0])["pearson"] == pytest.approx(1.0)
    assert split_metrics(stsb, [2.0, 2.0, 2.0], [0.0, 1.0, 3.0]) == {"pearson": 0.0, "spearman": 0.0}
    assert split_metrics(stsb, [0.0, 1.0, 3.0], [2.0, 2.0, 2.0]) == {"pearson": 0.0, "spearman": 0.0}
    assert split_metrics(stsb, [float("nan"), 1.0, 3.0], [0.0, 1.0, 3.0])["pearson"] == 0.0


def test_f1_without_any_positive_is_zero():
    """Bug: f1 with zero_division=1 would score 'no positives predicted, none present' as a perfect 1.0."""
    from xtc.metrics import split_metrics

    assert split_metrics(get_task("mrpc"), [0, 0, 0], [0, 0, 0]) == {"accuracy": 1.0, "f1": 0.0}


@pytest.mark.parametrize("bits, ok", [(b, True) for b in (1, 2, 3, 4, 5, 6, 7, 8, 32)] +
                         [(b, False) for b in (0, 9, 16, 31, 33)])
def test_every_supported_weight_width_and_no_other(bits, ok):
    """Mutation survivors: a changed member of WEIGHT_BITS (e.g. 3 -> 4) went unnoticed. (ACT_BITS is left to the
    validation rework that narrows --abits.)"""
    from xtc.quant import QuantSpec

    if ok:
        assert QuantSpec(wbits=bits).validate().wbits == bits
    else:
        with pytest.raises(ValueError, match=rf"wbits must be one of .*, got {bits} \(QuantSpec.wbits\)"):
            QuantSpec(wbits=bits).validate()


# ---------------------------------------------------------------- pinned by mutation testing of xtc/train.py


def test_a_stage_lr_factor_multiplies_the_learning_rate(tiny_model, tmp_path, step_log):
    cfg = TrainConfig(epochs=1, lr=1e-3, batch_size=4, eval_every=0, warmup_epochs=0)
    train(tiny_model, [Stage("s", 1, 2.0, _objective())], _data(), {"dev": _data(8)}, get_task("sst2"), cfg,
          str(tmp_path / "run"), {}, "cpu", quiet=True)
    assert step_log[0]["lr"] == pytest.approx(2e-3, rel=1e-12)


def test_schedule_with_one_warmup_step_and_one_decay_step():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    f = train_mod.linear_schedule(opt, 1, 2).lr_lambdas[0]
    assert [f(0), f(1), f(2)] == [1.0, 1.0, 0.0]
    g = train_mod.linear_schedule(opt, 0, 3).lr_lambdas[0]
    assert [g(0), g(1), g(2)] == [1.0, 2 / 3, 1 / 3]


def test_regression_is_scored_on_its_single_output():
    from scipy.stats import pearsonr

    from conftest import tiny_config
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(1)).eval()
    data = _data(12)
    data = Encoded(data.input_ids, data.token_type_ids, [float(i % 5) for i in range(12)], regression=True)
    got = train_mod.evaluate(model, get_task("stsb"), {"dev": data}, 4, "cpu")
    preds = train_mod.predict(model, data, 4, "cpu")[:, 0]
    assert got["pearson"] == pytest.approx(pearsonr(preds, data.labels).statistic, rel=1e-6)


def test_every_batch_carries_its_example_indices(tiny_model, tmp_path):
    seen = []

    def loss_fn(model, batch):
        seen.append(batch["index"].tolist())
        return _objective()(model, batch)

    cfg = TrainConfig(epochs=1, lr=1e-4, batch_size=4, eval_every=0, warmup_epochs=0)
    _train(tiny_model, tmp_path, cfg, loss_fn)
    assert sorted(i for b in seen for i in b) == list(range(16))  # one epoch: every example once


def test_progress_bar_and_where_the_log_goes(tiny_model, tmp_path, monkeypatch, capsys):
    cfg = TrainConfig(epochs=1, lr=1e-4, batch_size=4, eval_every=2, warmup_epochs=0)
    data, stage = _data(), Stage("s", 1, 1.0, _objective())
    train(tiny_model, [stage], data, {"dev": _data(8)}, get_task("sst2"), cfg, str(tmp_path / "a"), {}, "cpu",
          quiet=False)
    out, err = capsys.readouterr()
    assert out == "" and "[sst2 s] step 2" in err  # off a terminal: no bar, the log on stderr
    bars = []
    real = train_mod.tqdm

    made = []

    def recording_tqdm(**kw):
        bars.append(kw)
        made.append(real(**kw))
        return made[-1]

    monkeypatch.setattr(train_mod, "tqdm", recording_tqdm)
    monkeypatch.setattr(train_mod.sys.stderr, "isatty", lambda: True, raising=False)
    train(tiny_model, [stage], data, {"dev": _data(8)}, get_task("sst2"), cfg, str(tmp_path / "b"), {}, "cpu",
          quiet=False)
    assert bars == [{"total": 4, "initial": 0, "disable": False, "desc": "sst2", "unit": "step"}]
    out, _ = capsys.readouterr()
    assert "[sst2 s] step 2" in out  # with a bar, the log goes through tqdm.write, above the bar
    assert re.fullmatch(r"loss=\d\.\d{4}", made[0].postfix)  # the last step's loss beside the bar
    train(tiny_model, [stage], data, {"dev": _data(8)}, get_task("sst2"), cfg, str(tmp_path / "c"), {}, "cpu",
          quiet=True)
    assert bars[-1]["disable"] is True


def test_finish_run_without_a_resume_state(tiny_model, tmp_path):
    from conftest import make_tiny_model_dir
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(make_tiny_model_dir(str(tmp_path / "tok")))
    out = tmp_path / "done"
    out.mkdir()
    from xtc.run_folder import finish_run

    rec = finish_run(str(out), tiny_model, tok, {"metrics": {"accuracy": 1.0}})
    assert rec == {"metrics": {"accuracy": 1.0}} and (out / "metrics.json").is_file()


def test_a_nan_loss_stops_the_run_and_keeps_nothing(tiny_model, tmp_path):
    def nan_loss(model, batch):
        loss, terms = _objective()(model, batch)
        return loss * float("nan"), terms

    cfg = TrainConfig(epochs=1, lr=1e-4, batch_size=4, eval_every=0, warmup_epochs=0)
    with pytest.raises(train_mod.NonFiniteLossError, match=r"^the training loss became nan at step 1 \(s\); "
                                                           r"nothing was kept"):
        _train(tiny_model, tmp_path, cfg, nan_loss)
    assert not (tmp_path / "run").exists()


def test_the_run_record_counts_examples_time_and_steps(tiny_model, tmp_path):
    cfg = TrainConfig(epochs=1.5, lr=1e-4, batch_size=4, eval_every=3, warmup_epochs=0)
    rec = _train(tiny_model, tmp_path, cfg)
    assert rec["steps"] == 6 and rec["steps_per_epoch"] == 4
    assert 0 < rec["train_seconds"] < rec["wall_seconds"]
    assert rec["train_samples_per_second"] == pytest.approx(24 / rec["train_seconds"])  # 6 steps x 4 examples
    assert rec["train_tokens_per_second"] == pytest.approx(rec["train_tokens"] / rec["train_seconds"])
    h = rec["history"]
    assert [e["step"] for e in h] == [3, 4, 6] and [e["epoch"] for e in h] == [0.75, 1.0, 1.5]
    assert [e["lr"] for e in h] == pytest.approx([1e-4 * 3 / 6, 1e-4 * 2 / 6, 0.0])


def test_the_model_and_its_evaluation_go_to_the_requested_device(tiny_model, tmp_path, monkeypatch):
    """CPU-only CI cannot tell a model left where it was from one moved to the CPU: record what was asked."""
    moved, evaluated = [], []
    real_to, real_eval = tiny_model.to, train_mod.evaluate
    monkeypatch.setattr(tiny_model, "to", lambda *a, **kw: moved.append(a) or real_to(*a, **kw))
    monkeypatch.setattr(train_mod, "evaluate", lambda *a: evaluated.append(a[-1]) or real_eval(*a))
    cfg = TrainConfig(epochs=1, lr=1e-4, batch_size=4, eval_every=0, warmup_epochs=0)
    train(tiny_model, [Stage("s", 1, 1.0, _objective())], _data(), {"dev": _data(8)}, get_task("sst2"), cfg,
          str(tmp_path / "run"), {}, torch.device("cpu"), quiet=True)
    assert moved[0] == (torch.device("cpu"),) and evaluated and set(evaluated) == {torch.device("cpu")}
