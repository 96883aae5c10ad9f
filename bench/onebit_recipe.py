"""The published XTC recipe once on MRPC: its dev curve, sign flips per role and predicted classes, as JSON.

The run (6L = full depth of the packaged MiniLM teacher, W1A8, one-stage KD logit+hidden+attention, the whole
MRPC training set, 18 epochs, lr 5e-5, batch 32, one warm-up epoch, evaluation at each epoch end):

    xtc finetune --task mrpc --out T --epochs 3 --lr 5e-5 --batch-size 32 --seed 42 --precision fp32
    xtc compress --task mrpc --teacher T --wbits 1 --abits 8 --kd one-stage --epochs 18 --lr 5e-5 \\
        --batch-size 32 --warmup-epochs 1 --eval-every 0 --seed 42 --precision bf16 --out RUN

This script reads RUN/metrics.json, or, while the run is still going (or was stopped), the history in its
resume state (RUN/.xtc_state/state.json, plain JSON), and writes one entry per evaluation: accuracy, F1, the
predicted class counts, the train-sample score and gap, and the share of weight signs flipped per role; plus the
majority-class baseline of the dev set and the first evaluation at which the student beats it while predicting
both classes.

    python bench/onebit_recipe.py --run RUN --glue-dir /work/shared/glue --out bench/results/onebit_recipe_mrpc.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform

from common import emit

from xtc.data import load_split
from xtc.files import METRICS_FILE, STATE_DIR
from xtc.tasks import get_task


def read_history(run: str) -> tuple[list, dict, bool]:
    """(history, run config, finished) of a finished or unfinished xtc run folder."""
    path = os.path.join(run, METRICS_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            rec = json.load(f)
        return rec["history"], rec["config"], True
    with open(os.path.join(run, STATE_DIR, "state.json")) as f:  # JSON only: the tensors file is not read
        state = json.load(f)["state"]
    return state["history"], state["run_config"], False


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="the compress run folder (finished or not)")
    p.add_argument("--glue-dir", help="for the dev labels (majority baseline)")
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args()
    history, config, finished = read_history(a.run)
    task = get_task(config["task"])
    labels = load_split(task, "dev", a.glue_dir).labels
    counts = {name: labels.count(i) for i, name in enumerate(task.labels)}
    majority = max(counts.values()) / len(labels)
    curve = []
    for h in history:
        d = h.get("diagnostics") or {}
        curve.append({"step": h["step"], "epoch": h["epoch"], "lr": h["lr"], "dev": h["metrics"],
                      "dev_predicted_counts": (d.get("predicted_counts") or {}).get("dev"),
                      "train_sample": d.get("train_metrics"), "gap": d.get("gap"),
                      "sign_flip_share": d.get("changed_codes"), "train_loss_terms": h["train"]})
    left = next((c for c in curve if c["dev"]["accuracy"] > majority
                 and min((c["dev_predicted_counts"] or {"": 0}).values()) > 0), None)
    first = next((h["diagnostics"]["kd_gradient"] for h in history if "kd_gradient" in (h.get("diagnostics") or {})),
                 None)
    emit({"run": os.path.abspath(a.run), "finished": finished, "task": task.name,
          "cpu": cpu_model(), "cpu_count": os.cpu_count(), "precision": config.get("precision"),
          "settings": {k: config.get(k) for k in ("epochs", "lr", "batch_size", "warmup_epochs", "eval_every", "seed",
                                                  "kd", "kd_terms", "teacher", "train_eval_examples")},
          "quant": config.get("quant"), "dev_label_counts": counts, "majority_accuracy": majority,
          "evaluations": len(curve), "best_accuracy": max((c["dev"]["accuracy"] for c in curve), default=None),
          "first_step_above_majority_with_both_classes": left and left["step"],
          "kd_gradient_at_step_0": first, "curve": curve}, a.out)


if __name__ == "__main__":
    main()
