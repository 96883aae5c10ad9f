"""`xtc predict`, and the model loading `xtc evaluate` shares: a packed `.xtc` runs on the integer path
(xtc.infer) unless `--fake-quant` asks for the fake-quant model it was exported from."""
from __future__ import annotations

import csv
import json
import os
import sys

from xtc.files import atomic_write, exclusive_writer
from xtc.tasks import add_task_args, get_task


def is_packed(path: str) -> bool:
    # a file is a packed model whatever its name: the loader checks the ZIP and its manifest (issue 14)
    return os.path.isfile(path)


def load_for_inference(path: str, fake_quant: bool = False):
    """(model, tokenizer, path name): a .xtc file on the integer path (or fake-quant), any other model as is."""
    from xtc.models import load_model_and_tokenizer

    if is_packed(path) and not fake_quant:
        from xtc.infer import load_int_model

        model, tok = load_int_model(path)
        return model, tok, "integer"
    model, tok = load_model_and_tokenizer(path)
    quantized = getattr(model.config, "xtc_quant", None)
    if fake_quant:  # the fp32 fake-quant maths, not the integer evaluation of quantized layers
        from xtc.quant import QuantLinear

        for m in model.modules():
            if isinstance(m, QuantLinear):
                m.integer_eval = False
    return model, tok, "fake-quant" if quantized else "fp32"


def read_input_tsv(path: str, task):
    """A TSV of inputs with a header: the task's own text columns (e.g. `sentence`; MRPC `#1 String`,
    `#2 String`) or `text_a`[, `text_b`]; an optional label column (the task's or `label`) gives metrics."""
    from xtc.data import DataError, Split, label_id

    if not os.path.isfile(path):
        raise DataError(f"--input {path} does not exist")
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if not header:
            raise DataError(f"{path}: empty file; expected a header row naming the text columns")
        generic = ("text_a", "text_b")[: len(task.text_columns)]
        for names in (task.text_columns, generic):
            if all(c in header for c in names):
                text_pos = [header.index(c) for c in names]
                break
        else:
            raise DataError(f"{path}:1: header {header} lacks the text column(s) {list(task.text_columns)} "
                            f"(or {list(generic)}) that task {task.name} reads")
        label_name = next((c for c in (task.label_column, "label") if c in header), None)
        label_pos = header.index(label_name) if label_name else None
        texts, labels = [], []
        for row in rows:
            if not row or row == [""]:
                continue
            need = max(text_pos + ([label_pos] if label_pos is not None else []))
            if len(row) <= need:
                raise DataError(f"{path}:{rows.line_num}: {len(row)} tab-separated fields, expected "
                                f"{len(header)} as in the header")
            texts.append(tuple(row[p] for p in text_pos))
            if label_pos is not None:
                labels.append(label_id(task, row[label_pos], f"{path}:{rows.line_num}"))
    if not texts:
        raise DataError(f"{path} holds no examples")
    return Split(task.name, "input", texts, labels or [0.0 if task.is_regression else 0] * len(texts),
                 source=path), bool(labels)


def cmd_predict(a) -> None:
    from xtc.data import encode, load_split
    from xtc.metrics import split_metrics
    from xtc.models import pick_device
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
