"""GLUE metrics with scikit-learn and scipy. Every value is a plain float (never a formatted string)."""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from xtc.tasks import Task


def _correlation(fn, a: np.ndarray, b: np.ndarray) -> float:
    # A constant prediction makes the correlation undefined; score it 0 (no correlation) so JSON stays valid.
    if np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    value = float(fn(a, b)[0])
    return 0.0 if math.isnan(value) else value


def split_metrics(task: Task, predictions, labels) -> dict[str, float]:
    """Metrics of one evaluation split. `predictions` are class ids, or scores for regression."""
    p, y = np.asarray(predictions), np.asarray(labels)
    if task.is_regression:
        return {"pearson": _correlation(pearsonr, p, y), "spearman": _correlation(spearmanr, p, y)}
    out = {"accuracy": float(accuracy_score(y, p))}
    if "f1" in task.metrics:
        # GLUE's F1 (two labels: the second is positive); macro F1 over the labels of a task with more
        out["f1"] = float(f1_score(y, p, zero_division=0.0, average="binary" if task.num_labels == 2 else "macro",
                                   labels=None if task.num_labels == 2 else list(range(task.num_labels))))
    if "mcc" in task.metrics:
        out["mcc"] = float(matthews_corrcoef(y, p))
    return out


def task_metrics(task: Task, per_split: dict[str, tuple]) -> dict[str, float]:
    """Combine splits: MNLI's mismatched split gets the `_mm` suffix, every other task has one split."""
    out: dict[str, float] = {}
    for split, (pred, lab) in per_split.items():
        suffix = "_mm" if split == "dev_mismatched" else ""
        out.update({k + suffix: v for k, v in split_metrics(task, pred, lab).items()})
    return out
