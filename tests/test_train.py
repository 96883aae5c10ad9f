"""Tests of xtc/train.py: the training loop (steps, schedule, clipping, evaluation and selection, resume, stops)."""
import os
import re

import pytest
import torch
import torch.nn.functional as F
from transformers import BertForSequenceClassification

import xtc.train as train_mod
from conftest import interrupt_after_checkpoints, make_tiny_model_dir
from test_run_folder import _run
from xtc.checkpoint import load_state
from xtc.cli import main
from xtc.data import Encoded
from xtc.files import STATE_DIR
from xtc.tasks import get_task
from xtc.train import Stage, TrainConfig, train


def test_rng_state_saves_and_restores_the_cuda_generators_where_there_are_some(monkeypatch):
    """The CPU-only CI cannot run a GPU, so the CUDA calls are spied on: saved when CUDA is there, restored only
    when the state has them and CUDA is there."""
    import torch

    from xtc.train import _rng_state, _set_rng_state

    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: ["gpu0-state"])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    state = _rng_state()
    assert state["cuda"] == ["gpu0-state"]
    _set_rng_state(state)
    assert restored == [["gpu0-state"]]
    _set_rng_state({k: v for k, v in state.items() if k != "cuda"})  # saved on a CPU-only machine
    assert restored == [["gpu0-state"]]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # resumed on a CPU-only machine
    assert "cuda" not in _rng_state()
    _set_rng_state(state)
    assert restored == [["gpu0-state"]]


# ---------------------------------------------------------------- pins (issue 14's mutation check)
# Each test names the bug it catches.


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


# ---------------------------------------------------------------- failure modes of a training run


@pytest.fixture(scope="module")
def dropout_model_dir(tmp_path_factory):
    """The tiny BERT with dropout on: resuming without the saved RNG state draws other dropout masks."""
    path = make_tiny_model_dir(str(tmp_path_factory.mktemp("dropout_bert")))
    model = BertForSequenceClassification.from_pretrained(path, hidden_dropout_prob=0.2,
                                                          attention_probs_dropout_prob=0.2)
    model.save_pretrained(path)
    return path


def test_resume_restores_rng_state_exactly(tmp_path, dropout_model_dir, glue_dir, monkeypatch):
    full = _run(dropout_model_dir, str(tmp_path / "full"), glue_dir)
    out = str(tmp_path / "resumed")
    interrupt_after_checkpoints(monkeypatch, 2, lambda: _run(dropout_model_dir, out, glue_dir))
    state = load_state(os.path.join(out, STATE_DIR))
    assert state["global_step"] == 4 and state["rng"]["torch"].dtype == torch.uint8
    resumed = _run(dropout_model_dir, out, glue_dir)
    assert [h["train"] for h in resumed["history"]] == [h["train"] for h in full["history"]]
    assert resumed["metrics"] == full["metrics"]


def test_nan_loss_stops_with_one_error_and_keeps_nothing(tmp_path, tiny_model_dir, glue_dir, monkeypatch, capsys):
    import xtc.finetune as ft

    real, calls = ft.label_objective, {"n": 0}

    def diverges(model, batch):  # finite for 5 steps (a checkpoint is written at step 3), then NaN
        loss, terms = real(model, batch)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] > 5 else loss), terms

    monkeypatch.setattr(ft, "label_objective", diverges)
    out = tmp_path / "nan"
    code = main(["finetune", "--task", "sst2", "--model", tiny_model_dir, "--out", str(out), "--glue-dir", glue_dir,
                 "--epochs", "3", "--batch-size", "16", "--eval-every", "3", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "loss became nan at step 6" in err and "--lr" in err
    assert calls["n"] == 6 and not out.exists()  # no config, weights, tokenizer or state: nothing to evaluate
    monkeypatch.setattr(ft, "label_objective", real)
    assert main(["finetune", "--task", "sst2", "--model", tiny_model_dir, "--out", str(out), "--glue-dir", glue_dir,
                 "--epochs", "1", "--batch-size", "16", "--quiet"]) == 0  # the retry is not blocked


def test_diverging_lr_is_a_clear_error(tmp_path, tiny_model_dir, glue_dir, capsys):
    out = tmp_path / "huge_lr"
    code = main(["finetune", "--task", "sst2", "--model", tiny_model_dir, "--out", str(out), "--glue-dir", glue_dir,
                 "--epochs", "2", "--lr", "1e30", "--warmup-epochs", "0", "--batch-size", "16", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "loss became" in err and err.count("\n") == 1 and not out.exists()
