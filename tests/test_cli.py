"""Tests of xtc/cli.py: the `xtc` command as a user runs it: JSON on stdout, one-line errors, non-zero exits, and
the table of bad inputs to every command."""
import hashlib
import json
import os
import shutil

import pytest

from conftest import make_tiny_model_dir
from xtc.cli import main
from xtc.compress import CompressConfig, compress
from xtc.config import RunOptions
from xtc.distill import KDConfig
from xtc.files import STATE_DIR
from xtc.finetune import finetune
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


# ---------------------------------------------------------------- pins (issue 14's mutation check)


def test_cli_passes_every_kd_setting(monkeypatch, tmp_path):
    """Bug: the CLI ignoring --temperature (or swapping the KD weights)."""
    import xtc.compress as compress_mod

    seen = {}

    def capture(*args, **kwargs):
        seen["kd"] = args[6]
        raise ValueError("captured")

    monkeypatch.setattr(compress_mod, "compress", capture)
    code = main(["compress", "--task", "sst2", "--teacher", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--temperature", "3.5", "--logit-weight", "0.25", "--hidden-weight", "2", "--attention-weight", "4"])
    assert code == 2
    assert seen["kd"] == KDConfig(logit_weight=0.25, hidden_weight=2.0, attention_weight=4.0, temperature=3.5)


# ---------------------------------------------------------------- bad inputs to every command, table-driven
# Each gets exit status 2, one line on stderr naming the problem, no traceback, and leaves the folder it ran in
# exactly as it was (no output, no state folder, no temp file, nothing a user made changed).


FT = ["finetune", "--task", "sst2", "--model", "{tiny}", "--out", "{out}", "--glue-dir", "{glue}", "--epochs", "1",
      "--batch-size", "16", "--quiet"]


CO = ["compress", "--task", "sst2", "--teacher", "{teacher}", "--out", "{out}", "--glue-dir", "{glue}", "--epochs",
      "1", "--batch-size", "16", "--quiet"]


EV = ["evaluate", "--task", "sst2", "--glue-dir", "{glue}"]


AU = ["augment", "--task", "sst2", "--teacher", "{tiny}", "--out", "{out}.jsonl", "--glue-dir", "{glue}", "--copies",
      "1", "--quiet"]


# (case id, argv, expected text in the one-line message, what exists before the command runs, marks)
CASES = [
    # ---- numeric flags
    ("finetune epochs 0", FT + ["--epochs", "0"], "--epochs must be > 0", None),
    ("finetune epochs negative", FT + ["--epochs", "-1"], "--epochs must be > 0", None),
    ("finetune lr 0", FT + ["--lr", "0"], "--lr must be > 0", None),
    ("finetune batch-size 0", FT + ["--batch-size", "0"], "--batch-size must be an integer > 0", None),
    ("finetune eval-batch-size 0", FT + ["--eval-batch-size", "0"], "--eval-batch-size must be an integer > 0", None),
    ("finetune max-seq-length 0", FT + ["--max-seq-length", "0"], "--max-seq-length must be an integer > 0", None),
    ("finetune epochs not a number", FT + ["--epochs", "three"], "argument --epochs: invalid float value", None),
    ("finetune batch-size not an int", FT + ["--batch-size", "1.5"], "argument --batch-size: invalid int", None),
    ("finetune epochs inf", FT + ["--epochs", "inf"], "--epochs", None),
    ("finetune epochs nan", FT + ["--epochs", "nan"], "--epochs", None),
    ("finetune lr negative", FT + ["--lr", "-5e-5"], "--lr must be", None),
    ("compress lr negative, exponent", CO + ["--lr", "-1e-4"], "--lr must be", None),
    ("finetune weight-decay negative", FT + ["--weight-decay", "-1"], "--weight-decay", None),
    ("finetune warmup-epochs negative", FT + ["--warmup-epochs", "-2"], "--warmup-epochs", None),
    ("finetune max-train-samples 0", FT + ["--max-train-samples", "0"], "--max-train-samples", None),
    ("finetune max-eval-samples 0", FT + ["--max-eval-samples", "0"], "--max-eval-samples", None),
    ("finetune max-seq-length beyond positions", FT + ["--max-seq-length", "100000"], "--max-seq-length", None,
     ),
    ("compress abits 4", CO + ["--abits", "4"], "--abits", None),
    ("compress wbits 16", CO + ["--wbits", "16"], "--wbits: invalid choice: 16", None),
    ("compress wbits 0", CO + ["--wbits", "0"], "--wbits: invalid choice: 0", None),
    ("compress abits 1", CO + ["--abits", "1"], "--abits: invalid choice: 1", None),
    ("compress uniform 1-bit", CO + ["--wbits", "1", "--quant-method", "uniform"], "needs method='xtc'", None),
    ("compress groups 0", CO + ["--wbits", "1", "--groups", "0"], "--groups must be an integer > 0", None),
    ("compress unknown quant role", CO + ["--wbits", "1", "--quant-roles", "query,pooler"], "--quant-roles must list only",
     None),
    ("compress stage1-share 1.5", CO + ["--kd", "two-stage", "--stage1-share", "1.5"], "--stage1-share must be in",
     None),
    ("compress teacher-cache-gb negative", CO + ["--teacher-cache-gb", "-1"], "--teacher-cache-gb must be >= 0",
     None),
    ("compress teacher-cache-gb nan", CO + ["--teacher-cache-gb", "nan"], "--teacher-cache-gb must be >= 0", None),
    ("augment copies negative", AU + ["--copies", "-1"], "--copies must be an integer >= 0", None),
    ("augment replace-prob 1.5", AU + ["--replace-prob", "1.5"], "--replace-prob must be in [0, 1]", None),
    ("augment candidates 0", AU + ["--candidates", "0"], "--candidates must be an integer > 0", None),
    ("augment max-train-samples 0", AU + ["--max-train-samples", "0"], "--max-train-samples must be an integer > 0", None),
    # ---- choices, unknown and missing flags
    ("finetune unknown task", FT + ["--task", "glue9"], "unknown GLUE task 'glue9'; choose one of", None),
    ("finetune unknown flag", FT + ["--epohcs", "2"], "unrecognized arguments: --epohcs", None),
    ("finetune missing --out", ["finetune", "--task", "sst2", "--model", "{tiny}"], "required: --out", None),
    ("compress unknown kd mode", CO + ["--kd", "three-stage"], "argument --kd: invalid choice", None),
    ("compress unknown quant method", CO + ["--quant-method", "log"], "argument --quant-method: invalid choice",
     None),
    ("augment unknown pair mode", AU + ["--pair-mode", "three"], "argument --pair-mode: invalid choice", None),
    ("unknown command", ["distil"], "invalid choice: 'distil'", None),
    # ---- combinations
    ("compress layers beyond teacher", CO + ["--layers", "9"], "cannot pick 9 layers from a 4-layer teacher", None),
    ("compress layers 0", CO + ["--layers", "0"], "layers", None),
    ("compress teacher-layers decreasing", CO + ["--teacher-layers", "3,1"], "not strictly increasing", None),
    ("compress teacher-layers out of range", CO + ["--teacher-layers", "0,7"], "out of range for a 4-layer", None),
    ("compress teacher-layers not integers", CO + ["--teacher-layers", "a,b"], "is not an integer", None),
    ("compress layers and teacher-layers", CO + ["--layers", "2", "--teacher-layers", "0,1"], "not both", None),
    ("compress no kd with train-file", CO + ["--kd", "none", "--train-file", "{tmp}/x.jsonl"], "carry no labels",
     None),
    ("compress teacher of another task", CO + ["--task", "stsb"], "outputs, task stsb needs 1", None),
    ("compress teacher is a student", CO + ["--teacher", "{student}"], "distil from a full-precision teacher", None),
    ("compress init already quantized", CO + ["--init", "{student}", "--wbits", "1"], "is already quantized", None),
    ("compress missing teacher", CO + ["--teacher", "{tmp}/no_teacher"], "is not a fine-tuned model folder", None),
    ("evaluate model of another task", EV + ["--model", "{teacher}", "--task", "stsb"], "task stsb needs 1", None),
    # ---- data files
    ("finetune glue dir missing", FT + ["--glue-dir", "{tmp}/no_glue"], "does not exist; pass --glue-dir", None),
    ("finetune train file missing", FT + ["--glue-dir", "{bad}/missing"], "missing GLUE file", None),
    ("finetune train header only", FT + ["--glue-dir", "{bad}/header_only"],
     "SST-2/train.tsv: no examples after the header line", None),
    ("finetune train file empty", FT + ["--glue-dir", "{bad}/empty"], "SST-2/train.tsv: file is empty", None),
    ("finetune dev split empty", FT + ["--glue-dir", "{bad}/empty_dev"], "SST-2/dev.tsv: no examples", None),
    ("finetune train not utf-8", FT + ["--glue-dir", "{bad}/latin1"], "SST-2/train.tsv:3: not UTF-8 text", None),
    ("finetune malformed row", FT + ["--glue-dir", "{bad}/malformed"], "SST-2/train.tsv:3: malformed row", None),
    ("finetune unknown label", FT + ["--glue-dir", "{bad}/bad_label"], "train.tsv:2: label 'maybe' is not one of",
     None),
    ("finetune header lacks label", FT + ["--glue-dir", "{bad}/no_label_column"], "header lacks column(s) ['label']",
     None),
    ("finetune cola malformed row", FT + ["--task", "cola", "--glue-dir", "{bad}/cola_malformed"],
     "CoLA/train.tsv:1: malformed row", None),
    ("finetune stsb label not a number", FT + ["--task", "stsb", "--model", "{tiny_reg}", "--glue-dir",
                                              "{bad}/stsb_label"], "STS-B/train.tsv:2: label 'high' is not a number",
     None),
    ("compress train-file missing", CO + ["--train-file", "{tmp}/none.jsonl"], "none.jsonl does not exist", None),
    ("compress train-file not json", CO + ["--train-file", "{bad}/not_json.jsonl"],
     "not_json.jsonl:2: expected a JSON object", None),
    ("compress train-file empty", CO + ["--train-file", "{bad}/empty.jsonl"], "empty.jsonl holds no examples", None),
    ("compress train-file not utf-8", CO + ["--train-file", "{bad}/latin1.jsonl"], "latin1.jsonl:2: not UTF-8 text",
     None),
    ("evaluate dev header only", EV + ["--model", "{teacher}", "--glue-dir", "{bad}/empty_dev"],
     "SST-2/dev.tsv: no examples", None),
    ("augment train header only", AU + ["--glue-dir", "{bad}/header_only"], "no examples after the header line", None),
    ("data stats train not utf-8", ["data", "stats", "--task", "sst2", "--glue-dir", "{bad}/latin1"],
     "SST-2/train.tsv:3: not UTF-8 text", None),
    # ---- paths
    ("finetune out is a file", FT, "is an existing file, not a run folder", "file:{out}"),
    ("finetune out parent missing", FT + ["--out", "{tmp}/no/such/run"], "does not exist; create it first", None),
    ("finetune out unwritable", FT + ["--out", "{unwritable}/run"], "cannot write in", None),
    ("finetune out holds user files", FT, "not empty and holds no xtc run", "folder:{out}"),
    ("finetune out holds a finished run", FT, "already holds a finished run", "finished:{out}"),
    ("finetune overwrite keeps the finished run when the new one fails", FT + ["--overwrite", "--glue-dir",
                                                                             "{bad}/header_only"],
     "no examples after the header line", "finished:{out}"),
    ("compress overwrite keeps the finished run when the new one fails", CO + ["--overwrite", "--device", "cuda"],
     "sees no CUDA GPU", "finished:{out}"),
    ("compress out is a file", CO, "is an existing file", "file:{out}"),
    ("compress out parent missing", CO + ["--out", "{tmp}/no/run"], "does not exist; create it first", None),
    ("finetune model missing", FT + ["--model", "{tmp}/no_model"], "cannot load a BERT model", None),
    ("finetune model is a non-model file", FT + ["--model", "{tmp}/notes.txt"], "not a readable .xtc ZIP",
     "file:{tmp}/notes.txt"),
    ("evaluate model missing", EV + ["--model", "{tmp}/no_model"], "cannot load a BERT model", None),
    ("evaluate fake packed file", EV + ["--model", "{tmp}/fake.xtc"], "not a readable .xtc ZIP", "file:{tmp}/fake.xtc"),
    ("evaluate unfinished run", EV + ["--model", "{unfinished}"], "holds an unfinished xtc run", None),
    ("export fp32 model", ["export", "--model", "{teacher}", "--out", "{out}.xtc"], "is not quantized", None),
    ("export model missing", ["export", "--model", "{tmp}/none", "--out", "{out}.xtc"], "is not a student folder",
     None),
    ("export out exists", ["export", "--model", "{student}", "--out", "{out}.xtc"], "already exists",
     "file:{out}.xtc"),
    ("export out is a folder", ["export", "--model", "{student}", "--out", "{out}"], "is a folder", "folder:{out}"),
    ("export out parent missing", ["export", "--model", "{student}", "--out", "{tmp}/no/s.xtc"],
     "does not exist; create it first", None),
    ("export out unwritable", ["export", "--model", "{student}", "--out", "{unwritable}/s.xtc"], "cannot write in",
     None),
    ("size model missing", ["size", "--model", "{tmp}/none"], "cannot load a BERT model", None),
    ("size fake packed file", ["size", "--model", "{tmp}/fake.packed"], "not a readable .xtc ZIP",
     "file:{tmp}/fake.packed"),
    ("size teacher missing", ["size", "--model", "{student}", "--teacher", "{tmp}/none"], "cannot load a BERT model",
     None),
    ("augment out exists", AU, "already exists", "file:{out}.jsonl"),
    ("augment out is a folder", AU + ["--out", "{out}"], "is a folder", "folder:{out}"),
    ("augment out parent missing", AU + ["--out", "{tmp}/no/aug.jsonl"], "does not exist; create it first", None),
    ("augment teacher missing", AU + ["--teacher", "{tmp}/none"], "'{tmp}/none': no such file or folder", None),
    ("augment teacher is a file", AU + ["--teacher", "{tmp}/s.xtc"], "is a file (a packed student?)",
     "file:{tmp}/s.xtc"),
    # ---- devices
    ("finetune device cuda on cpu-only torch", FT + ["--device", "cuda"], "sees no CUDA GPU", None),
    ("finetune device unknown", FT + ["--device", "gpu0"], "is not a torch device", None),
    ("compress device cuda:3", CO + ["--device", "cuda:3"], "--device cuda:3", None),
    ("evaluate device cuda", EV + ["--model", "{teacher}", "--device", "cuda"], "sees no CUDA GPU", None),
]


def _bad_glue(root: str, good: str) -> None:
    """Copies of the synthetic GLUE folder, each with one defect."""
    def variant(name, task_folder, split, text, encoding="utf-8", mode="w"):
        d = os.path.join(root, name)
        if not os.path.exists(d):
            shutil.copytree(good, d)
        path = os.path.join(d, task_folder, f"{split}.tsv")
        if text is None:
            os.unlink(path)
        elif mode == "wb":
            open(path, "wb").write(text)
        else:
            open(path, "w", encoding=encoding).write(text)

    variant("missing", "SST-2", "train", None)
    variant("header_only", "SST-2", "train", "sentence\tlabel\n")
    variant("empty", "SST-2", "train", "")
    variant("empty_dev", "SST-2", "dev", "sentence\tlabel\n\n")
    variant("latin1", "SST-2", "train", "sentence\tlabel\ngood film\t1\ncaf\xe9 bad\t0\n", encoding="latin-1")
    variant("malformed", "SST-2", "train", "sentence\tlabel\ngood film\t1\nno label here\n")
    variant("bad_label", "SST-2", "train", "sentence\tlabel\ngood film\tmaybe\n")
    variant("no_label_column", "SST-2", "train", "sentence\tscore\ngood film\t1\n")
    variant("cola_malformed", "CoLA", "train", "gj04\t1\n")
    variant("stsb_label", "STS-B", "train", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
            "sentence2\tscore\n0\tmain\tf\t2012\t0\tnone\tnone\ta dog\ta cat\thigh\n")
    open(os.path.join(root, "not_json.jsonl"), "w").write('{"text_a": "good"}\n{text_a: bad}\n')
    open(os.path.join(root, "empty.jsonl"), "w").write("\n")
    open(os.path.join(root, "latin1.jsonl"), "wb").write(b'{"text_a": "good"}\n{"text_a": "caf\xe9"}\n')


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, tiny_model_dir, tiny_regression_model_dir, glue_dir):
    root = tmp_path_factory.mktemp("bad_inputs")
    cfg = TrainConfig(epochs=1, lr=1e-3, batch_size=16)
    teacher = str(root / "teacher")
    finetune("sst2", tiny_model_dir, teacher, cfg, RunOptions(glue_dir=glue_dir, quiet=True))
    student = str(root / "student")
    compress("sst2", teacher, student, cfg, QuantSpec(wbits=1, abits=8), CompressConfig(layers=2),
             run=RunOptions(glue_dir=glue_dir, quiet=True))
    unfinished = make_tiny_model_dir(str(root / "unfinished"))
    os.makedirs(os.path.join(unfinished, STATE_DIR))
    _bad_glue(str(root / "bad"), glue_dir)
    if os.geteuid() == 0:  # root writes anywhere a mode allows: use a folder the kernel refuses (sysfs)
        unwritable = "/sys"
    else:
        unwritable = str(root / "read_only")
        os.makedirs(unwritable)
        os.chmod(unwritable, 0o555)
    return {"tiny": tiny_model_dir, "tiny_reg": tiny_regression_model_dir, "glue": glue_dir, "teacher": teacher,
            "student": student, "unfinished": unfinished, "bad": str(root / "bad"), "unwritable": unwritable}


def _tree(root: str) -> dict[str, str]:
    """Every file and folder under `root` (hidden ones too) with a hash of its content."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(folder, d), root) + "/"] = ""
        for f in files:
            p = os.path.join(folder, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def _prepare(spec: str | None, fmt: dict) -> None:
    if not spec:
        return
    kind, path = spec.split(":", 1)
    path = path.format(**fmt)
    if kind == "file":
        open(path, "w").write("precious")
    elif kind == "folder":
        os.makedirs(path)
        open(os.path.join(path, "notes.txt"), "w").write("mine")
    elif kind == "finished":
        shutil.copytree(fmt["teacher"], path)


def _params():
    for case in CASES:
        name, argv, expected, pre, *marks = case
        yield pytest.param(argv, expected, pre, id=name, marks=marks)


def _record(case: str, argv: list, code: int, err: str, fmt: dict) -> None:
    """XTC_BAD_INPUT_TABLE=FILE appends each case's command, exit status and message to FILE (JSON lines) for the
    table in bench/results/bad_inputs.md (bench/bad_inputs_table.py)."""
    path = os.environ.get("XTC_BAD_INPUT_TABLE")
    if not path:
        return
    import json

    def short(text):  # the fixtures' temporary folders as the names the table uses
        for key in ("out", "tmp", "bad", "teacher", "student", "unfinished", "tiny_reg", "tiny", "glue"):
            text = text.replace(fmt[key], "{" + key + "}")
        return text

    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"case": case, "command": "xtc " + " ".join(short(a.format(**fmt)) for a in argv),
                            "exit": code, "stderr": short(err.strip())}) + "\n")


@pytest.mark.parametrize("argv, expected, pre", list(_params()))
def test_bad_input_is_one_clear_line_exit_2_and_leaves_nothing(tmp_path, capsys, monkeypatch, ctx, argv, expected,
                                                               pre, request):
    monkeypatch.delenv("XTC_DEBUG", raising=False)
    capsys.readouterr()  # drop what building the shared fixtures printed
    fmt = {**ctx, "tmp": str(tmp_path), "out": str(tmp_path / "out")}
    _prepare(pre, fmt)
    before, shared_before = _tree(str(tmp_path)), _tree(ctx["bad"])
    code = main([a.format(**fmt) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    _record(request.node.callspec.id, argv, code, err, fmt)
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert expected.format(**fmt) in lines[0], lines[0]
    assert lines[0].startswith("xtc"), lines[0]
    assert _tree(str(tmp_path)) == before  # no output, no state folder, no temp file; nothing changed
    assert _tree(ctx["bad"]) == shared_before


def test_table_covers_every_kind_and_is_large_enough():
    assert len(CASES) >= 60
    commands = {c[1][0] for c in CASES}
    assert commands >= {"finetune", "compress", "evaluate", "export", "size", "augment", "data"}
