"""`xtc predict`: a model's predictions for a GLUE split or a TSV of inputs, as CSV (the model loaded by
xtc.models.load_for_inference, as `xtc evaluate` loads it; a packed .xtc served by xtc.infer.ServedModel)."""
from __future__ import annotations

import csv
import json
import os
import sys
import time

from xtc.files import atomic_write, exclusive_writer
from xtc.tasks import add_task_args, get_task


# `--engine auto`, where the native engine cannot serve the model, compiles the integer path for at least this many
# examples. Measured on the shared 2-core Xeon (AMX), 1 thread, 6-layer MiniLM W1A8 (bench/README.md, "Serving a
# packed student"): compiling costs 50-60 s even with the disk cache warm (Dynamo's trace of the model; the
# kernels come from the cache) and saves ~6-7 ms per example at batch 1 or 32: it pays back from ~8,000 examples
# (QQP, MNLI dev), not on MRPC or SST-2 dev.
COMPILE_MIN_EXAMPLES = 8000


def predict_logits(model, data, batch_size: int, device, desc: str = "predict") -> tuple:
    """-> (logits [n, labels] in the data's order, seconds of the first batch). Batches sorted by length (as
    xtc.train.predict), a progress bar over the examples on a terminal."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from xtc.arch import inputs_for
    from xtc.data import collate, eval_batches
    from xtc.train import to_device

    model.eval()
    out = [None] * len(data)
    first = None
    with torch.inference_mode(), tqdm(total=len(data), desc=desc, unit="ex", disable=not sys.stderr.isatty(),
                                      file=sys.stderr) as bar:
        for idx in eval_batches(data, batch_size):
            t0 = time.perf_counter()
            batch = to_device(collate(data, idx), device)
            logits = model(**inputs_for(model, batch)).logits.float().cpu().numpy()
            first = time.perf_counter() - t0 if first is None else first
            for row, i in enumerate(idx):
                out[i] = logits[row]
            bar.update(len(idx))
    return (np.stack(out) if out else np.zeros((0, 1))), (first or 0.0)


def cmd_predict(a) -> None:
    import torch

    from xtc.data import encode, load_split, read_input_tsv
    from xtc.infer import ServedModel, compile_cache_dir
    from xtc.metrics import split_metrics
    from xtc.models import load_for_inference, pick_device

    task = get_task(a.task)
    if a.out and os.path.exists(a.out) and not a.overwrite:
        raise FileExistsError(f"--out {a.out} already exists; pass --overwrite to replace it")
    if a.threads is not None:
        if a.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {a.threads}")
        torch.set_num_threads(a.threads)
    if a.input:
        split, has_labels = read_input_tsv(a.input, task)
    else:
        split = load_split(task, a.split, a.glue_dir, a.max_samples)
        has_labels = split.has_labels
    dev = pick_device(a.device)
    t0 = time.perf_counter()
    model, tok, path_kind = load_for_inference(a.model, a.fake_quant, engine=a.engine, device=dev)
    load_seconds = time.perf_counter() - t0
    if path_kind != "integer" and a.engine not in ("auto", "eager"):
        raise ValueError(f"--engine {a.engine} serves packed .xtc files on the integer path; {a.model} runs as "
                         f"the {path_kind} model (use --engine auto)")
    if tok is None:
        raise ValueError(f"{a.model} carries no tokenizer; export it with one (`xtc export` saves it)")
    if model.config.num_labels != task.num_labels:
        raise ValueError(f"model {a.model} has {model.config.num_labels} outputs but task {task.name} needs "
                         f"{task.num_labels}; predict on the task it was trained for")
    model.to(dev)
    data = encode(split, tok, a.max_seq_length, task.is_regression)
    engine = None
    if path_kind == "integer":  # the engine's set-up (native: load or build its library, prepack) counts as load
        t0 = time.perf_counter()
        big = len(data) >= COMPILE_MIN_EXAMPLES
        model = ServedModel(model, engine=a.engine, fallback="compiled" if big else "eager")
        engine = model.engine
        load_seconds += time.perf_counter() - t0
    logits, first_batch_seconds = predict_logits(model, data, a.batch_size, dev, f"predict {task.name}")
    if engine is not None:
        engine = model.engine  # "eager" where compilation failed
    serving = {"engine": engine or "eager", "threads": torch.get_num_threads(),
               "load_seconds": round(load_seconds, 3), "first_batch_seconds": round(first_batch_seconds, 3),
               "cold_start_seconds": round(load_seconds + first_batch_seconds, 3),
               **({"native_unavailable": model.native_unavailable}
                  if engine is not None and model.native_unavailable else {}),
               **({"compile_cache": compile_cache_dir()} if engine == "compiled" else {})}
    print(f"xtc predict: cold start {serving['cold_start_seconds']:.2f} s (load {load_seconds:.2f} s + first "
          f"batch {first_batch_seconds:.2f} s; {serving['engine']} engine, "
          f"{serving['threads']} thread{'s' if serving['threads'] != 1 else ''})", file=sys.stderr)
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
               "out": a.out, "serving": serving}
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
    s.add_argument("--threads", type=int, help="CPU threads (default: torch's, one per core)")
    s.add_argument("--engine", choices=("auto", "native", "compiled", "eager"), default="auto",
                   help="how a packed .xtc runs: native (the encoder in C++, BERT-layout models on the CPU; the "
                   "library is built once per machine into ~/.cache/xtc/native), compiled (Inductor, once for all "
                   "shapes, cached in $TORCHINDUCTOR_CACHE_DIR or ~/.cache/xtc/inductor), eager (the Python "
                   "integer path); auto: native where it can, else compiled from "
                   f"{COMPILE_MIN_EXAMPLES} examples on (where it pays back its compile time), else eager")
    s.set_defaults(fn=cmd_predict)
