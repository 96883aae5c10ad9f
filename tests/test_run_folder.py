"""Tests of xtc/run_folder.py: a run folder's life and its failure modes. A failed or killed run never blocks its
retry, temp files of killed commands are cleaned, an overwrite replaces a finished run only once the new one
checkpoints, a second command on the same folder is refused, a full disk or a read-only folder loses nothing."""
import errno
import json
import os
import subprocess
import sys

import pytest
from transformers import BertForSequenceClassification

import xtc.train as train_mod
from conftest import DEAD_PID, interrupt_after_checkpoints
from test_models import quantized_student  # noqa: F401 (a fixture)
from xtc.checkpoint import STATE_JSON, StateFileError
from xtc.cli import main
from xtc.config import RunOptions
from xtc.files import STATE_DIR
from xtc.finetune import finetune
from xtc.run_folder import RunFolderError
from xtc.train import TrainConfig

CFG = TrainConfig(epochs=3, lr=1e-2, batch_size=16, eval_every=3, warmup_epochs=0.5, seed=5)


def _run(model_dir, out, glue_dir):
    return finetune("sst2", model_dir, out, CFG, RunOptions(glue_dir=glue_dir, quiet=True))


def _unfinished_run(tmp_path, tiny_model_dir, glue_dir, monkeypatch) -> str:
    out = str(tmp_path / "run")
    interrupt_after_checkpoints(monkeypatch, 1, lambda: _run(tiny_model_dir, out, glue_dir))
    return out


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
def small_fs(tmpfs):
    """A 4 MiB tmpfs and a function that fills it to the last byte."""
    fs, fill, _ = tmpfs("4m")
    return fs, fill


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


def test_finish_run_without_a_resume_state(tiny_model, tmp_path):
    from conftest import make_tiny_model_dir
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(make_tiny_model_dir(str(tmp_path / "tok")))
    out = tmp_path / "done"
    out.mkdir()
    from xtc.run_folder import finish_run

    rec = finish_run(str(out), tiny_model, tok, {"metrics": {"accuracy": 1.0}})
    assert rec == {"metrics": {"accuracy": 1.0}} and (out / "metrics.json").is_file()


# ---------------------------------------------------------------- pinned by mutation testing (issue 14)


def test_versions_name_python_and_each_package_installed():
    import importlib.metadata as md
    import platform

    from xtc.run_folder import versions

    v = versions()
    assert v["python"] == platform.python_version()
    for pkg in ("xtc-bench", "torch", "transformers", "datasets", "scikit-learn", "scipy", "numpy"):
        assert v[pkg] == md.version(pkg)
    assert len(v) == 8
