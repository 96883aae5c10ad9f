"""The `xtc` command as a user runs it: JSON on stdout, one-line errors, non-zero exits."""
import json
import os

import pytest

from xtc.cli import main
from xtc.compress import CompressConfig, compress
from xtc.config import RunOptions
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
             run=RunOptions(glue_dir=glue_dir, quiet=True),
             )
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
    # a .xtc runs on the integer path by default, and evaluating the trained folder runs its quantized layers
    # on the same integer maths: identical logits, not just argmax (the reported metrics are the deployed ones)
    assert preds["integer"]["path"] == "integer"
    assert preds["folder"]["predictions"] == preds["integer"]["predictions"]
    # --fake-quant: the fp32 fake-quant maths, equal to fp32 rounding
    assert preds["folder"]["metrics"] == preds["packed"]["metrics"] == preds["integer"]["metrics"]
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


# ----------------------------------------------------------------------------- settings: one home
OLD_FLAGS = {  # every flag the workflow and users pass, spelled as before the CLI was generated
    "finetune": "--task --model --out --epochs --lr --batch-size --eval-batch-size --max-seq-length --weight-decay "
                "--warmup-epochs --eval-every --seed --no-group-by-length --glue-dir --max-train-samples "
                "--max-eval-samples --device --overwrite --quiet",
    "compress": "--task --teacher --out --init --layers --teacher-layers --wbits --abits --groups --embedding-bits "
                "--quant-roles --quant-method --act-per-tensor --kd --kd-terms --stage1-share --stage1-lr-factor "
                "--logit-weight --hidden-weight --attention-weight --temperature --teacher-cache-gb --train-file "
                "--epochs --lr --batch-size --eval-batch-size --max-seq-length --weight-decay --warmup-epochs "
                "--eval-every --seed --no-group-by-length --glue-dir --max-train-samples --max-eval-samples --device "
                "--overwrite --quiet",
    "evaluate": "--model --task --glue-dir --max-eval-samples --max-seq-length --batch-size --device --predictions",
    "augment": "--task --teacher --out --copies --replace-prob --candidates --seed --glue-dir --max-train-samples "
               "--pair-mode --replace-stop-words --overwrite --quiet",
}


def _parsed(argv):
    from xtc.cli import build_parser
    from xtc.settings import build_settings

    return build_settings(build_parser().parse_args(argv))


@pytest.mark.parametrize("command", sorted(OLD_FLAGS))
def test_every_flag_kept_and_defaults_are_the_dataclasses(command):
    from xtc.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices[command]
    have = {s for a in sub._actions for s in a.option_strings}
    assert set(OLD_FLAGS[command].split()) <= have
    if command == "compress":
        from xtc.config import KDConfig, RunOptions

        a = _parsed(["compress", "--task", "sst2", "--teacher", "t", "--out", "o"])
        assert (a.train, a.quant, a.compress, a.kd, a.run) == (TrainConfig(), QuantSpec(), CompressConfig(),
                                                                KDConfig(), RunOptions())
        a = _parsed(["compress", "--task", "sst2", "--teacher", "t", "--out", "o", "--quant-roles", "query, key",
                     "--act-per-tensor", "--no-group-by-length", "--kd-terms", "logit", "--temperature", "2",
                     "--init", "s1", "--epochs", "0.5"])
        assert a.quant.roles == ("query", "key") and not a.quant.act_per_token and not a.train.group_by_length
        assert a.compress.kd_terms == ("logit",) and a.kd.temperature == 2.0 and a.compress.init == "s1"
        assert a.train.epochs == 0.5 and a.train.lr == TrainConfig().lr
    if command == "evaluate":  # --batch-size here is the evaluation batch
        a = _parsed(["evaluate", "--model", "m", "--task", "sst2", "--batch-size", "7"])
        assert a.train.eval_batch_size == 7 and a.train.max_seq_length == TrainConfig().max_seq_length
    if command == "augment":
        from xtc.config import AugmentConfig

        assert _parsed(["augment", "--task", "rte", "--teacher", "t", "--out", "o"]).augment == AugmentConfig()


@pytest.mark.parametrize("args, flag, allowed", [
    (["--epochs", "inf"], "--epochs", "> 0 and finite"),
    (["--epochs", "nan"], "--epochs", "> 0 and finite"),
    (["--epochs", "0"], "--epochs", "> 0"),
    (["--lr=-5e-5"], "--lr", "> 0"),
    (["--max-train-samples", "0"], "--max-train-samples", "an integer > 0"),
    (["--max-eval-samples", "-3"], "--max-eval-samples", "an integer > 0"),
    (["--abits", "4"], "--abits", "8, 32"),
    (["--wbits", "16"], "--wbits", "1, 2, 3, 4, 5, 6, 7, 8, 32"),
    (["--weight-decay=-1"], "--weight-decay", ">= 0"),
    (["--warmup-epochs=-2"], "--warmup-epochs", ">= 0"),
    (["--batch-size", "0"], "--batch-size", "an integer > 0"),
    (["--max-grad-norm", "inf"], "--max-grad-norm", "> 0 and finite"),
    (["--eval-every=-1"], "--eval-every", ">= 0"),
    (["--stage1-share", "1"], "--stage1-share", "in (0, 1)"),
    (["--temperature", "0"], "--temperature", "> 0"),
    (["--hidden-weight", "nan"], "--hidden-weight", ">= 0"),
    (["--teacher-cache-gb=-1"], "--teacher-cache-gb", ">= 0"),
    (["--kd-terms", "logit,logits"], "--kd-terms", "logit, hidden, attention"),
    (["--quant-roles", "query,pooler"], "--quant-roles", "word_embeddings"),
    (["--kd", "three-stage"], "--kd", "'none', 'one-stage', 'two-stage'"),
    (["--groups", "0"], "--groups", "an integer > 0"),
    (["--seed", "1.5"], "--seed", "int"),
])
def test_bad_values_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, args, flag, allowed):
    out = tmp_path / "run"
    code = main(["compress", "--task", "sst2", "--teacher", str(tmp_path / "no-teacher"), "--out", str(out),
                 *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and flag in err and allowed in err, err
    assert not out.exists()  # validated before anything is written


def test_augment_and_evaluate_values_are_checked_too(tmp_path, capsys):
    out = tmp_path / "aug.jsonl"
    assert main(["augment", "--task", "rte", "--teacher", "t", "--out", str(out), "--replace-prob", "1.5"]) == 2
    assert "--replace-prob must be in [0, 1]" in capsys.readouterr().err and not out.exists()
    assert main(["evaluate", "--model", "m", "--task", "rte", "--batch-size", "0"]) == 2
    assert "--batch-size must be an integer > 0" in capsys.readouterr().err  # the flag as evaluate spells it


@pytest.mark.parametrize("args, message", [
    (["--max-seq-length", "200"], "exceeds the 128 positions of --model"),
    (["--device", "nonsense"], "is not a torch device"),
])
def test_model_and_device_checks_write_nothing(tmp_path, capsys, tiny_model_dir, glue_dir, args, message):
    out = tmp_path / "run"
    code = main(["finetune", "--task", "sst2", "--model", tiny_model_dir, "--glue-dir", glue_dir, "--out", str(out),
                 "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and not out.exists()


def test_json_schema_of_a_setting_follows_the_dataclass():
    from xtc.config import CompressConfig, RunOptions
    from xtc.settings import json_schema

    assert json_schema(TrainConfig, "batch_size") == {"type": "integer", "default": 32, "exclusiveMinimum": 0}
    assert json_schema(QuantSpec, "abits") == {"type": "integer", "default": 32, "enum": [8, 32]}
    assert json_schema(CompressConfig, "stage1_share") == {"type": "number", "default": 0.5, "exclusiveMinimum": 0,
                                                           "exclusiveMaximum": 1}
    assert json_schema(RunOptions, "max_train_samples") == {"type": ["integer", "null"], "default": None,
                                                            "exclusiveMinimum": 0}


def test_negative_numbers_after_flags_are_values():
    from xtc.cli import join_negative_values

    assert join_negative_values(["finetune", "--lr", "-5e-5", "--epochs", "2"]) == ["finetune", "--lr=-5e-5", "--epochs", "2"]
    assert join_negative_values(["--weight-decay", "-.5", "--lr", "-1E+3"]) == ["--weight-decay=-.5", "--lr=-1E+3"]
    # not a number, a flag already holding its value, a short option: untouched
    assert join_negative_values(["--out", "-x", "--lr=1", "-5", "-h"]) == ["--out", "-x", "--lr=1", "-5", "-h"]
