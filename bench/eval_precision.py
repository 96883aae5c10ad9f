"""Should evaluation run in bf16? Dev-set evaluation of saved models in fp32 and under bf16 autocast.

For each model folder: the dev metrics in both precisions, how many predictions change, the largest logit change,
and the median time of a full dev evaluation in each (runs interleaved). Evaluation selects the kept checkpoint
and gives the reported dev metrics, so bf16 evaluation is only worth it if it is clearly faster and changes no
metric.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python bench/eval_precision.py --task mrpc \
        --glue-dir /work/shared/glue --models RUN_DIR [RUN_DIR ...] --out bench/results/eval_precision_mrpc.json
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from xtc.data import encode, load_split
from xtc.metrics import task_metrics
from xtc.models import load_model_and_tokenizer
from xtc.precision import autocast
from xtc.tasks import get_task
from xtc.train import predict


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True)
    p.add_argument("--glue-dir")
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--out")
    a = p.parse_args()
    task = get_task(a.task)
    rows = []
    for path in a.models:
        model, tok = load_model_and_tokenizer(path)
        sets = {s: encode(load_split(task, s, a.glue_dir), tok, a.max_seq_length, task.is_regression)
                for s in task.eval_splits}
        logits, seconds = {}, {"fp32": [], "bf16": []}
        for r in range(a.repeats):
            for precision in (("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")):
                t0 = time.perf_counter()
                with autocast(precision, "cpu"):
                    logits[precision] = {s: predict(model, d, a.batch_size, "cpu") for s, d in sets.items()}
                seconds[precision].append(time.perf_counter() - t0)
        metrics, flips = {}, 0
        for precision, per_split in logits.items():
            preds = {s: ((lg[:, 0] if task.is_regression else lg.argmax(-1)), sets[s].labels)
                     for s, lg in per_split.items()}
            metrics[precision] = task_metrics(task, preds)
        for s in sets:
            f, b = logits["fp32"][s], logits["bf16"][s]
            if not task.is_regression:
                flips += int((f.argmax(-1) != b.argmax(-1)).sum())
        rows.append({"model": path, "eval_examples": sum(len(d) for d in sets.values()),
                     "metrics": metrics, "prediction_flips": flips,
                     "max_abs_logit_diff": float(max(np.abs(logits["fp32"][s] - logits["bf16"][s]).max() for s in sets)),
                     "seconds_median": {k: float(np.median(v)) for k, v in seconds.items()},
                     "bf16_over_fp32_time": float(np.median(seconds["bf16"]) / np.median(seconds["fp32"]))})
        print(json.dumps(rows[-1]), flush=True)
    out = {"task": task.name, "torch_threads": torch.get_num_threads(), "repeats": a.repeats,
           "load_average_1min_at_end": os.getloadavg()[0], "models": rows}
    if a.out:
        with open(a.out, "w") as f:
            f.write(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
