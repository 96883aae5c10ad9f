"""Failure modes: a crafted resume state runs no code, a diverged run keeps nothing, a failed or killed run never
blocks its retry, temp files of killed commands are cleaned, packed files are recognised by content."""
import errno
import json
import os
import pickle
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import BertForSequenceClassification

import xtc.train as train_mod
from conftest import interrupt_after_checkpoints, make_tiny_model_dir
from xtc.checkpoint import STATE_JSON, StateFileError, load_state, save_state
from xtc.cli import main
from xtc.compress import CompressConfig, compress
from xtc.config import AugmentConfig, RunOptions
from xtc.files import STATE_DIR
from xtc.finetune import finetune
from xtc.quant import QuantSpec
from xtc.run_folder import RunFolderError
from xtc.train import TrainConfig

CFG = TrainConfig(epochs=3, lr=1e-2, batch_size=16, eval_every=3, warmup_epochs=0.5, seed=5)
DEAD_PID = 999_999_999  # no process has it (beyond any pid_max)


class _RunsCode:
    """Unpickling this creates the marker file: the proof that a state file ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def dropout_model_dir(tmp_path_factory):
    """The tiny BERT with dropout on: resuming without the saved RNG state draws other dropout masks."""
    path = make_tiny_model_dir(str(tmp_path_factory.mktemp("dropout_bert")))
    model = BertForSequenceClassification.from_pretrained(path, hidden_dropout_prob=0.2,
                                                          attention_probs_dropout_prob=0.2)
    model.save_pretrained(path)
    return path


def _run(model_dir, out, glue_dir):
    return finetune("sst2", model_dir, out, CFG, RunOptions(glue_dir=glue_dir, quiet=True))


def test_resume_restores_rng_state_exactly(tmp_path, dropout_model_dir, glue_dir, monkeypatch):
    full = _run(dropout_model_dir, str(tmp_path / "full"), glue_dir)
    out = str(tmp_path / "resumed")
    interrupt_after_checkpoints(monkeypatch, 2, lambda: _run(dropout_model_dir, out, glue_dir))
    state = load_state(os.path.join(out, STATE_DIR))
    assert state["global_step"] == 4 and state["rng"]["torch"].dtype == torch.uint8
    resumed = _run(dropout_model_dir, out, glue_dir)
    assert [h["train"] for h in resumed["history"]] == [h["train"] for h in full["history"]]
    assert resumed["metrics"] == full["metrics"]


def test_state_round_trips_every_kind_of_value(tmp_path):
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.randn(3))], lr=0.1)
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()
    import random

    import numpy as np

    state = {"optimizer": opt.state_dict(), "py": random.getstate(), "np": np.random.get_state(),
             "best": -float("inf"), "none": None, "nested": [{"a": (1, 2.5, "x")}], "t": torch.arange(4)}
    save_state(str(tmp_path), state, step=7)
    back = load_state(str(tmp_path))
    assert back["py"] == state["py"] and back["best"] == -float("inf") and back["nested"] == state["nested"]
    assert back["np"][0] == "MT19937" and (back["np"][1] == state["np"][1]).all() and back["np"][2:] == state["np"][2:]
    assert back["optimizer"]["state"][0]["exp_avg"].equal(opt.state_dict()["state"][0]["exp_avg"])
    assert back["optimizer"]["param_groups"] == opt.state_dict()["param_groups"]
    assert sorted(os.listdir(tmp_path)) == ["state.json", "tensors-7.safetensors"]
    save_state(str(tmp_path), state, step=9)  # the previous checkpoint's tensors go
    assert sorted(os.listdir(tmp_path)) == ["state.json", "tensors-9.safetensors"]


def _unfinished_run(tmp_path, tiny_model_dir, glue_dir, monkeypatch) -> str:
    out = str(tmp_path / "run")
    interrupt_after_checkpoints(monkeypatch, 1, lambda: _run(tiny_model_dir, out, glue_dir))
    return out


def _crafted(state_dir: str, how: str, marker: str) -> None:
    payload = pickle.dumps(_RunsCode(marker))
    for f in os.listdir(state_dir):
        os.unlink(os.path.join(state_dir, f))
    if how == "pickle named state.pt":
        open(os.path.join(state_dir, "state.pt"), "wb").write(payload)
    elif how == "pickle named state.json":
        open(os.path.join(state_dir, STATE_JSON), "wb").write(payload)
    elif how == "pickle as the tensors file":
        import hashlib

        open(os.path.join(state_dir, "tensors-1.safetensors"), "wb").write(payload)
        json.dump({"format": "xtc-state", "version": 1, "tensors": "tensors-1.safetensors",
                   "sha256": hashlib.sha256(payload).hexdigest(), "state": {}},
                  open(os.path.join(state_dir, STATE_JSON), "w"))
    elif how == "json with object tags":
        json.dump({"format": "xtc-state", "version": 1, "tensors": "../../" + os.path.basename(marker),
                   "sha256": "0", "state": {"__reduce__": ["os.system", f"touch {marker}"],
                                            "py/object": "os.system", "!!python/object": marker}},
                  open(os.path.join(state_dir, STATE_JSON), "w"))
    elif how == "json with unknown tag":
        save_state(state_dir, {"x": 1}, step=1)
        doc = json.load(open(os.path.join(state_dir, STATE_JSON)))
        doc["state"] = {"__reduce__": ["builtins.open", [marker, "w"]]}
        json.dump(doc, open(os.path.join(state_dir, STATE_JSON), "w"))
    elif how == "deeply nested json":
        save_state(state_dir, {"x": 1}, step=1)
        doc = json.load(open(os.path.join(state_dir, STATE_JSON)))
        text = json.dumps(doc).replace('"state": {"x": 1}', '"state": ' + "[" * 100_000 + "]" * 100_000)
        open(os.path.join(state_dir, STATE_JSON), "w").write(text)


@pytest.mark.parametrize("how", ["pickle named state.pt", "pickle named state.json", "pickle as the tensors file",
                                 "json with object tags", "json with unknown tag", "deeply nested json"])
def test_crafted_state_file_runs_no_code(tmp_path, tiny_model_dir, glue_dir, monkeypatch, capsys, how):
    marker = str(tmp_path / "MARKER")
    with open(os.devnull, "wb"):  # the payload does run code when unpickled: the test's premise holds
        pickle.loads(pickle.dumps(_RunsCode(marker)))
    assert os.path.exists(marker)
    os.unlink(marker)
    out = _unfinished_run(tmp_path, tiny_model_dir, glue_dir, monkeypatch)
    _crafted(os.path.join(out, STATE_DIR), how, marker)
    code = main(["finetune", "--task", "sst2", "--model", tiny_model_dir, "--out", out, "--glue-dir", glue_dir,
                 "--epochs", "3", "--lr", "1e-2", "--batch-size", "16", "--eval-every", "3", "--warmup-epochs", "0.5",
                 "--seed", "5", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot resume from" in err and "--overwrite" in err
    assert not os.path.exists(marker)
    with pytest.raises(StateFileError):
        load_state(os.path.join(out, STATE_DIR))
    assert not os.path.exists(marker)


def test_no_pickle_loader_on_user_paths():
    """Nothing in the package may unpickle: torch.load, pickle, or NumPy with allow_pickle."""
    root = os.path.join(os.path.dirname(__file__), "..", "xtc")
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                text = open(os.path.join(folder, name)).read()
                for bad in ("torch.load(", "import pickle", "pickle.load", "allow_pickle=True", "weights_only=False"):
                    assert bad not in text, f"{name} uses {bad}"


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


def test_failed_or_killed_run_never_blocks_a_retry(tmp_path, tiny_model_dir, glue_dir, monkeypatch):
    out = tmp_path / "retry"
    (out / STATE_DIR).mkdir(parents=True)  # killed before its first checkpoint
    rec = finetune("sst2", tiny_model_dir, str(out), TrainConfig(epochs=1, batch_size=16), RunOptions(glue_dir=glue_dir,
                   quiet=True))
    assert rec["steps"] == 4 and not (out / STATE_DIR).exists()
    # a corrupted state: refused without --overwrite, recovered with it
    out2 = _unfinished_run(tmp_path, tiny_model_dir, glue_dir, monkeypatch)
    with open(os.path.join(out2, STATE_DIR, STATE_JSON), "w") as f:
        f.write("{not json")
    with pytest.raises(StateFileError, match="not valid JSON"):
        _run(tiny_model_dir, out2, glue_dir)
    rec = finetune("sst2", tiny_model_dir, out2, CFG, RunOptions(glue_dir=glue_dir, overwrite=True, quiet=True))
    assert rec["steps"] == 12
    # a bad input fails before anything is created: no folder to block the retry
    bad = tmp_path / "bad"
    assert main(["finetune", "--task", "sst2", "--model", tiny_model_dir, "--out", str(bad),
                 "--glue-dir", str(tmp_path / "no_glue"), "--quiet"]) == 2
    assert not bad.exists()


def test_stale_temp_files_are_cleaned_by_the_next_run(tmp_path, tiny_model_dir, glue_dir, monkeypatch):
    out = tmp_path / "run"
    interrupt_after_checkpoints(monkeypatch, 1, lambda: _run(tiny_model_dir, str(out), glue_dir))
    stale = [out / f"metrics.json.tmp{DEAD_PID}", out / STATE_DIR / f".state.json.tmp{DEAD_PID}",
             out / f".metrics.json.{DEAD_PID}.tmp"]
    live = out / "metrics.json.tmp1"  # pid 1 is running: its temp file is left alone
    for p in stale + [live]:
        p.write_text("partial")
    _run(tiny_model_dir, str(out), glue_dir)  # the resumed run
    assert not any(p.exists() for p in stale) and live.read_text() == "partial"
    live.unlink()
    # a finished folder with a leftover temp of a killed final save: the next run of the command removes it
    (out / f"metrics.json.tmp{DEAD_PID}").write_text("partial")
    with pytest.raises(RunFolderError, match="finished run"):
        _run(tiny_model_dir, str(out), glue_dir)
    assert not (out / f"metrics.json.tmp{DEAD_PID}").exists()


@pytest.fixture(scope="module")
def quantized_student(tmp_path_factory, tiny_model_dir, glue_dir):
    out = str(tmp_path_factory.mktemp("robust") / "w1a8")
    compress("sst2", tiny_model_dir, out, TrainConfig(epochs=1, lr=1e-3, batch_size=16), QuantSpec(wbits=1, abits=8),
             CompressConfig(layers=2), run=RunOptions(glue_dir=glue_dir, quiet=True))
    return out


def test_packed_file_is_recognised_by_content_whatever_its_name(tmp_path, capsys, quantized_student, glue_dir):
    packed = tmp_path / "student.packed"
    stale = tmp_path / f".student.packed.{DEAD_PID}.tmp"  # a killed export's temp
    stale.write_bytes(b"partial")
    assert main(["export", "--model", quantized_student, "--out", str(packed)]) == 0
    capsys.readouterr()
    assert not stale.exists() and sorted(os.listdir(tmp_path)) == ["student.packed"]
    assert main(["size", "--model", str(packed)]) == 0
    assert json.loads(capsys.readouterr().out)["file_bytes"] == packed.stat().st_size
    assert main(["evaluate", "--model", str(packed), "--task", "sst2", "--glue-dir", glue_dir]) == 0  # integer path
    assert "accuracy" in json.loads(capsys.readouterr().out)["metrics"]
    preds = {}
    for name, path in (("packed", str(packed)), ("folder", quantized_student)):
        assert main(["evaluate", "--model", path, "--task", "sst2", "--glue-dir", glue_dir, "--predictions",
                     "--fake-quant"]) == 0
        preds[name] = json.loads(capsys.readouterr().out)["predictions"]
    assert preds["packed"] == preds["folder"]  # the fake-quant model it was exported from, bit for bit
    # a file that is not a packed model, even named .xtc, is a one-line error naming it
    fake = tmp_path / "fake.xtc"
    fake.write_text("not a zip")
    for cmd in (["size", "--model", str(fake)], ["evaluate", "--model", str(fake), "--task", "sst2",
                                                  "--glue-dir", glue_dir]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert str(fake) in err and err.count("\n") == 1


def test_unfinished_run_folder_is_not_loaded_as_a_model(tmp_path, tiny_model_dir, glue_dir, capsys):
    out = tmp_path / "half"
    shutil.copytree(tiny_model_dir, out)
    (out / STATE_DIR).mkdir()  # killed during its final save: weights there, metrics.json not yet
    assert main(["evaluate", "--model", str(out), "--task", "sst2", "--glue-dir", glue_dir]) == 2
    assert "unfinished xtc run" in capsys.readouterr().err


def test_overwrite_replaces_a_finished_run_only_once_the_new_one_checkpoints(tmp_path, tiny_model_dir, glue_dir,
                                                                           monkeypatch):
    out = str(tmp_path / "run")
    finetune("sst2", tiny_model_dir, out, TrainConfig(epochs=1, batch_size=16), RunOptions(glue_dir=glue_dir, quiet=True))
    open(os.path.join(out, "stale_extra.bin"), "w").write("from the old run")
    # killed during the first step (before any checkpoint): the finished run is intact
    import xtc.finetune as ft

    def killed(model, batch):
        raise KeyboardInterrupt

    monkeypatch.setattr(ft, "label_objective", killed)
    with pytest.raises(KeyboardInterrupt):
        finetune("sst2", tiny_model_dir, out, CFG, RunOptions(glue_dir=glue_dir, overwrite=True, quiet=True))
    assert json.load(open(os.path.join(out, "metrics.json")))["config"]["epochs"] == 1
    monkeypatch.undo()
    rec = finetune("sst2", tiny_model_dir, out, CFG, RunOptions(glue_dir=glue_dir, overwrite=True, quiet=True))
    assert rec["config"]["epochs"] == 3 and json.load(open(os.path.join(out, "metrics.json")))["steps"] == 12
    assert not os.path.exists(os.path.join(out, "stale_extra.bin"))  # the old run is gone, not mixed in


def test_killed_augment_temp_is_cleaned_by_the_next_run(tmp_path, tiny_model_dir, glue_dir):
    from xtc.augment import augment

    out = tmp_path / "aug.jsonl"
    stale, live = tmp_path / f".aug.jsonl.{DEAD_PID}.tmp", tmp_path / ".aug.jsonl.1.tmp"  # pid 1 is running
    stale.write_text("partial")
    live.write_text("partial")
    augment("sst2", tiny_model_dir, str(out), AugmentConfig(copies=1, max_train_samples=4), glue_dir=glue_dir, quiet=True)
    assert not stale.exists() and live.exists() and len(out.read_text().splitlines()) == 8


# ---------------------------------------------------------------- faults of the machine (issue 28)
HOLD = """import sys, time
from xtc.files import exclusive_writer
with exclusive_writer(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_second_command_on_a_run_folder_exits_2_naming_the_pid(tmp_path, tiny_model_dir, glue_dir, capsys):
    out = str(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, out], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"  # another `xtc finetune --out run` is writing it
        for cmd in (["finetune", "--task", "sst2", "--model", tiny_model_dir],
                    ["compress", "--task", "sst2", "--teacher", tiny_model_dir, "--wbits", "1"]):
            assert main(cmd + ["--out", out, "--glue-dir", glue_dir, "--quiet"]) == 2
            err = capsys.readouterr().err
            assert f"run folder {out} is being written by another process (PID {holder.pid}" in err
            assert err.count("\n") == 1 and not os.path.exists(out)
    finally:
        holder.kill()
        holder.wait()
    assert main(["finetune", "--task", "sst2", "--model", tiny_model_dir, "--out", out, "--glue-dir", glue_dir,
                 "--epochs", "1", "--batch-size", "16", "--quiet"]) == 0  # the holder died: the retry runs


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_at_the_final_save_keeps_the_checkpoint_and_the_retry_only_saves(tmp_path, tiny_model_dir,
                                                                                   glue_dir, monkeypatch, capsys):
    from safetensors import SafetensorError

    def disk_full(self, path, *args, **kwargs):  # what safetensors raises (not an OSError), after config.json
        open(os.path.join(path, "config.json"), "w").write("{}")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    out = str(tmp_path / "run")
    cmd = ["finetune", "--task", "sst2", "--model", tiny_model_dir, "--out", out, "--glue-dir", glue_dir,
           "--epochs", "1", "--batch-size", "16", "--quiet"]
    monkeypatch.setattr(BertForSequenceClassification, "save_pretrained", disk_full)
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"xtc finetune: error: cannot write the final model to {out}: no space left on device "
                          "(needs about ") and err.count("\n") == 1
    assert os.listdir(out) == [STATE_DIR]  # no partial model files; the trained run kept as a checkpoint
    monkeypatch.undo()
    steps = []
    monkeypatch.setattr(train_mod, "train_step", lambda *a, **k: steps.append(1))  # the retry must not train
    assert main(cmd) == 0
    assert not steps and json.load(open(os.path.join(out, "metrics.json")))["steps"] == 4


def test_full_disk_at_the_first_checkpoint_of_an_overwrite_keeps_the_finished_run(tmp_path, tiny_model_dir,
                                                                                 glue_dir, monkeypatch, capsys):
    out = str(tmp_path / "run")
    finetune("sst2", tiny_model_dir, out, TrainConfig(epochs=1, batch_size=16), RunOptions(glue_dir=glue_dir, quiet=True))
    before = {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out)}
    monkeypatch.setattr(os, "fsync", _enospc)  # every atomic write fails as on a full disk
    cmd = ["finetune", "--task", "sst2", "--model", tiny_model_dir, "--out", out, "--glue-dir", glue_dir,
           "--epochs", "2", "--batch-size", "16", "--quiet", "--overwrite"]
    assert main(cmd) == 2
    assert "cannot write the checkpoint to" in capsys.readouterr().err
    assert {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out)} == before  # untouched
    monkeypatch.undo()
    assert main(cmd) == 0 and json.load(open(os.path.join(out, "metrics.json")))["steps"] == 8


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs (needs root; CI runs as root) and a function that fills it to the last byte."""
    if os.geteuid() != 0:
        pytest.skip("a full disk is a small tmpfs, which needs root (CI runs as root)")
    fs = tmp_path / "fs"
    fs.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(fs)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (no mount permission in this container)")

    def fill():
        with open(fs / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass

    try:
        yield str(fs), fill
    finally:
        subprocess.run(["umount", "-l", str(fs)])


def test_full_disk_at_the_first_checkpoint_and_at_export_leaves_nothing(small_fs, tiny_model_dir, glue_dir,
                                                                        quantized_student, capsys):
    fs, fill = small_fs
    fill()
    out = os.path.join(fs, "run")
    train = ["finetune", "--task", "sst2", "--model", tiny_model_dir, "--out", out, "--glue-dir", glue_dir,
             "--epochs", "1", "--batch-size", "16", "--quiet"]
    export = ["export", "--model", quantized_student, "--out", os.path.join(fs, "s.xtc")]
    for cmd, what in ((train, f"the checkpoint to {out}/.xtc_state/"), (export, "the packed model to")):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert f"cannot write {what}" in err and "no space left on device (" in err and err.count("\n") == 1
        assert os.listdir(fs) == ["filler"]  # no empty .xtc_state/, run folder, temp or lock file
    os.unlink(os.path.join(fs, "filler"))
    assert main(train) == 0 and main(export) == 0  # space freed: the same commands complete


def test_read_only_output_folder_is_one_line_and_writes_nothing(tmp_path, tiny_model_dir, glue_dir, capsys):
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root (root ignores permission bits otherwise)")
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "--bind", str(ro), str(ro)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro), str(ro)], check=True)
        assert main(["finetune", "--task", "sst2", "--model", tiny_model_dir, "--out", str(ro / "run"),
                     "--glue-dir", glue_dir, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "Read-only file system" in err and err.count("\n") == 1 and os.listdir(ro) == []
    finally:
        subprocess.run(["umount", str(ro)])


def test_truncated_model_weights_are_one_line_naming_the_folder(tmp_path, quantized_student, glue_dir, capsys):
    dam = tmp_path / "damaged"
    shutil.copytree(quantized_student, dam)
    weights = dam / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    for cmd in (["evaluate", "--model", str(dam), "--task", "sst2", "--glue-dir", glue_dir],
                ["export", "--model", str(dam), "--out", str(tmp_path / "d.xtc")],
                ["compress", "--task", "sst2", "--teacher", str(dam), "--out", str(tmp_path / "s"),
                 "--glue-dir", glue_dir]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert f"cannot load the weights in {dam}: its model.safetensors is truncated or corrupted" in err
        assert err.count("\n") == 1 and "--overwrite" in err
    assert sorted(os.listdir(tmp_path)) == ["damaged"]
