"""Tests of xtc/finetune.py: a teacher fine-tuned end to end, its record, exact resume, the run folders it refuses."""
import json
import os

import pytest

from conftest import TEACHER_CFG as CFG, interrupt_after_checkpoints
from xtc.cli import main
from xtc.config import RunOptions
from xtc.files import STATE_DIR
from xtc.finetune import finetune
from xtc.run_folder import RunFolderError


def test_finetune_outputs_and_reload(teacher, glue_dir, capsys):
    rec = json.load(open(os.path.join(teacher, "metrics.json")))
    for key in ("task", "selection_metric", "metrics", "history", "config", "versions", "wall_seconds",
                "train_samples_per_second", "train_tokens_per_second"):
        assert key in rec
    assert rec["task"] == "sst2" and isinstance(rec["metrics"]["accuracy"], float)
    assert rec["config"]["lr"] == CFG.lr and rec["steps"] == 8 * 4  # 64 examples / 16 per batch, 8 epochs
    # evaluations: every 5 steps and at each epoch end (4 steps)
    assert [h["step"] for h in rec["history"]] == [4, 5, 8, 10, 12, 15, 16, 20, 24, 25, 28, 30, 32]
    losses = [h["train"]["loss"] for h in rec["history"]]
    assert losses[-1] < 0.5 * losses[0]  # it learns
    # the kept checkpoint is the first best on the validation rows held out of the training split (issue 23)
    assert rec["selected_by"] == "validation" and rec["config"]["train_size"] == 64 - 12  # a fifth held out
    best = max(rec["history"], key=lambda h: h["validation"]["accuracy"])
    assert (rec["best_step"], rec["metrics"], rec["validation_metrics"]) == (best["step"], best["metrics"],
                                                                         best["validation"])
    # the synthetic task is learnable: the teacher beats chance
    assert rec["metrics"]["accuracy"] > 0.7
    # the saved model reproduces the kept checkpoint's dev metrics
    code = main(["evaluate", "--model", teacher, "--task", "sst2", "--glue-dir", glue_dir])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == rec["metrics"]


def test_same_seed_same_result_and_exact_resume(tmp_path, tiny_model_dir, glue_dir, monkeypatch, teacher):
    full = json.load(open(os.path.join(teacher, "metrics.json")))
    # Interrupt right after the third checkpoint (step 8), then resume from there...
    out = str(tmp_path / "resumed")
    interrupt_after_checkpoints(monkeypatch, 3,
                                lambda: finetune("sst2", tiny_model_dir, out, CFG,
                                                 run=RunOptions(glue_dir=glue_dir, quiet=True)))
    assert not os.path.exists(os.path.join(out, "metrics.json"))  # nothing that looks finished
    # ...then the same command resumes and ends exactly where the uninterrupted run ended.
    resumed = finetune("sst2", tiny_model_dir, out, CFG, run=RunOptions(glue_dir=glue_dir, quiet=True))
    assert resumed["metrics"] == full["metrics"]
    assert [h["train"]["loss"] for h in resumed["history"]] == [h["train"]["loss"] for h in full["history"]]
    assert not os.path.exists(os.path.join(out, STATE_DIR))


def test_run_folder_protection(tmp_path, tiny_model_dir, glue_dir, teacher):
    with pytest.raises(RunFolderError, match="already holds a finished run"):
        finetune("sst2", tiny_model_dir, teacher, CFG, run=RunOptions(glue_dir=glue_dir, quiet=True))
    other = tmp_path / "user_stuff"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not empty and holds no xtc run"):
        finetune("sst2", tiny_model_dir, str(other), CFG, run=RunOptions(glue_dir=glue_dir, quiet=True))
    assert (other / "notes.txt").read_text() == "mine"
