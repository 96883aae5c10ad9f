"""The `xtc` command as a user runs it: JSON on stdout, one-line errors, non-zero exits."""
import json
import os

import pytest

from xtc.cli import main
from xtc.compress import CompressConfig, compress
from xtc.quant import QuantSpec
from xtc.train import TrainConfig


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_tasks_and_data_stats(capsys, glue_dir):
    assert main(["tasks", "--json"]) == 0
    assert {t["task"] for t in _json(capsys)} >= {"mnli", "qqp", "wnli"}
    assert main(["data", "stats", "--task", "rte", "--glue-dir", glue_dir]) == 0
    stats = _json(capsys)["splits"]
    assert stats["train"]["size"] == 64 and sum(stats["dev"]["label_counts"].values()) == 32


@pytest.fixture(scope="module")
def quantized_student(tmp_path_factory, tiny_model_dir, glue_dir):
    root = tmp_path_factory.mktemp("cli")
    cfg = TrainConfig(epochs=1, lr=1e-3, batch_size=16)
    out = str(root / "w1a8")
    compress("rte", tiny_model_dir, out, cfg, QuantSpec(wbits=1, abits=8), CompressConfig(layers=2),
             glue_dir=glue_dir, quiet=True)
    return out


def test_export_size_evaluate_packed_gives_identical_predictions(tmp_path, capsys, quantized_student, glue_dir,
                                                                  tiny_model_dir):
    packed = str(tmp_path / "student.xtc")
    assert main(["export", "--model", quantized_student, "--out", packed]) == 0
    report = _json(capsys)
    assert report["file_bytes"] == os.path.getsize(packed)
    assert main(["size", "--model", packed, "--teacher", tiny_model_dir]) == 0
    size = _json(capsys)
    assert size["file_bytes"] == os.path.getsize(packed) and size["weights_bytes"] < size["file_bytes"]
    assert size["ratio_to_teacher"] == size["teacher_fp32_bytes"] / size["weights_bytes"] > 1
    preds = {}
    for name, path, flags in (("folder", quantized_student, []), ("packed", packed, ["--fake-quant"]),
                              ("integer", packed, [])):
        assert main(["evaluate", "--model", path, "--task", "rte", "--glue-dir", glue_dir, "--predictions",
                     *flags]) == 0
        preds[name] = _json(capsys)
    assert preds["folder"]["metrics"] == preds["packed"]["metrics"]
    assert preds["folder"]["predictions"] == preds["packed"]["predictions"]  # identical logits, not just argmax
    # a .xtc runs on the integer path by default: same labels, logits equal to fp32 rounding
    assert preds["integer"]["path"] == "integer" and preds["integer"]["metrics"] == preds["packed"]["metrics"]
    for a, b in zip(preds["integer"]["predictions"]["dev"], preds["packed"]["predictions"]["dev"]):
        assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4
    # exporting again onto the same file is refused: nothing is overwritten silently
    assert main(["export", "--model", quantized_student, "--out", packed]) == 2
    assert "exists" in capsys.readouterr().err


def test_export_rejects_fp32_model_and_bad_paths(tmp_path, capsys, tiny_model_dir):
    assert main(["export", "--model", tiny_model_dir, "--out", str(tmp_path / "x.xtc")]) == 2
    assert "not quantized" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tmp_path / "nope"), "--task", "rte"]) == 2
    assert "cannot load a BERT model" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x.xtc")


def test_corrupted_packed_file_is_a_clear_error(tmp_path, capsys, quantized_student, glue_dir):
    packed = tmp_path / "s.xtc"
    assert main(["export", "--model", quantized_student, "--out", str(packed)]) == 0
    capsys.readouterr()
    data = bytearray(packed.read_bytes())
    packed.write_bytes(bytes(data[: len(data) // 2]))  # truncated download
    assert main(["evaluate", "--model", str(packed), "--task", "rte", "--glue-dir", glue_dir]) == 2
    assert str(packed) in capsys.readouterr().err
