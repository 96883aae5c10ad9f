"""Mixed precision: the resolver's choice and reason, what runs in bf16 and what stays fp32, exact resume and
same-seed determinism in bf16, and an fp32 path identical to code without any precision handling."""
import contextlib
import json
import os

import pytest
import torch

import xtc.precision as prec
from conftest import interrupt_after_checkpoints
from xtc.checkpoint import load_state
from xtc.cli import main
from xtc.compress import CompressConfig, compress
from xtc.config import RunOptions
from xtc.distill import KDConfig, forward_with_internals, kd_loss, label_loss, layer_maps
from xtc.finetune import finetune
from xtc.quant import QuantSpec, apply_quantization
from xtc.files import STATE_DIR
from xtc.train import TrainConfig

CFG = TrainConfig(epochs=3, lr=1e-2, batch_size=8, eval_every=3, warmup_epochs=0.5, seed=5)
SPEC, CC = QuantSpec(wbits=1, abits=8), CompressConfig(layers=2)


# ---------------------------------------------------------------------------- resolver

@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh, empty precision cache file for the test."""
    path = tmp_path / "cache" / "precision.json"
    monkeypatch.setenv(prec.CACHE_ENV, str(path))
    return path


def _timing(ratio):
    return lambda step, device, rounds=prec.MEASURE_ROUNDS: {
        "fp32_step_seconds": 1.0, "bf16_step_seconds": ratio, "ratio_bf16_over_fp32": ratio, "rounds": rounds,
        "clock": "mocked"}


def _no_step():
    raise AssertionError("measured although the cache holds this machine")


@pytest.mark.parametrize("ratio, want", [(0.6, "bf16"), (0.97, "fp32"), (1.3, "fp32")])
def test_auto_follows_the_measured_timing(cache, monkeypatch, ratio, want):
    monkeypatch.setattr(prec, "measure_step_seconds", _timing(ratio))
    monkeypatch.setattr(prec, "_cpu_bf16_units", lambda: (want == "fp32", True))  # flags say the opposite
    choice = prec.resolve_precision("auto", "cpu", measure=lambda: None, measured_with="a test step")
    assert choice.precision == want and choice.auto["source"] == "measured" and not choice.auto["from_cache"]
    assert choice.auto["ratio_bf16_over_fp32"] == ratio and f"{ratio:.2f}" in choice.reason
    # an explicit flag overrides the measurement either way
    assert prec.resolve_precision("fp32", "cpu") == prec.PrecisionChoice("fp32", "requested --precision fp32")
    assert prec.resolve_precision("bf16", "cpu").precision == "bf16"


def test_cache_is_written_reused_keyed_and_cleared(cache, monkeypatch, capsys):
    monkeypatch.setattr(prec, "measure_step_seconds", _timing(0.5))
    first = prec.resolve_precision("auto", "cpu", measure=lambda: None, measured_with="step A")
    data = json.loads(cache.read_text())
    key = prec.machine_key("cpu")
    assert key == f"cpu | {prec.cpu_model_name()} | torch {torch.__version__}"
    assert data["version"] == prec.CACHE_VERSION and list(data["entries"]) == [key]
    assert data["entries"][key]["choice"] == "bf16" and data["entries"][key]["measured_with"] == "step A"
    again = prec.resolve_precision("auto", "cpu", measure=_no_step)  # reused: no second measurement
    assert again.precision == first.precision == "bf16"
    assert again.auto["source"] == "cache" and again.auto["from_cache"] and again.auto["ratio_bf16_over_fp32"] == 0.5
    assert "from the cache" in again.reason and again.to_dict()["auto"]["from_cache"] is True
    # another torch version is another machine: measured again, both entries kept
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    monkeypatch.setattr(prec, "measure_step_seconds", _timing(1.4))
    other = prec.resolve_precision("auto", "cpu", measure=lambda: None)
    assert other.precision == "fp32" and other.auto["source"] == "measured"
    assert len(json.loads(cache.read_text())["entries"]) == 2
    # the CLI shows and clears it
    assert main(["precision", "--show"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["cache_file"] == str(cache) and len(shown["entries"]) == 2
    assert main(["precision", "--clear"]) == 0 and json.loads(capsys.readouterr().out)["cleared"] is True
    assert not cache.exists()
    assert main(["precision", "--clear"]) == 0 and json.loads(capsys.readouterr().out)["cleared"] is False


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(prec.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert prec.cache_file() == str(tmp_path / "xdg" / "xtc" / "precision.json")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert prec.cache_file() == str(tmp_path / "home" / ".cache" / "xtc" / "precision.json")


class _Boom:
    def __reduce__(self):  # unpickling this would create a marker file
        return (open, (os.environ["BOOM_MARKER"], "w"))


@pytest.mark.parametrize("content", [b"{not json", b"\x80\x04pickle", b'{"version": 1, "entries": {"k": 3}}',
                                     b'{"version": 99, "entries": {}}', b"[]", b"pickle"])
def test_corrupted_cache_is_ignored_with_one_line(cache, monkeypatch, capsys, tmp_path, content):
    import pickle

    cache.parent.mkdir(parents=True)
    if content == b"pickle":
        monkeypatch.setenv("BOOM_MARKER", str(tmp_path / "unpickled"))
        content = pickle.dumps(_Boom())
    cache.write_bytes(content)
    assert prec.read_cache() == {}
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ignoring the precision cache" in err and str(cache) in err
    assert not (tmp_path / "unpickled").exists()  # never unpickled
    monkeypatch.setattr(prec, "measure_step_seconds", _timing(0.5))
    choice = prec.resolve_precision("auto", "cpu", measure=lambda: None)  # measures and rewrites it
    assert choice.auto["source"] == "measured"
    assert json.loads(cache.read_text())["entries"][prec.machine_key("cpu")]["choice"] == "bf16"


def test_bf16_beyond_the_fidelity_tolerance_is_never_chosen(cache, monkeypatch):
    monkeypatch.setattr(prec, "measure_step_seconds", _timing(0.3))
    monkeypatch.setitem(prec.BF16_FIDELITY, "cpu", {"source": "a test", "arms": {"arm acc": (-0.02, 0.01)}})
    choice = prec.resolve_precision("auto", "cpu", measure=_no_step)
    assert choice.precision == "fp32" and "beyond the tolerance" in choice.reason
    assert choice.auto["source"] == "fidelity" and not cache.exists()
    # and the documented measurements keep bf16 eligible on CPU and CUDA
    assert prec.bf16_fidelity("cuda")[0] and not prec.bf16_fidelity("mps")[0]


@pytest.mark.parametrize("units, want, reason", [
    ((True, True), "bf16", "CPU has AMX-BF16"),
    ((False, True), "fp32", "AVX512-BF16 but no usable AMX"),
    ((False, False), "fp32", "lacks AMX-BF16 and AVX512-BF16"),
])
def test_flags_decide_only_where_nothing_can_be_measured(cache, monkeypatch, capsys, units, want, reason):
    monkeypatch.setattr(prec, "_cpu_bf16_units", lambda: units)
    choice = prec.resolve_precision("auto", "cpu")  # no step to measure
    assert choice.precision == want and reason in choice.reason and choice.auto["source"] == "flags"

    def broken():
        raise RuntimeError("no bf16 kernel here")

    failed = prec.resolve_precision("auto", "cpu", measure=broken)
    assert failed.precision == want and "measuring failed: RuntimeError" in failed.reason
    assert capsys.readouterr().err.count("\n") == 1 and not cache.exists()
    forced = prec.resolve_precision("bf16", "cpu")
    assert forced.precision == "bf16" and ("slower" in forced.reason) == (want == "fp32")


def test_cpu_units_follow_the_cpu_flags():
    amx, avx512_bf16 = prec._cpu_bf16_units()
    with open("/proc/cpuinfo") as f:
        flags = next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    assert avx512_bf16 == ("avx512_bf16" in flags or torch.cpu._is_avx512_bf16_supported())
    assert not amx or "amx_bf16" in flags


@pytest.mark.parametrize("supported", [True, False])
def test_auto_on_cuda_without_a_step_follows_bf16_support(cache, monkeypatch, supported):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    choice = prec.resolve_precision("auto", "cuda")
    assert choice.precision == ("bf16" if supported else "fp32") and "Fake GPU" in choice.reason


def test_bad_precision_is_rejected():
    with pytest.raises(ValueError, match="auto, fp32, bf16"):
        prec.resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="--precision must be one of"):
        TrainConfig(precision="half")


# ---------------------------------------------------------------------------- what runs in bf16

def test_matmuls_in_bf16_losses_and_weights_in_fp32(tiny_model):
    student = tiny_model.train()
    apply_quantization(student, SPEC)
    batch = {"input_ids": torch.randint(5, 60, (3, 9)), "attention_mask": torch.ones(3, 9, dtype=torch.long)}
    batch["attention_mask"][0, 6:] = 0
    with torch.no_grad():
        t = forward_with_internals(tiny_model, batch, attentions=True, hidden=True)
    lmap = layer_maps(4, 4)
    with prec.autocast("bf16", "cpu"):
        s = forward_with_internals(student, batch, attentions=True, hidden=True)
        loss, _ = kd_loss(s, t, lmap, KDConfig(), False, attention_mask=batch["attention_mask"])
        ce = label_loss(s.logits, torch.tensor([0, 1, 1]), regression=False)
    assert s.logits.dtype == torch.bfloat16  # the classifier's matmul ran in bf16
    assert loss.dtype == torch.float32 and ce.dtype == torch.float32
    loss.backward()
    assert all(p.dtype == torch.float32 and (p.grad is None or p.grad.dtype == torch.float32)
               for p in student.parameters())
    with prec.autocast("fp32", "cpu"):
        assert forward_with_internals(student, batch, False, False).logits.dtype == torch.float32


# ---------------------------------------------------------------------------- training runs

@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_model_dir, glue_dir):
    out = str(tmp_path_factory.mktemp("prec") / "teacher")
    finetune("sst2", tiny_model_dir, out, TrainConfig(epochs=2, lr=1e-2, batch_size=16, precision="fp32"),
             run=RunOptions(glue_dir=glue_dir, quiet=True))
    return out


def _state(out):
    from xtc.models import load_classifier

    return load_classifier(str(out)).state_dict()


def _run(tmp_path, teacher_dir, glue_dir, name, precision, cc=CC):
    cfg = TrainConfig(**{**CFG.__dict__, "precision": precision})
    return compress("sst2", teacher_dir, str(tmp_path / name), cfg, SPEC, cc,
                    run=RunOptions(glue_dir=glue_dir, quiet=True))


def test_bf16_same_seed_identical_and_resume_exact(tmp_path, teacher_dir, glue_dir, monkeypatch):
    a = _run(tmp_path, teacher_dir, glue_dir, "a", "bf16")
    b = _run(tmp_path, teacher_dir, glue_dir, "b", "bf16")
    assert a["precision"]["train"] == "bf16" and a["precision"]["reason"].startswith("requested --precision bf16")
    assert a["history"] == b["history"] and a["metrics"] == b["metrics"]
    sa, sb = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(v.dtype == torch.float32 for v in sa.values() if v.is_floating_point())  # latent weights fp32
    # interrupted after the 2nd checkpoint, then resumed: exactly the uninterrupted run
    out = str(tmp_path / "resumed")
    interrupt_after_checkpoints(monkeypatch, 2, lambda: _run(tmp_path, teacher_dir, glue_dir, "resumed", "bf16"))
    saved = load_state(os.path.join(out, STATE_DIR))  # safetensors + JSON (xtc/checkpoint.py)
    assert saved["run_config"]["precision"] == "bf16"
    assert all(s.dtype == torch.float32 for st in saved["optimizer"]["state"].values()
               for s in st.values() if s.is_floating_point())  # AdamW moments fp32
    r = _run(tmp_path, teacher_dir, glue_dir, "resumed", "bf16")
    assert r["history"] == a["history"] and r["metrics"] == a["metrics"]
    sr = _state(tmp_path / "resumed")
    assert all(torch.equal(sa[k], sr[k]) for k in sa)


def test_fp32_path_is_the_code_without_precision_handling(tmp_path, teacher_dir, glue_dir, monkeypatch):
    """fp32 is bit for bit what the training code computed before mixed precision existed: taking every
    precision hook out (no autocast region, no fp32 region in the losses) changes nothing."""
    cc = CompressConfig(layers=2, teacher_cache_gb=0)  # live teacher: its forward is inside the region too
    ref = _run(tmp_path, teacher_dir, glue_dir, "fp32", "fp32", cc)
    bf16 = _run(tmp_path, teacher_dir, glue_dir, "bf16", "bf16", cc)
    import xtc.distill
    import xtc.train

    monkeypatch.setattr(xtc.train, "autocast", lambda *a: contextlib.nullcontext())
    monkeypatch.setattr(xtc.distill, "full_precision", lambda *a: contextlib.nullcontext())
    bare = _run(tmp_path, teacher_dir, glue_dir, "bare", "fp32", cc)
    assert bare["history"] == ref["history"]
    s_ref, s_bare, s_bf16 = _state(tmp_path / "fp32"), _state(tmp_path / "bare"), _state(tmp_path / "bf16")
    assert all(torch.equal(s_ref[k], s_bare[k]) for k in s_ref)
    # and the bf16 run really computed something else (the test would notice autocast doing nothing)
    assert not all(torch.equal(s_ref[k], s_bf16[k]) for k in s_ref)
    assert ref["precision"]["train"] == "fp32" and bf16["precision"]["train"] == "bf16"


def test_cli_precision_flag_reaches_metrics(tmp_path, teacher_dir, glue_dir, capsys):
    out = str(tmp_path / "cli")
    code = main(["finetune", "--task", "sst2", "--model", teacher_dir, "--out", out, "--glue-dir", glue_dir,
                 "--epochs", "0.5", "--precision", "fp32", "--quiet"])
    assert code == 0
    with open(os.path.join(out, "metrics.json")) as f:
        rec = json.load(f)
    assert rec["precision"] == {"train": "fp32", "eval": "fp32", "reason": "requested --precision fp32"}
    assert rec["config"]["precision"] == "fp32"
    # main returns argparse's exit status like every other error's (it used to raise SystemExit for this one)
    assert main(["finetune", "--task", "sst2", "--out", str(tmp_path / "x"), "--precision", "fp16"]) == 2
    assert "invalid choice: 'fp16'" in capsys.readouterr().err


def _auto_run(tmp_path, teacher_dir, glue_dir, name):
    return _run(tmp_path, teacher_dir, glue_dir, name, "auto")


def test_auto_measures_the_real_step_and_leaves_the_run_untouched(tmp_path, teacher_dir, glue_dir, cache,
                                                                   monkeypatch):
    measured = _auto_run(tmp_path, teacher_dir, glue_dir, "measured")  # empty cache: times the run's own step
    rec = measured["precision"]
    assert rec["auto"]["source"] == "measured" and rec["auto"]["from_cache"] is False
    assert rec["auto"]["fp32_step_seconds"] > 0 and rec["auto"]["bf16_step_seconds"] > 0
    assert "compress sst2: 2-layer student, W1A8" in rec["auto"]["measured_with"]
    assert measured["config"]["precision"] == rec["train"]
    cached = _auto_run(tmp_path, teacher_dir, glue_dir, "cached")
    assert cached["precision"]["auto"]["source"] == "cache" and cached["precision"]["train"] == rec["train"]
    # timing the step on a copy changed neither the weights nor any random generator of the run
    assert cached["history"] == measured["history"]
    sm, sc = _state(tmp_path / "measured"), _state(tmp_path / "cached")
    assert all(torch.equal(sm[k], sc[k]) for k in sm)


@pytest.mark.parametrize("first, later", [("bf16", "fp32"), ("fp32", "bf16")])
def test_resumed_auto_run_keeps_its_precision(tmp_path, teacher_dir, glue_dir, cache, monkeypatch, first, later):
    key = prec.machine_key("cpu")
    prec.write_cache_entry(key, {"choice": first, "ratio_bf16_over_fp32": 1.0})
    whole = _auto_run(tmp_path, teacher_dir, glue_dir, "whole")
    assert whole["precision"]["train"] == first
    interrupt_after_checkpoints(monkeypatch, 2, lambda: _auto_run(tmp_path, teacher_dir, glue_dir, "resumed"))
    prec.write_cache_entry(key, {"choice": later, "ratio_bf16_over_fp32": 1.0})  # the machine's choice changed
    r = _auto_run(tmp_path, teacher_dir, glue_dir, "resumed")
    assert r["precision"]["train"] == first and r["precision"]["auto"]["source"] == "resumed"
    assert r["history"] == whole["history"] and r["metrics"] == whole["metrics"]


def test_help_of_training_commands_shows_the_new_settings(capsys):
    for command in ("finetune", "compress"):
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "--precision {auto,fp32,bf16}" in out and "--compile {auto,off,on}" in out
    assert main(["precision", "--help"]) == 0 and "--clear" in capsys.readouterr().out
