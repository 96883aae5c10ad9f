"""Tests of xtc/models.py: what a --model path may be (a run folder, a packed file), and one line when it is not
loadable."""
import json
import os
import shutil

import pytest

from conftest import DEAD_PID
from xtc.cli import main
from xtc.compress import CompressConfig, compress
from xtc.config import RunOptions
from xtc.files import STATE_DIR
from xtc.quant import QuantSpec
from xtc.train import TrainConfig
import torch


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


def test_a_half_precision_checkpoint_loads_as_fp32(tmp_path, tiny_model_dir):
    # transformers 5 keeps a checkpoint's dtype; latent weights and optimizer state must still be fp32
    from transformers import BertForSequenceClassification

    from xtc.models import load_classifier

    half = str(tmp_path / "half")
    BertForSequenceClassification.from_pretrained(tiny_model_dir).to(torch.float16).save_pretrained(half)
    assert {p.dtype for p in BertForSequenceClassification.from_pretrained(half).parameters()} == {torch.float16}
    assert {p.dtype for p in load_classifier(half).parameters()} == {torch.float32}
