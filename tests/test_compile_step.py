"""The compiled training step: when `--compile auto` compiles, that compiled and eager steps give the same losses
within the documented tolerance, and that a failed compilation trains eagerly after one line."""
import json

import pytest
import torch

import xtc.compile_step as cs
from xtc.compress import CompressConfig, compress
from xtc.config import RunOptions
from xtc.distill import KDConfig, layer_maps, make_kd_loss
from xtc.quant import QuantSpec, apply_quantization
from xtc.train import TrainConfig, make_optimizer, train_step

CFG = TrainConfig(epochs=2, lr=1e-2, batch_size=8, eval_every=3, warmup_epochs=0.5, seed=5, precision="fp32")


def test_resolve_compile(monkeypatch):
    assert cs.resolve_compile("on", "cpu", 1) == (True, "requested --compile on")
    assert cs.resolve_compile("off", "cpu", 10**6) == (False, "requested --compile off")
    with pytest.raises(ValueError, match="auto, off, on"):
        cs.resolve_compile("maybe", "cpu", 1)
    monkeypatch.setitem(cs.MEASURED, "cpu", None)
    assert not cs.resolve_compile("auto", "cpu", 10**6)[0]  # never measured to pay: eager
    monkeypatch.setitem(cs.MEASURED, "cpu", (60.0, 1.0, 1.1))
    assert not cs.resolve_compile("auto", "cpu", 10**6)[0]  # slower compiled: eager however long the run
    monkeypatch.setitem(cs.MEASURED, "cpu", (60.0, 1.0, 0.8))  # 60 s to compile, 0.2 s a step saved: 300 steps
    few, why = cs.resolve_compile("auto", "cpu", 299)
    many, _ = cs.resolve_compile("auto", "cpu", 301)
    assert not few and many and "too few" in why


def _setup(tiny_model):
    torch.manual_seed(0)
    teacher = tiny_model.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    import copy

    student = copy.deepcopy(teacher).train()
    for p in student.parameters():
        p.requires_grad_(True)
    apply_quantization(student, QuantSpec(wbits=1, abits=8))
    loss_fn = make_kd_loss(teacher, False, KDConfig(), layer_maps(4, 4))(("logit", "hidden", "attention"))
    batches = []
    g = torch.Generator().manual_seed(1)
    for length in (9, 13, 7):  # varying lengths, as length-grouped batches have
        ids = torch.randint(5, 60, (4, length), generator=g)
        mask = torch.ones(4, length, dtype=torch.long)
        mask[0, length - 2:] = 0
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1, 0])})
    return student, loss_fn, batches


def test_compiled_step_matches_eager(tiny_model):
    import copy

    student, loss_fn, batches = _setup(tiny_model)
    twin = copy.deepcopy(student)
    compiled = cs.CompiledLoss(loss_fn, twin, "cpu")
    opt_e, opt_c = make_optimizer(student, 1e-3, 0.01), make_optimizer(twin, 1e-3, 0.01)
    for batch in batches * 2:
        le, _ = train_step(student, batch, loss_fn, opt_e, 1.0)
        lc, _ = train_step(twin, batch, compiled, opt_c, 1.0)
        assert compiled.failed is None
        assert float(lc.detach()) == pytest.approx(float(le.detach()), rel=1e-4, abs=1e-5)
    for (n, a), b in zip(student.state_dict().items(), twin.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5), n


def test_failed_compilation_trains_eagerly(tiny_model, monkeypatch, capsys):
    student, loss_fn, batches = _setup(tiny_model)

    def broken_compile(fn, **kwargs):
        def call(*a, **k):
            raise RuntimeError("inductor: no C++ compiler\nsecond line")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    compiled = cs.CompiledLoss(loss_fn, student, "cpu")
    want = loss_fn(student, batches[0])[0]
    got = compiled(student, batches[0])[0]
    assert torch.equal(got, want) and compiled.failed == "RuntimeError: inductor: no C++ compiler"
    compiled(student, batches[1])  # eager from then on, without another line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training eagerly" in err


def test_run_records_compile_and_falls_back(tmp_path, tiny_model_dir, glue_dir, monkeypatch):
    def broken_compile(fn, **kwargs):
        def call(*a, **k):
            raise RuntimeError("dynamo failed")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    run = RunOptions(glue_dir=glue_dir, quiet=True)
    cc, spec = CompressConfig(layers=2), QuantSpec(wbits=1, abits=8)
    eager = compress("sst2", tiny_model_dir, str(tmp_path / "eager"), CFG, spec, cc, run=run)
    on = compress("sst2", tiny_model_dir, str(tmp_path / "on"), TrainConfig(**{**CFG.__dict__, "compile": "on"}),
                  spec, cc, run=run)
    assert eager["compile"]["used"] is False and eager["compile"]["reason"].startswith("auto: ")  # 6 steps: eager
    assert on["compile"]["used"] is False and on["compile"]["failed"] == "RuntimeError: dynamo failed"
    assert on["history"] == eager["history"]  # the fallback is the eager step, exactly
    saved = json.loads((tmp_path / "on" / "metrics.json").read_text())
    assert saved["config"]["compile"] == "on"
