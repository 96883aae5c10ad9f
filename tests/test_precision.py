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
from xtc.train import STATE_DIR, TrainConfig

CFG = TrainConfig(epochs=3, lr=1e-2, batch_size=8, eval_every=3, warmup_epochs=0.5, seed=5)
SPEC, CC = QuantSpec(wbits=1, abits=8), CompressConfig(layers=2)


# ---------------------------------------------------------------------------- resolver

@pytest.mark.parametrize("units, want, reason", [
    ((True, True), "bf16", "CPU has AMX-BF16"),
    ((False, True), "fp32", "AVX512-BF16 but no usable AMX"),  # measured slower in bf16: fp32 by default
    ((False, False), "fp32", "lacks AMX-BF16 and AVX512-BF16"),
])
def test_auto_picks_bf16_only_where_it_is_faster(monkeypatch, units, want, reason):
    monkeypatch.setattr(prec, "_cpu_bf16_units", lambda: units)
    choice = prec.resolve_precision("auto", "cpu")
    assert choice.precision == want and choice.reason.startswith("auto: ") and reason in choice.reason
    # an explicit flag overrides the device's default either way
    assert prec.resolve_precision("fp32", "cpu") == prec.PrecisionChoice("fp32", "requested --precision fp32")
    forced = prec.resolve_precision("bf16", "cpu")
    assert forced.precision == "bf16" and ("slower" in forced.reason) == (want == "fp32")


def test_cpu_units_follow_the_cpu_flags():
    amx, avx512_bf16 = prec._cpu_bf16_units()
    with open("/proc/cpuinfo") as f:
        flags = next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    assert avx512_bf16 == ("avx512_bf16" in flags or torch.cpu._is_avx512_bf16_supported())
    assert not amx or "amx_bf16" in flags


@pytest.mark.parametrize("supported", [True, False])
def test_auto_on_cuda_follows_bf16_support(monkeypatch, supported):
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


def test_study_passes_its_precision_to_every_training_job():
    import xtc.study as study

    root = os.path.join(os.path.dirname(__file__), os.pardir, "workflow", "config")
    cfg = study.load_config(os.path.join(root, "smoke.yaml"))
    del cfg["train"]["precision"]
    assert study.validate_config(cfg)["train"]["precision"] == "auto"  # the schema default
    cfg["train"]["precision"] = "fp32"
    for what in ("teacher", "train"):
        assert "--precision fp32" in study.data_flags(cfg, what)


def test_a_half_precision_checkpoint_loads_as_fp32(tmp_path, tiny_model_dir):
    # transformers 5 keeps a checkpoint's dtype; latent weights and optimizer state must still be fp32
    from transformers import BertForSequenceClassification

    from xtc.models import load_classifier

    half = str(tmp_path / "half")
    BertForSequenceClassification.from_pretrained(tiny_model_dir).to(torch.float16).save_pretrained(half)
    assert {p.dtype for p in BertForSequenceClassification.from_pretrained(half).parameters()} == {torch.float16}
    assert {p.dtype for p in load_classifier(half).parameters()} == {torch.float32}
