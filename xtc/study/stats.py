"""The statistics shared by claims, tables and curves: intervals that combine seeds and dev-set sampling, Holm's
adjustment of a family of tests, the power calculation behind "seeds to decide", and collapse detection.

Interval of an effect
---------------------
An effect is sum_t w_t mean_s d_ts over tasks t and seeds s (w_t = 1/T, or a contrast of task groups), where d_ts
is a linear function of scores (x100) of runs of task t with seed s (a difference of two arms, or of a student
and the teacher). Two sources of noise enter it:

- seeds: per task the d_ts vary over seeds with sd s_t; their part of the variance is sum_t w_t^2 s_t^2 / n_t
  (the stratified t of `stratified_t`, Welch-Satterthwaite df);
- the dev set: each dev set is one sample of its task's examples. A paired bootstrap over dev examples within
  seeds (`DevBootstrap`) redraws each task's dev examples (the same draw for every run of the task: arms, seeds
  and the teacher stay paired) and recomputes every run's score from its `dev_predictions.json`; the variance of
  the effect over the redraws is the dev part (it does not shrink with more seeds: the dev set is fixed).

The interval is effect +- t_q(df) sqrt(seed part + dev part), df Satterthwaite's with the dev part counted as
known (infinite df). Why not a percentile bootstrap over seeds as well: with 2 to 5 seeds per task a resample of
seeds has a handful of distinct values and its interval is far too narrow; the t part is exact under normal seed
noise and widens honestly at small n. The bootstrap draws come from a fixed RNG seed (BOOTSTRAP_SEED), so the
CSVs are the same on every run. Runs without dev predictions (records written before they existed) leave the dev
part out and the row says so.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

from xtc.files import DEV_PREDICTIONS_FILE

CONFIDENCE = 0.95  # every interval of the study: claims, tables, learning curves
POWER = 0.80  # "seeds to decide": the seeds that give this chance of deciding
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20220604  # fixed: the same draws (and CSVs) on every run


def tq(df: float, confidence: float = CONFIDENCE) -> float:
    """The two-sided t quantile of a `confidence` interval with df degrees of freedom (normal for df = inf)."""
    from scipy.stats import norm, t

    if math.isinf(df):
        return float(norm.ppf(0.5 + confidence / 2))
    return float(t.ppf(0.5 + confidence / 2, df))


def _mean(xs):
    return sum(xs) / len(xs)


def _var(xs):
    m = _mean(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


# ----------------------------------------------------------------------------------------------- intervals


def stratified_t(diffs: dict, weights: dict | None = None, dev_var: float = 0.0,
                 confidence: float = CONFIDENCE) -> dict:
    """Effect = sum_t w_t mean_s(d_ts) over tasks t (w_t = 1/T by default) from paired differences
    {task: {seed: d}}, and its interval: seed part by the stratified t (Welch-Satterthwaite df) plus `dev_var`,
    the dev-set sampling variance of the effect (DevBootstrap), counted with infinite df. CI is NaN when a task
    has fewer than 2 seeds. Returns effect, ci_low, ci_high, se, se_seeds, se_dev, df, n (fewest seeds of a
    task), n_tasks, weights, and per task mean, sd and n."""
    tasks = [t for t in diffs if len(diffs[t])]
    w = weights or {t: 1 / len(tasks) for t in tasks}
    per = {t: {"mean": _mean(list(diffs[t].values())), "n": len(diffs[t]),
               "sd": math.sqrt(_var(list(diffs[t].values()))) if len(diffs[t]) > 1 else math.nan}
           for t in tasks}
    out = {"effect": sum(w[t] * per[t]["mean"] for t in tasks) if tasks else math.nan,
           "n": min((per[t]["n"] for t in tasks), default=0), "n_tasks": len(tasks), "per_task": per,
           "weights": {t: w[t] for t in tasks}, "ci_low": math.nan, "ci_high": math.nan, "se": math.nan,
           "se_seeds": math.nan, "se_dev": math.sqrt(dev_var) if dev_var else 0.0, "df": math.nan}
    if not tasks or out["n"] < 2:
        return out
    terms = {t: w[t] ** 2 * per[t]["sd"] ** 2 / per[t]["n"] for t in tasks}
    seed_var = sum(terms.values())
    var = seed_var + dev_var
    denom = sum(terms[t] ** 2 / (per[t]["n"] - 1) for t in tasks)
    df = var ** 2 / denom if denom > 0 else (math.inf if dev_var > 0 else float(sum(per[t]["n"] - 1 for t in tasks)))
    half = tq(df, confidence) * math.sqrt(var)
    out.update(se=math.sqrt(var), se_seeds=math.sqrt(seed_var), df=df, ci_low=out["effect"] - half,
               ci_high=out["effect"] + half)
    return out


def interval_at(st: dict, confidence: float) -> tuple[float, float]:
    """The interval of a stratified_t result at another confidence (a Holm level): same se and df."""
    if math.isnan(st["se"]):
        return math.nan, math.nan
    half = tq(st["df"], confidence) * st["se"]
    return st["effect"] - half, st["effect"] + half


def p_value(st: dict, boundary: float) -> float:
    """Two-sided p-value of "effect = boundary" under the interval's t (NaN without an interval). A row's
    verdict is decided at a level alpha exactly when its (1 - alpha) interval is clear of the boundary."""
    from scipy.stats import norm, t

    if math.isnan(st["se"]):
        return math.nan
    if st["se"] == 0:
        return 0.0 if st["effect"] != boundary else 1.0
    z = abs(st["effect"] - boundary) / st["se"]
    return float(2 * (norm.sf(z) if math.isinf(st["df"]) else t.sf(z, st["df"])))


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control) in the order given; NaN stays NaN and is
    not counted in the family. Sorted p_(1) <= ... <= p_(m): adj_(k) = max_{j<=k} min(1, (m - j + 1) p_(j))."""
    p = list(pvalues)
    idx = sorted((i for i, x in enumerate(p) if not math.isnan(x)), key=lambda i: (p[i], i))
    m = len(idx)
    out = [math.nan] * len(p)
    running = 0.0
    for k, i in enumerate(idx):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out


def holm_levels(pvalues, alpha: float = 1 - CONFIDENCE) -> list[float]:
    """Each test's Holm step level alpha / (m - rank + 1) (rank 1 = the smallest p); NaN for a NaN p-value.
    The interval at confidence 1 - level is the one a row's Holm-adjusted verdict corresponds to."""
    p = list(pvalues)
    idx = sorted((i for i, x in enumerate(p) if not math.isnan(x)), key=lambda i: (p[i], i))
    out = [math.nan] * len(p)
    for k, i in enumerate(idx):
        out[i] = alpha / (len(idx) - k)
    return out


# ----------------------------------------------------------------------------------------------- power


def power_at(st: dict, boundary: float, n: int, alpha: float = 1 - CONFIDENCE) -> float:
    """The chance that an interval at level 1 - alpha over n seeds per task lands clear of `boundary` on the side
    of the observed effect, if the per-task means, the seed sds and the dev part stay as observed: the
    non-central t (df Satterthwaite's at n seeds, non-centrality |effect - boundary| / se(n))."""
    from scipy.stats import nct, norm

    per, w = st["per_task"], st["weights"]
    terms = [w[t] ** 2 * per[t]["sd"] ** 2 / n for t in per]
    var = sum(terms) + st["se_dev"] ** 2
    gap = abs(st["effect"] - boundary)
    if var == 0:
        return 1.0 if gap > 0 else 0.0
    denom = sum(x ** 2 / (n - 1) for x in terms)
    df = var ** 2 / denom if denom > 0 else math.inf
    nc = gap / math.sqrt(var)
    if math.isinf(df):
        return float(norm.sf(norm.ppf(1 - alpha / 2) - nc))
    return float(nct.sf(tq(df, 1 - alpha), df, nc))


def seeds_for_power(st: dict, boundary: float, power: float = POWER, alpha: float = 1 - CONFIDENCE,
                    max_seeds: int = 1000):
    """The fewest seeds per task (>= 2) whose interval clears `boundary` with probability `power` (80%), if the
    effect and the sds stay as observed; None if more than max_seeds or never (an effect on the boundary, or a
    dev-set part that alone keeps the interval across it: more seeds do not shrink it)."""
    per = st.get("per_task") or {}
    if not per or any(math.isnan(p["sd"]) for p in per.values()):
        return None
    if abs(st["effect"] - boundary) == 0:
        return None
    if st["se_dev"] > 0 and power_at({**st, "per_task": {t: {**p, "sd": 0.0} for t, p in per.items()}},
                                     boundary, 2, alpha) < power:
        return None  # the dev part alone: infinitely many seeds would not reach the power
    lo, hi = 2, max_seeds
    if power_at(st, boundary, hi, alpha) < power:
        return None
    while lo < hi:  # power grows with n
        mid = (lo + hi) // 2
        if power_at(st, boundary, mid, alpha) >= power:
            hi = mid
        else:
            lo = mid + 1
    return lo


# ----------------------------------------------------------------------------------------------- dev bootstrap


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)


def _pearson_rows(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    pc, yc = p - p.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    den = np.sqrt((pc ** 2).sum(-1) * (yc ** 2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (pc * yc).sum(-1) / den
    return np.where(den > 0, r, 0.0)  # as xtc.metrics: a constant scores 0


def resampled_metrics(metric: str, pred: np.ndarray, labels: np.ndarray, idx: np.ndarray, num_labels: int = 2):
    """A metric (xtc.metrics' definitions) of predictions on each row of dev-example indices idx (B x N):
    an array of B values; None for a metric it does not compute (MNLI's mismatched split)."""
    p, y = pred[idx], labels[idx]
    if metric == "accuracy":
        return (p == y).mean(-1)
    if metric in ("pearson", "spearman"):
        p, y = p.astype(float), y.astype(float)
        return _pearson_rows(_ranks(p), _ranks(y)) if metric == "spearman" else _pearson_rows(p, y)
    if metric == "f1" and num_labels == 2:
        tp = ((p == 1) & (y == 1)).sum(-1)
        fp = ((p == 1) & (y != 1)).sum(-1)
        fn = ((p != 1) & (y == 1)).sum(-1)
        den = 2 * tp + fp + fn
        return np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)
    if metric == "mcc":
        k = num_labels
        conf = np.stack([np.bincount(yi * k + pi, minlength=k * k).reshape(k, k) for yi, pi in zip(y, p)]).astype(float)
        t_k, p_k = conf.sum(2), conf.sum(1)  # true and predicted counts per class
        c, s = np.trace(conf, axis1=1, axis2=2), conf.sum((1, 2))
        num = c * s - (t_k * p_k).sum(1)
        den = np.sqrt((s ** 2 - (p_k ** 2).sum(1)) * (s ** 2 - (t_k ** 2).sum(1)))
        return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
    return None


def read_predictions(run_dir: str) -> dict | None:
    """A run's dev_predictions.json (plain JSON), or None when absent or unreadable (older records)."""
    try:
        with open(os.path.join(run_dir, DEV_PREDICTIONS_FILE)) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("selected"), list) or \
            len(rec.get("selected", [])) != len(rec.get("labels") or []):
        return None
    return rec


def is_collapsed(predictions, regression: bool) -> bool:
    """A run that predicts one class for every dev example, or one constant score (a collapsed student)."""
    p = np.asarray(predictions, dtype=float)
    if not len(p):
        return False
    return bool(np.ptp(p) <= 1e-6 * max(1.0, float(np.abs(p).max()))) if regression else bool((p == p[0]).all())


class DevBootstrap:
    """Bootstrap replicates of run scores (x100) over dev examples: per task one fixed matrix of B draws of its
    dev indices (seeded by BOOTSTRAP_SEED and the task's name), shared by every run of the task so that arms,
    seeds and the teacher stay paired. `scores(run_id)` is the B-vector of a run's task score (the mean of its
    metrics, as runs.csv's `score`), None when the run has no usable predictions."""

    def __init__(self, runs, metrics_of, num_labels_of, resamples: int = BOOTSTRAP_RESAMPLES):
        self._dirs = {}
        self._task = {}
        if len(runs) and "run_dir" in runs:
            first = runs.drop_duplicates("run_id")
            self._dirs = dict(zip(first["run_id"], first["run_dir"]))
            self._task = dict(zip(first["run_id"], first["task"]))
        self.metrics_of, self.num_labels_of, self.resamples = metrics_of, num_labels_of, resamples
        self._idx: dict = {}
        self._labels: dict = {}  # per task, the first run's dev labels: every run must have been scored on them
        self._cache: dict = {}

    def indices(self, task: str, n: int) -> np.ndarray:
        key = (task, n)
        if key not in self._idx:
            seed = [BOOTSTRAP_SEED, *task.encode()]
            self._idx[key] = np.random.default_rng(seed).integers(0, n, size=(self.resamples, n))
        return self._idx[key]

    def same_dev_set(self, task: str, labels: np.ndarray) -> bool:
        """Whether a run was scored on the task's dev set as its other runs were (same labels, same order): only
        then are its replicates paired with theirs."""
        first = self._labels.setdefault(task, labels)
        return first.shape == labels.shape and bool((first == labels).all())

    def scores(self, run_id: str):
        if run_id not in self._cache:
            self._cache[run_id] = self._compute(run_id)
        return self._cache[run_id]

    def _compute(self, run_id):
        d, task = self._dirs.get(run_id), self._task.get(run_id)
        rec = read_predictions(d) if d else None
        if rec is None:
            return None
        labels, pred = np.asarray(rec["labels"]), np.asarray(rec["selected"])
        if not len(labels) or not self.same_dev_set(task, labels):
            return None  # not paired with the task's other runs: this run's effects fall back to seeds only
        idx = self.indices(task, len(labels))
        vals = [resampled_metrics(m, pred, labels, idx, self.num_labels_of(task)) for m in self.metrics_of(task)]
        if any(v is None for v in vals):
            return None
        return 100 * np.mean(vals, axis=0)


def dev_variance(boot_diffs: dict, weights: dict | None = None):
    """The dev-set sampling variance of an effect sum_t w_t mean_s d_ts from bootstrap replicates of its paired
    differences {task: {seed: B-vector}} (the draws shared by the runs of a task); None when a run lacks them."""
    tasks = [t for t in boot_diffs if len(boot_diffs[t])]
    if not tasks or any(v is None for t in tasks for v in boot_diffs[t].values()):
        return None
    w = weights or {t: 1 / len(tasks) for t in tasks}
    eff = sum(w[t] * np.mean(np.stack(list(boot_diffs[t].values())), axis=0) for t in tasks)
    return float(np.var(eff, ddof=1))
