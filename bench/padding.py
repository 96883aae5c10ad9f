"""Epoch time of teacher fine-tuning on a task under three batching modes:
padding everything to 128, dynamic padding (pad to the batch's longest), and dynamic padding with
length-grouped batches (xtc's default). Timed steps are sampled from the epoch and interleaved across modes
so machine load affects all three alike; the epoch time is (mean step time) x (steps per epoch), and the
padded-token counts are exact over the whole epoch.

    python bench/padding.py --task mrpc --glue-dir ../shared/glue --samples 12
"""
from __future__ import annotations

import argparse
import json
import random

import numpy as np
from common import task_data, timed_step

from xtc.data import train_batches
from xtc.distill import label_objective
from xtc.models import load_classifier, resolve_model_path
from xtc.train import make_optimizer, set_seed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="mrpc")
    p.add_argument("--model", default="default")
    p.add_argument("--glue-dir")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--samples", type=int, default=12, help="timed steps per mode")
    a = p.parse_args()
    task, data = task_data(a.task, a.model, a.glue_dir)
    set_seed(0)
    model = load_classifier(resolve_model_path(a.model), task.num_labels)
    opt = make_optimizer(model, 1e-5, 0.01)
    modes = {"pad128": (train_batches(data, a.batch_size, 0, 0, group_by_length=False), 128),
             "dynamic": (train_batches(data, a.batch_size, 0, 0, group_by_length=False), None),
             "grouped": (train_batches(data, a.batch_size, 0, 0, group_by_length=True), None)}
    rng = random.Random(0)
    picks = {m: rng.sample(range(len(b)), min(a.samples, len(b))) for m, (b, _) in modes.items()}
    times = {m: [] for m in modes}
    timed_step(model, opt, label_objective, data, modes["dynamic"][0][0])  # warm-up
    for i in range(a.samples):  # interleaved: one step of each mode in turn
        for m, (batches, pad_to) in modes.items():
            times[m].append(timed_step(model, opt, label_objective, data, batches[picks[m][i]], pad_to)[0])
    out = {"task": task.name, "examples": len(data), "batch_size": a.batch_size, "timed_steps_per_mode": a.samples}
    for m, (batches, pad_to) in modes.items():
        computed = sum(len(b) * (pad_to or max(data.lengths[i] for i in b)) for b in batches)
        out[m] = {"epoch_seconds_est": float(np.mean(times[m]) * len(batches)),
                  "step_seconds_mean": float(np.mean(times[m])), "steps": len(batches),
                  "computed_tokens": computed, "real_tokens": sum(data.lengths),
                  "padding_fraction": 1 - sum(data.lengths) / computed}
    for m in ("dynamic", "grouped"):
        out[f"{m}_vs_pad128_time"] = out[m]["epoch_seconds_est"] / out["pad128"]["epoch_seconds_est"]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
