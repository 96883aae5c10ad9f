"""`xtc` command line: thin argument parsing over the package's functions."""
from __future__ import annotations

import argparse
import json
import os
import sys

from xtc.precision import PRECISIONS
from xtc.tasks import TASKS, get_task


def _print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _train_args(p: argparse.ArgumentParser, epochs: float, lr: float) -> None:
    g = p.add_argument_group("training (recipe defaults)")
    g.add_argument("--epochs", type=float, default=epochs, help="training budget in epochs (fractions allowed)")
    g.add_argument("--lr", type=float, default=lr, help="peak learning rate of AdamW")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--eval-batch-size", type=int, default=128)
    g.add_argument("--max-seq-length", type=int, default=128)
    g.add_argument("--weight-decay", type=float, default=0.01, help="not applied to biases and LayerNorm")
    g.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up, then linear decay to 0")
    g.add_argument("--eval-every", type=int, default=1000, help="evaluate every N steps (and at each epoch end)")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--no-group-by-length", dest="group_by_length", action="store_false",
                   help="plain random batches instead of batches of similar length (less padding)")
    g.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="training matmuls in bf16 (autocast; weights, optimizer state and losses stay fp32) or "
                   "fp32; auto: bf16 where the device has native bf16 (CPU AMX/AVX512-BF16, CUDA), else fp32. "
                   "Evaluation is always fp32. The choice and its reason go to metrics.json")
    d = p.add_argument_group("data and run")
    d.add_argument("--glue-dir", help="download_glue_data.py folder (default: $XTC_GLUE_DIR, else the HF hub)")
    d.add_argument("--max-train-samples", type=int, help="use only the first N training examples")
    d.add_argument("--max-eval-samples", type=int, help="use only the first N examples of each dev split")
    d.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    d.add_argument("--overwrite", action="store_true", help="replace a finished or unfinished run in --out")
    d.add_argument("--quiet", action="store_true", help="no progress bar or per-evaluation log lines")


def _train_config(a):
    from xtc.train import TrainConfig

    for name in ("epochs", "lr", "batch_size", "eval_batch_size", "max_seq_length"):
        if getattr(a, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(a, name)}")
    return TrainConfig(epochs=a.epochs, lr=a.lr, batch_size=a.batch_size, eval_batch_size=a.eval_batch_size,
                       max_seq_length=a.max_seq_length, weight_decay=a.weight_decay,
                       warmup_epochs=a.warmup_epochs, eval_every=a.eval_every, seed=a.seed,
                       group_by_length=a.group_by_length, precision=a.precision)


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

    _print_json(split_stats(get_task(a.task), a.glue_dir))


def cmd_finetune(a) -> None:
    from xtc.finetune import finetune

    rec = finetune(a.task, a.model, a.out, _train_config(a), a.glue_dir, a.max_train_samples,
                   a.max_eval_samples, a.overwrite, a.device, a.quiet)
    _print_json({"out": a.out, "task": rec["task"], "metrics": rec["metrics"],
                 "wall_seconds": rec["wall_seconds"], "train_tokens_per_second": rec["train_tokens_per_second"]})


def cmd_evaluate(a) -> None:
    from xtc.data import encode, load_split
    from xtc.models import pick_device
    from xtc.predict import load_for_inference
    from xtc.train import evaluate

    task = get_task(a.task)
    model, tok, path_kind = load_for_inference(a.model, getattr(a, "fake_quant", False))
    if model.config.num_labels != task.num_labels:
        raise ValueError(f"model {a.model} has {model.config.num_labels} outputs but task {task.name} needs "
                         f"{task.num_labels}; evaluate it on the task it was trained for")
    dev = pick_device(a.device)
    model.to(dev)
    sets = {s: encode(load_split(task, s, a.glue_dir, a.max_eval_samples), tok, a.max_seq_length,
                      task.is_regression) for s in task.eval_splits}
    metrics = evaluate(model, task, sets, a.batch_size, dev)
    out = {"model": a.model, "path": path_kind, "task": task.name, "metrics": metrics, "eval_sizes": {k: len(v) for k, v in sets.items()}}
    if a.predictions:
        from xtc.train import predict

        out["predictions"] = {s: predict(model, d, a.batch_size, dev).tolist() for s, d in sets.items()}
    _print_json(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xtc", description="XTC extreme compression of BERT models on GLUE "
                                "(layer reduction + 1/2-bit quantization-aware training with distillation).")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error (or set XTC_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("tasks", help="list the GLUE tasks, their metrics and splits")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_tasks)

    data = sub.add_parser("data", help="inspect GLUE data").add_subparsers(dest="data_command", required=True)
    s = data.add_parser("stats", help="split sizes and label counts as JSON")
    s.add_argument("--task", required=True, choices=list(TASKS))
    s.add_argument("--glue-dir")
    s.set_defaults(fn=cmd_data_stats)

    s = sub.add_parser("finetune", help="fine-tune a teacher on a GLUE task",
                       description="Fine-tune a BERT classifier on a GLUE task; keeps the best dev checkpoint.")
    s.add_argument("--task", required=True, choices=list(TASKS))
    s.add_argument("--model", default="default", help="'default' (packaged all-MiniLM-L6-v2), a local HF "
                   "BERT folder or a hub id")
    s.add_argument("--out", required=True, help="run folder: model, tokenizer, metrics.json")
    _train_args(s, epochs=3.0, lr=5e-5)
    s.set_defaults(fn=cmd_finetune)

    s = sub.add_parser("evaluate", help="evaluate a saved model (folder or packed .xtc) on a task's dev set")
    s.add_argument("--model", required=True)
    s.add_argument("--task", required=True, choices=list(TASKS))
    s.add_argument("--glue-dir")
    s.add_argument("--max-eval-samples", type=int)
    s.add_argument("--max-seq-length", type=int, default=128)
    s.add_argument("--batch-size", type=int, default=128)
    s.add_argument("--device")
    s.add_argument("--predictions", action="store_true", help="also print every dev logit")
    s.add_argument("--fake-quant", action="store_true", help="a packed .xtc runs on the integer path by default; "
                   "this runs the fake-quant model it was exported from instead")
    s.set_defaults(fn=cmd_evaluate)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return p


def cmd_compress(a) -> None:
    from xtc.compress import CompressConfig, compress
    from xtc.distill import KDConfig
    from xtc.quant import ROLES, QuantSpec

    roles = tuple(r.strip() for r in a.quant_roles.split(",")) if a.quant_roles else ROLES
    spec = QuantSpec(wbits=a.wbits, abits=a.abits, groups=a.groups, method=a.quant_method, roles=roles,
                     embedding_bits=a.embedding_bits, act_per_token=not a.act_per_tensor)
    cc = CompressConfig(kd=a.kd, kd_terms=tuple(t.strip() for t in a.kd_terms.split(",")), layers=a.layers,
                        teacher_layers=a.teacher_layers, stage1_share=a.stage1_share,
                        stage1_lr_factor=a.stage1_lr_factor, teacher_cache_gb=a.teacher_cache_gb)
    kd_cfg = KDConfig(a.logit_weight, a.hidden_weight, a.attention_weight, a.temperature)
    rec = compress(a.task, a.teacher, a.out, _train_config(a), spec, cc, kd_cfg, a.init, a.train_file, a.glue_dir,
                   a.max_train_samples, a.max_eval_samples, a.overwrite, a.device, a.quiet)
    _print_json({"out": a.out, "task": rec["task"], "metrics": rec["metrics"], "kd": rec["kd"],
                 "layers": rec["layers"], "size": {k: rec["size"][k] for k in ("fp32_bytes", "quantized_bytes")},
                 "wall_seconds": rec["wall_seconds"], "train_tokens_per_second": rec["train_tokens_per_second"]})


def _register_compress(sub) -> None:
    s = sub.add_parser("compress", help="layer reduction and/or 1-/2-bit QAT with distillation from a teacher",
                       description="Train an XTC student: copy (a subset of) the teacher's layers, optionally "
                       "quantize weights/activations, and distil from the fine-tuned teacher. Step 1 of XTC is "
                       "`--layers k --wbits 32`; step 2 is `--init STEP1_DIR --wbits 1 --abits 8`.")
    s.add_argument("--task", required=True, choices=list(TASKS))
    s.add_argument("--teacher", required=True, help="fine-tuned teacher folder (from `xtc finetune`)")
    s.add_argument("--out", required=True, help="run folder: student, tokenizer, metrics.json")
    s.add_argument("--init", help="start from this full-precision student (e.g. a layer-reduced step-1 run) "
                   "instead of the teacher")
    g = s.add_argument_group("layer reduction")
    g.add_argument("--layers", type=int, help="keep k evenly spaced teacher layers (12->6: 1,3,5,7,9,11)")
    g.add_argument("--teacher-layers", help="keep these 0-indexed teacher layers, e.g. 1,3,5")
    g = s.add_argument_group("quantization")
    g.add_argument("--wbits", type=int, default=32, help="weight bits: 1 binary, 2 ternary, 3-8 uniform, 32 off")
    g.add_argument("--abits", type=int, default=32, help="activation bits for quantized Linear inputs (8 or 32)")
    g.add_argument("--groups", type=int, default=1, help="weight scale groups (contiguous rows); 1 = per tensor")
    g.add_argument("--embedding-bits", type=int, help="word-embedding bits (default: --wbits; 32 keeps it fp32)")
    g.add_argument("--quant-roles", help="comma-separated subset of: query,key,value,attn_out,ffn_in,ffn_out,"
                   "word_embeddings (default: all)")
    g.add_argument("--quant-method", default="xtc", choices=["xtc", "uniform"],
                   help="xtc: binary/ternary at 1/2 bits; uniform: symmetric k-bit for every width")
    g.add_argument("--act-per-tensor", action="store_true", help="one activation scale per tensor, not per token")
    g = s.add_argument_group("distillation")
    g.add_argument("--kd", default="one-stage", choices=["none", "one-stage", "two-stage"])
    g.add_argument("--kd-terms", default="logit,hidden,attention", help="one-stage KD terms")
    g.add_argument("--stage1-share", type=float, default=0.5, help="two-stage: share of epochs in stage 1")
    g.add_argument("--stage1-lr-factor", type=float, default=2.5, help="two-stage: stage-1 learning-rate factor")
    g.add_argument("--logit-weight", type=float, default=1.0)
    g.add_argument("--hidden-weight", type=float, default=1.0)
    g.add_argument("--attention-weight", type=float, default=1.0)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--teacher-cache-gb", type=float, default=6.0,
                   help="memory for the teacher's outputs, computed once per run instead of every step (used "
                   "when they fit and KD lasts at least an epoch); 0 runs the teacher live")
    s.add_argument("--train-file", help="JSONL training inputs (e.g. from `xtc augment`) replacing the task's "
                   "training set; the teacher labels them")
    _train_args(s, epochs=3.0, lr=5e-5)
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

    _print_json(augment(a.task, a.teacher, a.out, copies=a.copies, replace_prob=a.replace_prob,
                        candidates=a.candidates, seed=a.seed, glue_dir=a.glue_dir,
                        max_samples=a.max_train_samples, pair_mode=a.pair_mode,
                        replace_stop_words=a.replace_stop_words, overwrite=a.overwrite, quiet=a.quiet))


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
    s.add_argument("--task", required=True, choices=list(TASKS))
    s.add_argument("--teacher", required=True, help="model whose vocabulary, word embeddings (and masked-LM "
                   "head, if any) propose replacements")
    s.add_argument("--out", required=True, help="output .jsonl file")
    s.add_argument("--copies", type=int, default=20, help="augmented copies per example (N)")
    s.add_argument("--replace-prob", type=float, default=0.4, help="probability of replacing each word (P)")
    s.add_argument("--candidates", type=int, default=15, help="candidates per word (K)")
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--glue-dir")
    s.add_argument("--max-train-samples", type=int, help="augment only the first N training examples")
    s.add_argument("--pair-mode", choices=["one", "both"], default="one",
                   help="sentence pairs: each copy rewrites one sentence, alternating (TinyBERT; default), or both "
                   "at once (breaks most paraphrase/entailment pairs)")
    s.add_argument("--replace-stop-words", action="store_true",
                   help="also replace stop words (is, not, the, ...); TinyBERT keeps them")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_augment)


from xtc.predict import register as _register_predict  # noqa: E402
from xtc.study import register as _register_study  # noqa: E402

_EXTRA_COMMANDS: list = [_register_compress, _register_artifacts, _register_study, _register_predict]


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """argparse errors as one line (what is wrong, where to look) instead of the usage block, on every sub-parser."""
    def error(message: str) -> None:
        parser.exit(2, f"{parser.prog}: error: {message}; see `{parser.prog} --help`\n")

    parser.error = error
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _one_line_errors(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _one_line_errors(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed)
        return exc.code if isinstance(exc.code, int) else 2
    try:
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
