"""Tests of xtc/compress.py, end to end on a tiny random BERT and synthetic GLUE files: layer reduction and 1-bit
QAT with KD (one-stage, two-stage, none), a step-1 init, a training file, selection on validation rows."""
import json
import os

import pytest
import torch

from conftest import TEACHER_CFG as CFG
from xtc.cli import main
from xtc.compress import CompressConfig, compress
from xtc.config import RunOptions
from xtc.models import load_classifier
from xtc.quant import QuantSpec, quantized_modules
from xtc.train import TrainConfig


def _logits(model, texts):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model.name_or_path)
    enc = tok(texts, return_tensors="pt", padding=True)
    model.eval()
    with torch.no_grad():
        return model(**enc).logits


def test_selection_on_validation_record_predictions_and_eval_points(tmp_path, teacher, glue_dir):
    """Two-stage KD evaluated at 4 equal fractions of both stages' steps; the record says what selected the
    checkpoint, the final checkpoint's dev score, the rows drawn; dev_predictions.json reproduces the metrics."""
    import numpy as np

    from xtc.metrics import task_metrics
    from xtc.tasks import get_task

    cfg = TrainConfig(epochs=3, lr=1e-2, batch_size=16, warmup_epochs=0.5, seed=5, eval_points=4)
    out = str(tmp_path / "two")
    rec = compress("sst2", teacher, out, cfg, QuantSpec(wbits=2), CompressConfig(kd="two-stage", layers=2),
                   run=RunOptions(glue_dir=glue_dir, quiet=True))
    assert rec["steps"] == 12 and [h["step"] for h in rec["history"]] == [3, 6, 9, 12]  # 2 stages x 6 steps
    assert [h["fraction"] for h in rec["history"]] == [0.25, 0.5, 0.75, 1.0]
    assert rec["selected_by"] == "validation" and all("validation" in h for h in rec["history"])
    assert (rec["final_step"], rec["final_metrics"]) == (12, rec["history"][-1]["metrics"])
    best = max(rec["history"], key=lambda h: h["validation"]["accuracy"])
    assert rec["best_step"] == best["step"] and rec["metrics"] == best["metrics"]
    # the same rows as the teacher's (another run seed): the draws depend on data_seed only
    teacher_rec = json.load(open(os.path.join(teacher, "metrics.json")))
    for part in ("train", "validation"):
        assert rec["data"][part]["sha256"] == teacher_rec["data"][part]["sha256"]
    assert rec["data"]["train"]["how"] == "stratified" and rec["data"]["validation"]["n"] == 12
    preds = json.load(open(os.path.join(out, "dev_predictions.json")))
    assert preds["task"] == "sst2" and len(preds["labels"]) == len(preds["selected"]) == len(preds["final"]) == 32
    task = get_task("sst2")
    for which, metrics in (("selected", rec["metrics"]), ("final", rec["final_metrics"])):
        assert task_metrics(task, {"dev": (np.array(preds[which]), preds["labels"])}) == metrics
    # --validation-samples 0: the old selection on dev, said so
    rec0 = compress("sst2", teacher, str(tmp_path / "dev"), cfg, QuantSpec(wbits=2), CompressConfig(layers=2),
                    run=RunOptions(glue_dir=glue_dir, quiet=True, validation_samples=0, subset="first"))
    assert rec0["selected_by"] == "dev" and rec0["validation_metrics"] is None and rec0["data"]["validation"] is None
    assert rec0["metrics"] == max(rec0["history"], key=lambda h: h["metrics"]["accuracy"])["metrics"]
    assert rec0["data"]["train"]["how"] == "first" and rec0["config"]["train_size"] == 64


def test_compress_one_bit_reduced_student(tmp_path, teacher, glue_dir):
    out = str(tmp_path / "student")
    spec = QuantSpec(wbits=1, abits=8)
    rec = compress("sst2", teacher, out, CFG, spec, CompressConfig(kd="one-stage", layers=2),
                   run=RunOptions(glue_dir=glue_dir, quiet=True))
    assert rec["layers"] == {"student": 2, "teacher": 4, "teacher_layers": [1, 3]}
    assert set(rec["loss_terms"]) >= {"loss", "logit", "hidden", "attention"}
    assert rec["quantization"]["wbits"] == 1 and rec["kd"] == "one-stage"
    assert rec["size"]["quantized_bytes"] < rec["size"]["fp32_bytes"]
    # the saved student reloads as the same fake-quant model: same dev metrics, wrappers re-applied
    student = load_classifier(out)
    assert len(list(quantized_modules(student))) == 2 * 6 + 1
    res = {}
    from xtc.data import encode, load_split
    from xtc.tasks import get_task
    from xtc.train import evaluate

    task = get_task("sst2")
    dev = {"dev": encode(load_split(task, "dev", glue_dir), student_tok(out), 128)}
    res = evaluate(student, task, dev, 128, torch.device("cpu"))
    assert res == rec["metrics"]


def student_tok(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_two_stage_and_no_kd(tmp_path, teacher, glue_dir):
    rec = compress("sst2", teacher, str(tmp_path / "two"), CFG, QuantSpec(wbits=2, abits=8),
                   CompressConfig(kd="two-stage"), run=RunOptions(glue_dir=glue_dir, quiet=True))
    stages = [h["stage"] for h in rec["history"]]
    assert stages[0] == "kd-intermediate" and stages[-1] == "kd-logits"
    assert set(rec["history"][0]["train"]) == {"loss", "hidden", "attention"}
    assert set(rec["history"][-1]["train"]) == {"loss", "logit"}
    rec = compress("sst2", teacher, str(tmp_path / "none"), CFG, QuantSpec(), CompressConfig(kd="none"),
                   run=RunOptions(glue_dir=glue_dir, quiet=True),
                   )
    assert set(rec["loss_terms"]) == {"loss", "label"}


def test_compress_from_step1_init(tmp_path, teacher, glue_dir):
    step1 = str(tmp_path / "step1")
    compress("sst2", teacher, step1, CFG, QuantSpec(), CompressConfig(teacher_layers="0,2"),
             run=RunOptions(glue_dir=glue_dir, quiet=True))
    rec = compress("sst2", teacher, str(tmp_path / "step2"), CFG, QuantSpec(wbits=1, abits=8),
                   CompressConfig(init=step1), run=RunOptions(glue_dir=glue_dir, quiet=True))
    assert rec["layers"]["teacher_layers"] == [0, 2]
    assert rec["layer_map"]["attention"] == [[0, 0], [1, 2]] or rec["layer_map"]["attention"] == [(0, 0), (1, 2)]
    with pytest.raises(ValueError, match="was reduced to teacher layers"):
        compress("sst2", teacher, str(tmp_path / "bad"), CFG, QuantSpec(wbits=1), CompressConfig(layers=3, init=step1),
                 run=RunOptions(glue_dir=glue_dir, quiet=True))


@pytest.mark.parametrize("args, message", [
    (["--wbits", "16"], "wbits"),
    (["--layers", "9"], "cannot pick 9 layers from a 4-layer teacher"),
    (["--teacher-layers", "3,1"], "not strictly increasing"),
    (["--kd", "none", "--train-file", "x.jsonl"], "carry no labels"),
])
def test_cli_errors_are_one_clear_line(tmp_path, teacher, glue_dir, capsys, args, message):
    code = main(["compress", "--task", "sst2", "--teacher", teacher, "--out", str(tmp_path / "o"),
                 "--glue-dir", glue_dir, "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not os.path.exists(tmp_path / "o" / "metrics.json")


def test_train_file_replaces_training_inputs(tmp_path, teacher, glue_dir):
    f = tmp_path / "aug.jsonl"
    f.write_text("".join(json.dumps({"text_a": t}) + "\n" for t in ["good fun movie", "bad boring plot"] * 8))
    rec = compress("sst2", teacher, str(tmp_path / "da"), CFG, QuantSpec(wbits=1, abits=8),
                   CompressConfig(train_file=str(f)), run=RunOptions(glue_dir=glue_dir, quiet=True))
    assert rec["config"]["train_size"] == 16
    f.write_text('{"text_b": 1}\n')
    with pytest.raises(ValueError, match=r"aug.jsonl:1: expected a JSON object"):
        compress("sst2", teacher, str(tmp_path / "da2"), CFG, QuantSpec(wbits=1), CompressConfig(train_file=str(f)),
                 run=RunOptions(glue_dir=glue_dir, quiet=True))
