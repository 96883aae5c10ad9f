"""`xtc` command line: thin argument parsing over the package's functions."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

from xtc.config import (DEFAULT_MODEL, AugmentConfig, CompressConfig, KDConfig, QuantSpec, RunOptions, TaskSpec,
                        TrainConfig)
from xtc.predict import register as register_predict
from xtc.settings import add_settings, build_settings
from xtc.study import register as register_study
from xtc.tasks import TASKS, add_task_args, get_task, resolve_task


def _print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other xtc error (argparse prints usage first)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _train_args(p: argparse.ArgumentParser) -> None:
    add_settings(p, "train", TrainConfig, "training (recipe defaults)")
    add_settings(p, "run", RunOptions, "data and run")


def cmd_tasks(a) -> None:
    rows = [{"task": t.name, "folder": t.folder, "pair": t.is_pair, "regression": t.is_regression,
             "labels": list(t.labels) if t.labels else None, "metrics": list(t.metrics),
             "selection_metric": t.selection_metric, "eval_splits": list(t.eval_splits)} for t in TASKS.values()]
    if a.json:
        _print_json(rows)
    else:
        for r in rows:
            print(f"{r['task']:5s}  {r['folder']:6s}  {'pair  ' if r['pair'] else 'single'}  "
                  f"{'regression' if r['regression'] else str(len(r['labels'])) + ' classes':10s}  "
                  f"metrics: {', '.join(r['metrics'])} (select on {r['selection_metric']})")


def cmd_data_stats(a) -> None:
    from xtc.data import split_stats

    _print_json(split_stats(get_task(a.task), a.run.glue_dir))


def cmd_finetune(a) -> None:
    from xtc.finetune import finetune

    rec = finetune(a.task, a.model, a.out, a.train, a.run)
    _print_json({"out": a.out, "task": rec["task"], "metrics": rec["metrics"],
                 "wall_seconds": rec["wall_seconds"], "train_tokens_per_second": rec["train_tokens_per_second"]})


def cmd_evaluate(a) -> None:
    from xtc.data import encode, load_split
    from xtc.models import load_for_inference, pick_device
    from xtc.train import evaluate

    task = get_task(a.task)
    model, tok, path_kind = load_for_inference(a.model, getattr(a, "fake_quant", False))
    if model.config.num_labels != task.num_labels:
        raise ValueError(f"model {a.model} has {model.config.num_labels} outputs but task {task.name} needs "
                         f"{task.num_labels}; evaluate it on the task it was trained for")
    dev = pick_device(a.run.device)
    model.to(dev)
    sets = {s: encode(load_split(task, s, a.run.glue_dir, a.run.max_eval_samples), tok, a.train.max_seq_length,
                      task.is_regression) for s in task.eval_splits}
    metrics = evaluate(model, task, sets, a.train.eval_batch_size, dev)
    out = {"model": a.model, "path": path_kind, "task": task.name, "metrics": metrics,
           "eval_sizes": {k: len(v) for k, v in sets.items()}}
    if a.predictions:
        from xtc.train import predict

        out["predictions"] = {s: predict(model, d, a.train.eval_batch_size, dev).tolist() for s, d in sets.items()}
    _print_json(out)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="xtc", description="XTC extreme compression of BERT models on GLUE "
                                "(layer reduction + 1/2-bit quantization-aware training with distillation).")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error (or set XTC_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("tasks", help="list the GLUE tasks, their metrics and splits")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_tasks)

    data = sub.add_parser("data", help="inspect GLUE data").add_subparsers(dest="data_command", required=True)
    s = data.add_parser("stats", help="split sizes and label counts as JSON")
    add_task_args(s)
    add_settings(s, "run", RunOptions, only=("glue_dir",))
    s.set_defaults(fn=cmd_data_stats)

    s = sub.add_parser("finetune", help="fine-tune a teacher on a GLUE task",
                       description="Fine-tune a BERT classifier on a GLUE task; keeps the checkpoint that "
                       "scores best on the validation rows held out of the training split (dev with "
                       "--validation-samples 0).")
    add_task_args(s)
    s.add_argument("--model", default=DEFAULT_MODEL, help=f"'{DEFAULT_MODEL}' (packaged all-MiniLM-L6-v2), a local "
                   f"HF BERT folder or a hub id (default: {DEFAULT_MODEL})")
    s.add_argument("--out", required=True, help="run folder: model, tokenizer, metrics.json")
    _train_args(s)
    s.set_defaults(fn=cmd_finetune)

    s = sub.add_parser("evaluate", help="evaluate a saved model (folder or packed .xtc) on a task's dev set")
    s.add_argument("--model", required=True)
    add_task_args(s)
    add_settings(s, "run", RunOptions, only=("glue_dir", "max_eval_samples", "device"))
    add_settings(s, "train", TrainConfig, only=("max_seq_length", "eval_batch_size"),
                 flags={"eval_batch_size": "--batch-size"})
    s.add_argument("--predictions", action="store_true", help="also print every dev logit")
    s.add_argument("--fake-quant", action="store_true", help="a packed .xtc runs on the integer path by default; "
                   "this runs the fake-quant model it was exported from, in fp32 fake-quant maths, instead")
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser("precision", help="show or clear the per-machine measurements behind --precision auto",
                       description="`--precision auto` times its own training step in fp32 and bf16 on the first run "
                       "on a machine and caches the choice (file: $XTC_PRECISION_CACHE, else "
                       "$XDG_CACHE_HOME/xtc/precision.json, else ~/.cache/xtc/precision.json).")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--show", action="store_true", help="print the cache file's path and entries as JSON (default)")
    g.add_argument("--clear", action="store_true", help="delete the cache file: the next auto run measures again")
    s.set_defaults(fn=cmd_precision)

    for register in (_register_compress, _register_artifacts, register_study, register_predict):
        register(sub)  # the commands with many flags, below, and those their own modules register
    return p


def cmd_precision(a) -> None:
    from xtc import precision as prec

    path = prec.cache_file()
    if a.clear:
        _print_json({"cache_file": path, "cleared": prec.clear_cache(path)})
    else:
        _print_json({"cache_file": path, "exists": os.path.exists(path), "entries": prec.read_cache(path)})


def cmd_compress(a) -> None:
    from xtc.compress import compress

    rec = compress(a.task, a.teacher, a.out, a.train, a.quant, a.compress, a.kd, a.run)
    _print_json({"out": a.out, "task": rec["task"], "metrics": rec["metrics"], "kd": rec["kd"],
                 "layers": rec["layers"], "size": {k: rec["size"][k] for k in ("fp32_bytes", "quantized_bytes")},
                 "wall_seconds": rec["wall_seconds"], "train_tokens_per_second": rec["train_tokens_per_second"]})


def _register_compress(sub) -> None:
    s = sub.add_parser("compress", help="layer reduction and/or 1-/2-bit QAT with distillation from a teacher",
                       description="Train an XTC student: copy (a subset of) the teacher's layers, optionally "
                       "quantize weights/activations, and distil from the fine-tuned teacher. Step 1 of XTC is "
                       "`--layers k --wbits 32`; step 2 is `--init STEP1_DIR --wbits 1 --abits 8`.")
    add_task_args(s)
    s.add_argument("--teacher", required=True, help="fine-tuned teacher folder (from `xtc finetune`)")
    s.add_argument("--out", required=True, help="run folder: student, tokenizer, metrics.json")
    add_settings(s, "compress", CompressConfig, only=("init", "train_file"))
    add_settings(s, "compress", CompressConfig, "layer reduction", only=("layers", "teacher_layers"))
    add_settings(s, "quant", QuantSpec, "quantization")
    add_settings(s, "compress", CompressConfig, "distillation")  # every other CompressConfig field
    add_settings(s, "kd", KDConfig, "distillation weights")
    _train_args(s)
    s.set_defaults(fn=cmd_compress)


def cmd_export(a) -> None:
    from xtc.models import load_model_and_tokenizer
    from xtc.pack import export_packed

    if not os.path.isdir(a.model):
        raise FileNotFoundError(f"--model {a.model} is not a student folder (from `xtc compress`)")
    model, tok = load_model_and_tokenizer(a.model)
    if not getattr(model.config, "xtc_quant", None):
        raise ValueError(f"{a.model} is not quantized (no xtc_quant in its config); export takes a student "
                         f"trained with `xtc compress --wbits 1|2|...`")
    _print_json({"model": a.model, **export_packed(model, tok, a.out, overwrite=a.overwrite)})


def cmd_size(a) -> None:
    from xtc.models import load_model_and_tokenizer
    from xtc.pack import size_report
    from xtc.quant import model_size

    teacher_bytes = None
    if a.teacher:
        teacher_bytes = model_size(load_model_and_tokenizer(a.teacher)[0])["fp32_bytes"]
    # a file is a packed model whatever its name (size_report checks the ZIP and its manifest)
    target = a.model if os.path.isfile(a.model) else load_model_and_tokenizer(a.model)[0]
    _print_json({"model": a.model, **size_report(target, teacher_fp32_bytes=teacher_bytes)})


def cmd_augment(a) -> None:
    from xtc.augment import augment

    _print_json(augment(a.task, a.teacher, a.out, a.augment, glue_dir=a.run.glue_dir, overwrite=a.run.overwrite,
                        quiet=a.run.quiet, data=a.run))


def _register_artifacts(sub) -> None:
    s = sub.add_parser("export", help="write a quantized student as a bit-packed .xtc file",
                       description="Pack a quantized student: 1-bit weights as sign bits (8/byte), ternary as "
                       "5 trits/byte, k-bit in k bits, fp32 scales per group, full-precision tensors as is, "
                       "plus config and tokenizer, in a checksummed ZIP (format in xtc/pack.py).")
    s.add_argument("--model", required=True, help="student folder from `xtc compress`")
    s.add_argument("--out", required=True, help="output file, e.g. student.xtc")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("size", help="parameter counts by role, bytes on disk, theoretical minimum, ratios")
    s.add_argument("--model", required=True, help="model folder or packed .xtc file")
    s.add_argument("--teacher", help="fp32 teacher folder, for the compression ratio against it")
    s.set_defaults(fn=cmd_size)

    s = sub.add_parser("augment", help="TinyBERT-style data augmentation of a task's training set",
                       description="Write N augmented copies of every training example (plus the originals) "
                       "as JSON Lines for `xtc compress --train-file`; the teacher labels them through KD.")
    add_task_args(s)
    s.add_argument("--teacher", required=True, help="model whose vocabulary, word embeddings (and masked-LM "
                   "head, if any) propose replacements")
    s.add_argument("--out", required=True, help="output .jsonl file")
    add_settings(s, "augment", AugmentConfig, "augmentation")
    add_settings(s, "run", RunOptions, "data and run", only=("glue_dir", "subset", "data_seed", "validation_samples",
                                                             "overwrite", "quiet"),
                 helps={"overwrite": "replace an existing --out file"})
    s.set_defaults(fn=cmd_augment)


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """argparse errors as one line (what is wrong, where to look) instead of the usage block, on every sub-parser."""
    def error(message: str) -> None:
        parser.exit(2, f"{parser.prog}: error: {message}; see `{parser.prog} --help`\n")

    parser.error = error
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _one_line_errors(sub)


NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def join_negative_values(argv: list[str]) -> list[str]:
    """`--lr -5e-5` -> `--lr=-5e-5`: argparse takes a negative number in exponent form after a flag for another
    flag (and reports a missing value); joined, the value reaches the range check and its one-line error."""
    out = []
    for tok in argv:
        if out and NEGATIVE_NUMBER.match(tok) and out[-1].startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={tok}"
        else:
            out.append(tok)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _one_line_errors(parser)
    try:
        args = parser.parse_args(join_negative_values(sys.argv[1:] if argv is None else list(argv)))
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        build_settings(args)  # every value checked against its allowed range before anything runs
        if isinstance(getattr(args, "task", None), str):  # a GLUE name, a spec file or a task the flags define
            args.task = resolve_task(args.task, getattr(args, "task_spec", None))
        args.fn(args)
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("xtc: interrupted; re-run the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:  # user errors (bad values, data, paths): one line
        if args.debug or os.environ.get("XTC_DEBUG"):
            raise
        print(f"xtc {args.command}: error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
