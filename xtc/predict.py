"""`xtc predict`: a model's predictions for a GLUE split or a TSV of inputs, as CSV (the model loaded by
xtc.models.load_for_inference, as `xtc evaluate` loads it)."""
from __future__ import annotations

import csv
import json
import os
import sys

from xtc.files import atomic_write, exclusive_writer
from xtc.tasks import add_task_args, get_task


def cmd_predict(a) -> None:
    from xtc.data import encode, load_split, read_input_tsv
    from xtc.metrics import split_metrics
    from xtc.models import load_for_inference, pick_device
    from xtc.train import predict

    task = get_task(a.task)
    if a.out and os.path.exists(a.out) and not a.overwrite:
        raise FileExistsError(f"--out {a.out} already exists; pass --overwrite to replace it")
    if a.input:
        split, has_labels = read_input_tsv(a.input, task)
    else:
        split = load_split(task, a.split, a.glue_dir, a.max_samples)
        has_labels = split.has_labels
    model, tok, path_kind = load_for_inference(a.model, a.fake_quant)
    if tok is None:
        raise ValueError(f"{a.model} carries no tokenizer; export it with one (`xtc export` saves it)")
    if model.config.num_labels != task.num_labels:
        raise ValueError(f"model {a.model} has {model.config.num_labels} outputs but task {task.name} needs "
                         f"{task.num_labels}; predict on the task it was trained for")
    dev = pick_device(a.device)
    model.to(dev)
    data = encode(split, tok, a.max_seq_length, task.is_regression)
    logits = predict(model, data, a.batch_size, dev)
    preds = logits[:, 0] if task.is_regression else logits.argmax(-1)

    header = ["index", "prediction"] + (["label"] if has_labels else []) + \
        [f"logit_{i}" for i in range(logits.shape[1])]
    rows = []
    for i in range(len(data)):
        p = f"{float(preds[i]):.6g}" if task.is_regression else task.labels[int(preds[i])]
        lab = [] if not has_labels else [split.labels[i] if task.is_regression else task.labels[split.labels[i]]]
        rows.append([i, p, *lab, *(repr(float(v)) for v in logits[i])])
    summary = {"model": a.model, "path": path_kind, "task": task.name,
               "split": "input" if a.input else a.split, "source": split.source, "examples": len(data),
               "out": a.out}
    if has_labels:
        summary["metrics"] = split_metrics(task, preds, split.labels)
    if a.out:
        with exclusive_writer(a.out, "predictions file"), \
                atomic_write(a.out, "w", newline="", encoding="utf-8", what="the predictions") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        w = csv.writer(sys.stdout)
        w.writerow(header)
        w.writerows(rows)
        print(json.dumps(summary), file=sys.stderr)


def register(sub) -> None:
    s = sub.add_parser("predict", help="predictions of a model (packed .xtc: integer path) for a GLUE split or "
                       "a TSV of inputs, as CSV",
                       description="Predict a GLUE split or a TSV of inputs. A packed .xtc runs on the integer "
                       "path (int8 codes, int8 activations, int32 accumulation); --fake-quant runs the "
                       "fake-quant model it was exported from. Writes CSV (index, prediction, label if known, "
                       "logits) to --out, or to stdout; prints a JSON summary (with metrics when labels exist).")
    s.add_argument("--model", required=True, help="packed .xtc file, or a model folder")
    add_task_args(s)
    s.add_argument("--split", default="dev", help="GLUE split to predict (default dev; MNLI dev_matched/"
                   "dev_mismatched; train)")
    s.add_argument("--input", help="TSV with a header naming the task's text columns (or text_a[, text_b]); "
                   "replaces --split")
    s.add_argument("--out", help="CSV file to write (default: stdout)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    s.add_argument("--fake-quant", action="store_true", help="run a .xtc as the fake-quant fp32 model instead "
                   "of the integer path (for comparison)")
    s.add_argument("--glue-dir")
    s.add_argument("--max-samples", type=int, help="only the first N examples of the split")
    s.add_argument("--max-seq-length", type=int, default=128)
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    s.set_defaults(fn=cmd_predict)
