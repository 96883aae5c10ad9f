"""The five findings of the XTC recipe as statistical tests on the results, decided per task first.

Each test is an *effect*: a difference of dev scores (x100, "points") paired by task and seed wherever the grid
pairs them (every student axis point runs with the same seeds; the teacher is one run per task and enters as a
fixed reference). Every test has one row per task, in that task's own metric, and one pooled row ("all": the
tasks averaged with equal weight, as the tables' Avg is). Intervals combine seeds and dev-set sampling
(xtc.study.stats: a stratified t over seeds plus a paired bootstrap over dev examples within seeds); rows whose
runs have no dev_predictions.json (older records) fall back to seeds only and say so in `interval`.

Roles (column `role`): "decides" (the paper's comparison: these rows decide the finding), "control" (the same
finding with a confound removed: augmentation at matched optimizer steps, two-stage KD at the one-stage learning
rate; they say what the deciding effect is made of and do not enter the finding's verdict), "not testable here"
(the profile cannot test it; `decide` says what would).

Decision rules, written in each row's `rule`:
  superiority      holds if the interval is clear above 0; does not hold if clear below 0
  non-inferiority  ("matches or beats", margin m > 0): holds if clear above -m; does not hold if clear below -m
  deterministic    (sizes, which do not vary with seeds): holds if the measured value reaches the threshold
  conjunction      (finding 5: size and loss): holds if both hold, does not hold if one does not
The family-wise error is controlled by Holm over the statistical rows of each role (deciding rows one family,
control rows another): a row is decided when its Holm-adjusted p-value (`p_holm`) is below 1 - CONFIDENCE, i.e.
when its interval at its Holm level (`holm_low`, `holm_high`) is clear of the boundary. A pooled row cannot hold
while a task's own row does not hold (nor fail while one holds): then it is "inconclusive", and `agreement` counts
the tasks. "Inconclusive" rows say in `decide` what would decide them: the seeds per task that give 80% power
(xtc.study.stats.seeds_for_power) if the effect and its sds stay as observed, or why seeds cannot.

Margins come from the paper's statements and the config's `claims` section, fixed before any result is looked
at. The size claim counts as the paper does (quantized weights only, against the paper's ~50x) and reports the
whole file beside it; the depth claims look at half the teacher's depth.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from xtc.study.config import resolve_epochs
from xtc.study.grid import axis_tasks
from xtc.study.stats import (CONFIDENCE, POWER, DevBootstrap, dev_variance, holm, holm_levels, interval_at, p_value,
                             seeds_for_power, stratified_t)
from xtc.study.sizes import (PAPER_SIZE, architecture_bytes, half_depth, one_bit_ceiling, paper_size_share,
                             teacher_architecture)
from xtc.study.views import axis_config as _axis, axis_view, isnan, task_title, teacher_view

VERDICTS = ("holds", "does not hold", "inconclusive")
ROLES = ("decides", "control", "not testable here")
POOLED = "all"  # the task column of a pooled row
MAX_PRACTICAL_SEEDS = 20  # beyond this, "add seeds" is not advice a study can follow

CLAIMS = {
    1: "Earlier extreme-quantization baselines were under-trained: longer training closes most of the gap.",
    2: "With long training, one-stage KD matches or beats multi-stage KD.",
    3: "Data augmentation helps, most on the small tasks (CoLA, MRPC, RTE, STS-B).",
    4: "Layer reduction by copying teacher layers, with KD fine-tuning and no pre-training distillation, gives "
       "a 5/6-layer model better than TinyBERT-6L.",
    5: "Layer reduction plus 1-bit weights cuts size ~50x with a small loss (1-bit: GLUE avg 83.44 vs 83.95).",
}

CLAIMS_COLUMNS = ["claim", "finding", "task", "role", "comparison", "statement", "compare", "effect", "ci_low",
                  "ci_high", "interval", "se_seeds", "se_dev", "p_value", "p_holm", "holm_level", "holm_low",
                  "holm_high", "n", "n_tasks", "df", "margin", "rule", "verdict", "agreement", "finding_verdict",
                  "decide", "mean_a", "sd_a", "mean_b", "sd_b", "threshold", "evidence", "numbers", "note"]

POOLING_RULE = ("pooled (tasks averaged with equal weight): holds only if its Holm-adjusted test holds and no task's "
                "own row does not hold; does not hold only if its test does not hold and no task's row holds; "
                "else inconclusive")


# ----------------------------------------------------------------------------------------------- decision rules


def boundary_of(kind: str, margin: float) -> float:
    """The CI boundary of a test: 0 for superiority, -margin for non-inferiority."""
    if kind == "superiority":
        return 0.0
    if kind == "non-inferiority":
        return -margin
    raise ValueError(f"unknown test kind {kind!r}: superiority or non-inferiority")


def decide(estimate: dict, margin: float, kind: str) -> str:
    """Verdict of a superiority (boundary 0) or non-inferiority (boundary -margin) test on estimate's interval; ties are
    not wins."""
    if math.isnan(estimate["ci_low"]):
        return "inconclusive"
    boundary = boundary_of(kind, margin)
    if estimate["ci_low"] > boundary:
        return "holds"
    if estimate["ci_high"] < boundary:
        return "does not hold"
    return "inconclusive"


def rule_text(kind: str, margin: float) -> str:
    c = "Holm-adjusted interval"
    if kind == "deterministic":
        return "deterministic (does not vary with seeds): holds if the measured value reaches the threshold"
    if kind == "conjunction":
        return "conjunction: holds if every part holds; does not hold if one part does not hold; else inconclusive"
    if kind == "superiority":
        return f"superiority: holds if the {c} is above 0; does not hold if it is below 0; else inconclusive"
    boundary_of(kind, margin)  # refuses an unknown kind
    return (f"non-inferiority, margin {margin:g}: holds if the {c} is above -{margin:g}; does not hold if it is "
            f"below -{margin:g}; else inconclusive")


def decide_text(estimate: dict, verdict: str, margin: float, kind: str, alpha: float = 1 - CONFIDENCE) -> str:
    """What would decide an inconclusive test (empty otherwise): the seeds per task for 80% power at level alpha
    if the effect and its sds stay as observed, or why seeds would not."""
    if verdict != "inconclusive":
        return ""
    if estimate["n_tasks"] == 0:
        return "no paired runs: run the axis"
    if estimate["n"] < 2:
        return "a CI needs at least 2 finished seeds per task: run more seeds"
    boundary = boundary_of(kind, margin)
    n = seeds_for_power(estimate, boundary, alpha=alpha, max_seeds=1000)
    if n is not None and n <= MAX_PRACTICAL_SEEDS:
        return (f"~{n} seeds per task give {100 * POWER:g}% power to clear {boundary:g} at level {alpha:.3g} if the "
                f"effect ({estimate['effect']:+.2f}) and its sds stay as observed")
    why = (f"more than {MAX_PRACTICAL_SEEDS}" if n is None or n > MAX_PRACTICAL_SEEDS else str(n))
    dev = "; the dev-set part does not shrink with seeds" if estimate.get("se_dev") else ""
    return (f"the effect ({estimate['effect']:+.2f}) is too close to {boundary:g} for seeds to decide it ({why} seeds per "
            f"task for {100 * POWER:g}% power{dev}); only a change in the effect itself (a longer budget, a stronger "
            "teacher) or a larger dev set would")


# ----------------------------------------------------------------------------------------------- data access


def _mean(xs):
    return sum(xs) / len(xs)


def _var(xs):
    m = _mean(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


@dataclass
class Arm:
    """One side of a comparison. A student arm: per task {seed: score x100}, the same shape of dev-bootstrap
    replicates (None where a run has no dev_predictions.json) and run ids; the teacher: per task one score (a
    fixed reference), its replicates and its run id."""
    scores: dict = field(default_factory=dict)
    boots: dict = field(default_factory=dict)
    run_ids: dict = field(default_factory=dict)  # {task: [run ids]}


class Data:
    """What the claims read: the aggregated runs, the dev bootstrap of their predictions, which runs collapsed
    and which selected their checkpoint on dev (older records)."""

    def __init__(self, config: dict, runs, missing=None):
        from xtc.study.aggregate import score_metrics
        from xtc.study.config import task_of

        self.config, self.runs, self.missing = config, runs, missing
        self.boot = DevBootstrap(runs, lambda t: score_metrics(t, config), lambda t: task_of(config, t).num_labels)
        first = runs.drop_duplicates("run_id") if len(runs) else runs
        self.collapsed = set(first.loc[first["collapsed"].eq(True), "run_id"]) if "collapsed" in first else set()
        self.dev_selected = set(first.loc[first["selected_by"] != "validation", "run_id"]) \
            if "selected_by" in first else set(first["run_id"]) if len(first) else set()
        self._views: dict = {}

    def view(self, axis: str):
        if axis not in self._views:
            self._views[axis] = axis_view(self.config, axis, self.runs, self.missing)
        return self._views[axis]

    def arm(self, view, **where) -> Arm:
        """The runs of the axis points matching `where` (v_<factor> or setting columns)."""
        out = Arm()
        if not len(view):
            return out
        sel = view
        for k, v in where.items():
            sel = sel[sel[k] == v]
        for r in sel.to_dict("records"):
            runs = dict(r.get("seed_runs") or {})
            out.scores[r["task"]] = dict(r["seed_scores"])
            out.boots[r["task"]] = {s: self.boot.scores(runs[s]) if s in runs else None for s in r["seed_scores"]}
            out.run_ids[r["task"]] = list(runs.values())
        return out

    def teacher(self, tasks) -> Arm:
        from xtc.study.paths import teacher_run_id

        tv = teacher_view(self.config, self.runs)
        out = Arm()
        for t in tasks:
            out.scores[t] = tv[t]["score"]
            out.boots[t] = self.boot.scores(teacher_run_id(t))
            out.run_ids[t] = [teacher_run_id(t)]
        return out


def _at(values: dict, task, seed):
    v = values.get(task)
    return v.get(seed) if isinstance(v, dict) else v


def _combine(arms, tasks, fn) -> tuple[dict, dict]:
    """Paired effects {task: {seed: fn(score of each arm)}} over the seeds every student arm has (the teacher is
    one value per task), and the same function of the arms' dev-bootstrap replicates (None where one lacks them)."""
    diffs, boots = {}, {}
    for t in tasks:
        seeds = None
        for arm in arms:
            v = arm.scores.get(t)
            if v is None or (not isinstance(v, dict) and isnan(v)):
                seeds = set()
                break
            if isinstance(v, dict):
                seeds = set(v) if seeds is None else seeds & set(v)
        seeds = sorted(seeds or ())
        diffs[t] = {s: fn(*[_at(a.scores, t, s) for a in arms]) for s in seeds}
        reps = {s: [_at(a.boots, t, s) for a in arms] for s in seeds}
        boots[t] = {s: None if any(x is None for x in reps[s]) else fn(*reps[s]) for s in seeds}
    return diffs, boots


def _sub(x, y):
    return x - y


def _task_mean_and_seed_sd(scores: dict, tasks) -> tuple[float, float]:
    """Mean over tasks of each task's mean over seeds, and the sd over seeds of the per-seed task average
    (the seeds every task has). A per-task constant (the teacher, one run) has sd NaN."""
    vals = [scores.get(t) for t in tasks]
    if not vals or any(v is None or (v == {} if isinstance(v, dict) else isnan(v)) for v in vals):
        return math.nan, math.nan
    if not isinstance(vals[0], dict):
        return _mean(vals), math.nan
    mean = _mean([_mean(list(v.values())) for v in vals])
    seeds = sorted(set.intersection(*(set(v) for v in vals)))
    per_seed = [_mean([v[s] for v in vals]) for s in seeds]
    return mean, math.sqrt(_var(per_seed)) if len(per_seed) > 1 else math.nan


def _interval(diffs: dict, boots: dict, weights=None) -> tuple[dict, str]:
    """The effect's interval (seeds and dev sampling where every run has predictions) and how it was made."""
    have = {t: d for t, d in diffs.items() if d}
    reps = {t: boots[t] for t in have}
    dv = dev_variance(reps, weights) if have else None
    estimate = stratified_t(have, weights, dev_var=dv or 0.0)
    n_runs = sum(len(v) for v in reps.values())
    lacking = sum(1 for v in reps.values() for x in v.values() if x is None)
    if estimate["n"] < 2:
        how = "none: fewer than 2 seeds"
    elif dv is not None:
        how = "seeds + dev bootstrap (paired over dev examples within seeds)"
    else:
        how = (f"seeds only: {lacking} of {n_runs} paired effects lack dev_predictions.json (older records); the "
               "dev set's sampling error is not in it")
    return estimate, how


def _no_effect() -> dict:
    return {"effect": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0, "n_tasks": 0, "df": math.nan,
            "se": math.nan, "se_seeds": math.nan, "se_dev": math.nan, "per_task": {}, "weights": {}}


@dataclass
class Row:
    """One row of claims.csv: a test of a finding on one task (or pooled: task "all")."""
    claim: str
    finding: int
    task: str
    role: str
    comparison: str
    compare: str
    kind: str
    margin: float = 0.0
    estimate: dict = field(default_factory=_no_effect)
    interval: str = ""
    verdict: str | None = None  # fixed (deterministic, missing runs, not testable); None: the test decides
    decide: str | None = None
    threshold: str = ""
    evidence: str = ""
    note: str = ""
    numbers: dict = field(default_factory=dict)
    means: tuple = (math.nan, math.nan, math.nan, math.nan)  # mean_a, sd_a, mean_b, sd_b
    p_value: float = math.nan
    p_holm: float = math.nan
    holm_level: float = math.nan
    holm_low: float = math.nan
    holm_high: float = math.nan
    agreement: str = ""
    finding_verdict: str = ""

    @property
    def tested(self) -> bool:
        return self.verdict is None and self.kind in ("superiority", "non-inferiority")

    def record(self) -> dict:
        estimate = self.estimate
        evidence = self.evidence
        if not evidence and not isnan(estimate["effect"]):
            evidence = f"{task_title(self.task) if self.task != POOLED else 'pooled'} {estimate['effect']:+.2f}"
            if not isnan(estimate["ci_low"]):
                evidence += f" [{estimate['ci_low']:+.2f}, {estimate['ci_high']:+.2f}]"
            if not isnan(self.holm_low):
                evidence += f", Holm [{self.holm_low:+.2f}, {self.holm_high:+.2f}]"
            evidence += f", n={estimate['n']}"
            if self.task == POOLED and len(estimate["per_task"]) > 1:
                evidence += "; " + ", ".join(f"{task_title(t)} {p['mean']:+.2f}" for t, p in estimate["per_task"].items())
        return {"claim": self.claim, "finding": self.finding, "task": self.task, "role": self.role,
                "comparison": self.comparison, "statement": CLAIMS[self.finding], "compare": self.compare,
                "effect": estimate["effect"], "ci_low": estimate["ci_low"], "ci_high": estimate["ci_high"], "interval": self.interval,
                "se_seeds": estimate["se_seeds"], "se_dev": estimate["se_dev"], "p_value": self.p_value, "p_holm": self.p_holm,
                "holm_level": self.holm_level, "holm_low": self.holm_low, "holm_high": self.holm_high,
                "n": estimate["n"], "n_tasks": estimate["n_tasks"], "df": estimate["df"], "margin": self.margin,
                "rule": rule_text(self.kind, self.margin) + ("; " + POOLING_RULE if self.task == POOLED
                                                             and self.agreement else ""),
                "verdict": self.verdict, "agreement": self.agreement, "finding_verdict": self.finding_verdict,
                "decide": self.decide or "", "mean_a": self.means[0], "sd_a": self.means[1],
                "mean_b": self.means[2], "sd_b": self.means[3], "threshold": self.threshold, "evidence": evidence,
                "numbers": json.dumps(_clean({"per_task": estimate["per_task"], "se": estimate["se"], **self.numbers}),
                                      sort_keys=True, allow_nan=False),
                "note": self.note}


def _empty(claim, finding, compare, margin, kind, why, note="", threshold="", role="decides",
           comparison="") -> Row:
    return Row(claim, finding, POOLED, role, comparison or compare, compare, kind, margin, verdict="inconclusive",
               decide=why, evidence=why, note=note, threshold=threshold)


def _nan_json(x):
    return None if isnan(x) else x


def _clean(x):
    """JSON-safe: NaN -> null, numpy scalars -> Python numbers, keys -> str."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item"):
        x = x.item()
    return _nan_json(x) if isinstance(x, float) else x


@dataclass
class Test:
    """A comparison on an axis: paired effects per task and seed, tested per task and pooled."""
    claim: str
    finding: int
    role: str
    comparison: str  # in words: what decided the row
    compare: str  # the formula
    kind: str
    margin: float
    arms: tuple  # (a, b, ...) for the means and the run ids
    tasks: list
    fn: object = _sub
    weights: dict | None = None  # a contrast of task groups (pooled row only)
    per_task: bool = True
    threshold: str = ""
    note: str = ""
    numbers: dict = field(default_factory=dict)
    task_numbers: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)  # {task or POOLED: (verdict, decide)}: what the data cannot decide


def _run_notes(data: Data, test: Test, tasks) -> str:
    ids = sorted({r for a in test.arms for t in tasks for r in a.run_ids.get(t, [])})
    notes = []
    col = [r for r in ids if r in data.collapsed]
    if col:
        notes.append(f"{len(col)} of {len(ids)} runs collapsed (one class or one constant score for every dev "
                     f"example): {', '.join(col[:3])}{' ...' if len(col) > 3 else ''}")
    dev = [r for r in ids if r in data.dev_selected]
    if dev:
        notes.append(f"{len(dev)} of {len(ids)} runs chose their checkpoint on dev, the set reported (older records "
                     "or --validation-samples 0)")
    return "; ".join(notes)


def _rows_of(data: Data, test: Test) -> list[Row]:
    diffs, boots = _combine(test.arms, test.tasks, test.fn)
    a, b = test.arms[0], test.arms[1] if len(test.arms) > 1 else None
    rows = []
    groups = ([(t, [t]) for t in test.tasks] if test.per_task else []) + [(POOLED, list(test.tasks))]
    for task, tasks in groups:
        w = test.weights if task == POOLED else None
        estimate, how = _interval({t: diffs[t] for t in tasks}, {t: boots[t] for t in tasks}, w)
        ma, sa = _task_mean_and_seed_sd(a.scores, tasks)
        mb, sb = _task_mean_and_seed_sd(b.scores, tasks) if b is not None else (math.nan, math.nan)
        verdict, dec = test.fixed.get(task, (None, None))
        if verdict is None and estimate["n_tasks"] < len(tasks):
            verdict, dec = "inconclusive", (f"paired runs finished for {estimate['n_tasks']} of {len(tasks)} tasks"
                                            if task == POOLED else "no paired runs of this task")
        note = "; ".join(x for x in (test.note, _run_notes(data, test, tasks)) if x)
        numbers = {**(test.numbers if task == POOLED else test.task_numbers.get(task, {}))}
        rows.append(Row(test.claim, test.finding, task, test.role, test.comparison, test.compare, test.kind,
                        test.margin, estimate, how if estimate["n_tasks"] else "", verdict, dec, test.threshold,
                        evidence="" if estimate["n_tasks"] else "no paired runs", note=note, numbers=numbers,
                        means=(ma, sa, mb, sb)))
    return rows


# ----------------------------------------------------------------------------------------------- the claims


def claim_budget(data: Data) -> list[Row]:
    """Finding 1, per quantized bit-width b of the `budget` axis. With T the teacher's score, S and L the
    student's at the shortest and longest budget (paired by task and seed), "closes most of the gap" means
    gap(L) = T - L < (1 - c) (T - S), c = claims.closed_share (0.5: "most" is more than half).
    Effect = (1 - c)(T - S) - (T - L) = L - (1 - c) S - c T, superiority, per task and pooled. Where the shortest
    budget leaves no gap of at least claims.min_gap points there is nothing to close: inconclusive."""
    config = data.config
    c = config["claims"]
    share = c["closed_share"]
    ax = _axis(config, "budget")
    compare = f"(1-{share:g})*gap(shortest) - gap(longest)"
    if not ax or "epochs" not in ax["vary"]:
        return [_empty("1", 1, compare, 0.0, "superiority", "no 'budget' axis varying epochs in the config")]
    tasks = axis_tasks(config, "budget")
    view = data.view("budget")
    teacher = data.teacher(tasks)
    budgets = sorted(ax["vary"]["epochs"], key=lambda v: resolve_epochs(config, tasks[0], v))
    short, long = budgets[0], budgets[-1]
    fixed_bits = (ax.get("set") or {}).get("wbits", config["anchor"]["wbits"])
    bits = sorted({int(b) for b in ax["vary"].get("wbits", [fixed_bits]) if int(b) < 32})
    eps = f"{resolve_epochs(config, tasks[0], short):g}"
    epl = f"{resolve_epochs(config, tasks[0], long):g}"
    rows = []
    for b in bits:
        where = {"wbits": b} if "wbits" in ax["vary"] else {}
        s, lg = data.arm(view, v_epochs=short, **where), data.arm(view, v_epochs=long, **where)
        claim, cmp_b = f"1.W{b}", f"W{b}: {compare}, budgets {short} -> {long}"
        if any(isnan(teacher.scores.get(t)) for t in tasks):
            rows.append(_empty(claim, 1, cmp_b, 0.0, "superiority", "teacher runs missing"))
            continue
        gs, _ = _combine((teacher, s), tasks, _sub)
        gl, _ = _combine((teacher, lg), tasks, _sub)
        gap = {t: (_mean(list(gs[t].values())) if gs[t] else math.nan,
                   _mean(list(gl[t].values())) if gl[t] else math.nan) for t in tasks}
        pooled_gap = (stratified_t(gs)["effect"], stratified_t(gl)["effect"])
        fixed = {}
        for t, (g0, _) in [*gap.items(), (POOLED, pooled_gap)]:
            if not isnan(g0) and g0 < c["min_gap"]:
                fixed[t] = ("inconclusive", f"no gap of at least {c['min_gap']:g} points at the shortest budget: "
                                            "nothing to close")

        def nums(g0, g1):
            return {"gap_short": g0, "gap_long": g1, "short_budget": short, "long_budget": long,
                    "closed_share_observed": (g0 - g1) / g0 if g0 and not isnan(g0) and not isnan(g1) else None}

        rows += _rows_of(data, Test(
            claim, 1, "decides", f"W{b}: budget {long} ({epl} ep) vs {short} ({eps} ep), gap to the teacher", cmp_b,
            "superiority", 0.0, (lg, s, teacher), tasks, fn=lambda l_, s_, t_: l_ - (1 - share) * s_ - share * t_,
            threshold=f"closed share > {share:g}; gap(shortest) >= {c['min_gap']:g}", fixed=fixed,
            numbers={**nums(*pooled_gap), "teacher": {t: teacher.scores[t] for t in tasks}},
            task_numbers={t: nums(*gap[t]) for t in tasks},
            note=f"a = longest budget, b = shortest; the verdict is about this config's budgets ({eps} -> {epl} "
                 "epochs), not training to convergence; teacher: one run per task (a fixed reference)"))
    if not rows:
        rows.append(_empty("1", 1, compare, 0.0, "superiority", "no quantized bit-width in the budget axis"))
    return rows


def claim_kd(data: Data) -> list[Row]:
    """Finding 2. In the `kd` axis (trained at the anchor's, long, budget): effect = one-stage - two-stage,
    paired by task and seed; non-inferiority with margin claims.tolerance ("matches or beats"). Two-stage runs
    its first stage at stage1_lr_factor (2.5x, as published): that row decides; the rate-matched control
    "two-stage-1x" (stage 1 at the one-stage rate) gets a row of its own (2.rate)."""
    config = data.config
    m = config["claims"]["tolerance"]
    compare = "one-stage - two-stage"
    ax = _axis(config, "kd")
    if not ax:
        return [_empty("2", 2, compare, m, "non-inferiority", "no 'kd' axis in the config")]
    tasks = axis_tasks(config, "kd")
    view = data.view("kd")
    one = data.arm(view, v_kd="one-stage")
    note = f"budget: the anchor's ({config['anchor']['epochs']})"
    rows = _rows_of(data, Test("2", 2, "decides", "one-stage vs two-stage (stage 1 at 2.5x the rate, as published)",
                               compare, "non-inferiority", m, (one, data.arm(view, v_kd="two-stage")), tasks,
                               note=note))
    cmp_c = "one-stage - two-stage-1x"
    words = "one-stage vs two-stage at the same rate (stage 1 at 1x): the rate-matched control"
    if "two-stage-1x" in ax["vary"].get("kd", []):
        rows += _rows_of(data, Test("2.rate", 2, "control", words, cmp_c, "non-inferiority", m,
                                    (one, data.arm(view, v_kd="two-stage-1x")), tasks, note=note))
    else:
        rows.append(_empty("2.rate", 2, cmp_c, m, "non-inferiority",
                           "add kd level two-stage-1x to the kd axis (the rate-matched control)", role="control",
                           comparison=words))
    return rows


def train_sizes(data: Data, tasks) -> dict:
    """Training examples per task: from the run records (data.train.n) where they say, else the config's cap on
    the task's GLUE training-set size; None where unknown (a task of your own without records)."""
    from xtc.study.plan import GLUE_TRAIN_SIZE

    out = {}
    runs = data.runs
    cap = (data.config.get("data") or {}).get("max_train_samples")
    for t in tasks:
        n = None
        if len(runs) and "train_examples" in runs:
            vals = runs.loc[(runs["task"] == t) & (runs["kind"] == "student"), "train_examples"].dropna()
            if len(vals):
                n = int(vals.min())
        if n is None and t in GLUE_TRAIN_SIZE:
            n = min(cap, GLUE_TRAIN_SIZE[t]) if cap else GLUE_TRAIN_SIZE[t]
        out[t] = n
    return out


def claim_da(data: Data) -> list[Row]:
    """Finding 3. 3.helps: effect = DA on - DA off at matched epochs (the paper's comparison: augmentation
    brings (1 + copies)x the optimizer steps), per task and pooled; superiority. 3.steps, the control: "on-steps"
    (augmented data, the same optimizer steps as "off") - off. 3.small: (mean effect over the small tasks,
    claims.small_tasks) - (over the others), superiority, pooled only; "not testable here" when the axis' tasks
    train on the same number of examples (every task capped to the same N): then it compares tasks, not sizes."""
    config = data.config
    small = set(config["claims"]["small_tasks"])
    ax = _axis(config, "da")
    if not ax:
        return [_empty("3.helps", 3, "on - off", 0.0, "superiority", "no 'da' axis in the config")]
    tasks = axis_tasks(config, "da")
    view = data.view("da")
    on, off = data.arm(view, v_da="on"), data.arm(view, v_da="off")
    rows = _rows_of(data, Test("3.helps", 3, "decides", "DA on vs off, matched epochs (on: (1 + copies)x the "
                               "optimizer steps, as the paper)", "DA on - DA off", "superiority", 0.0, (on, off),
                               tasks))
    words = "DA on-steps vs off, matched optimizer steps: the control (is the gain the data or the steps?)"
    if "on-steps" in ax["vary"].get("da", []):
        rows += _rows_of(data, Test("3.steps", 3, "control", words, "DA on-steps - DA off", "superiority", 0.0,
                                    (data.arm(view, v_da="on-steps"), off), tasks))
    else:
        rows.append(_empty("3.steps", 3, "DA on-steps - DA off", 0.0, "superiority",
                           "add da level on-steps to the da axis (augmentation at matched optimizer steps)",
                           role="control", comparison=words))
    sm, lg = [t for t in tasks if t in small], [t for t in tasks if t not in small]
    cmp_s = f"mean(on - off) over small tasks ({','.join(sm) or 'none'}) - over others ({','.join(lg) or 'none'})"
    if not sm or not lg:
        rows.append(_empty("3.small", 3, cmp_s, 0.0, "superiority",
                           "the axis' tasks are all " + ("small" if sm else "large")
                           + ": add a task of the other group to the da axis"))
        return rows
    sizes = train_sizes(data, tasks)
    known = [n for n in sizes.values() if n is not None]
    if len(known) == len(tasks) and len(set(known)) == 1:
        why = (f"not testable here: every task of the da axis trains on {known[0]} examples "
               "(data.max_train_samples), so 'small' and 'large' tasks do not differ in training-set size and the "
               "contrast would compare tasks, not sizes; to test it, train each task on its own training set "
               "(max_train_samples: null) or vary `examples` on the da axis (one task at two sizes, e.g. 1024 and "
               "8192)")
        rows.append(_empty("3.small", 3, cmp_s, 0.0, "superiority", why, role="not testable here",
                           comparison="small vs large tasks: the DA gain's contrast"))
        return rows
    w = {**{t: 1 / len(sm) for t in sm}, **{t: -1 / len(lg) for t in lg}}
    rows += _rows_of(data, Test("3.small", 3, "decides", "DA gain on small tasks vs on the others, matched epochs",
                                cmp_s, "superiority", 0.0, (on, off), tasks, weights=w, per_task=False,
                                numbers={"small_tasks": sm, "other_tasks": lg, "train_examples": sizes},
                                note="a contrast of task groups: with one task per group, task and size are "
                                     "confounded"))
    return rows


def claim_depth(data: Data) -> list[Row]:
    """Finding 4, adapted (TinyBERT-6L is not trained here): the fp32 KD student at half the teacher's depth
    (6 of 12, as the paper's 6L) against the teacher; effect = student - teacher, per task and pooled (the
    teacher is one run), non-inferiority with margin claims.depth_max_drop."""
    config = data.config
    m = config["claims"]["depth_max_drop"]
    L = config["teacher"]["num_layers"]
    d = half_depth(L)
    compare = f"{d}-layer fp32 student - {L}-layer teacher"
    note = "adapted: the paper compares with TinyBERT-6L, which this suite does not train"
    thr = f"depth {d} = half of the teacher's {L} layers (rounded up)"
    if not _axis(config, "depth"):
        return [_empty("4", 4, compare, m, "non-inferiority", "no 'depth' axis in the config", note, thr)]
    tasks = axis_tasks(config, "depth")
    view = data.view("depth")
    if not len(view) or d not in set(view[view["wbits"] == 32]["depth"]):
        return [_empty("4", 4, compare, m, "non-inferiority", f"add depth {d} to the depth axis", note, thr)]
    stu = data.arm(view[view["wbits"] == 32], depth=d)
    teacher = data.teacher(tasks)
    if any(isnan(teacher.scores[t]) for t in tasks):
        return [_empty("4", 4, compare, m, "non-inferiority", "teacher or student runs missing", note, thr)]
    return _rows_of(data, Test("4", 4, "decides", f"{d}-layer fp32 KD student vs the {L}-layer teacher", compare,
                               "non-inferiority", m, (stu, teacher), tasks, threshold=thr,
                               note=note + "; teacher: one run per task (a fixed reference)"))


SIZE_PAPER = "size, the paper's counting (quantized weights only) vs ~50x"
SIZE_FILE = "size, the whole model (the packed export) vs the architecture's ceiling x the paper's share"


def claim_size(data: Data) -> list[Row]:
    """Finding 5 at half the teacher's depth with 1-bit weights (the paper's 6 of 12 layers), in the `xtc` axis.
    5.size (decides): teacher fp32 bytes / the student's quantized weights at 1 bit (the paper's counting: only
    the quantized matrices and word embeddings, from the architecture) >= the paper's ~50x; deterministic.
    5.size.file (control): teacher fp32 bytes / the packed export's weights (everything: scales and the fp32
    rest) >= paper_size_share() x this architecture's 1-bit ceiling (the check that packing reaches its ceiling).
    5.loss (decides): student - teacher per task and pooled; non-inferiority, margin claims.size_max_drop.
    5: the claim itself, the conjunction of 5.size and 5.loss (pooled)."""
    config = data.config
    L = config["teacher"]["num_layers"]
    d = half_depth(L)
    if not _axis(config, "xtc"):
        return [_empty("5.size", 5, "size ratio", 0.0, "deterministic", "no 'xtc' axis in the config")]
    tasks = axis_tasks(config, "xtc")
    view = data.view("xtc")
    sel = view[(view["wbits"] == 1) & (view["depth"] == d)] if len(view) else view
    arch = teacher_architecture(config)
    cmp_paper = (f"ratio of the {d}-layer 1-bit student's quantized weights (teacher fp32 / 1-bit weights) - "
                 f"{PAPER_SIZE['ratio']:g}")
    cmp_file = f"ratio of the {d}-layer 1-bit student's packed export (teacher fp32 / packed) - required ratio"
    why = ("the teacher's config.json is unreadable: architecture (and its ceiling) unknown" if arch is None else
           f"add depth {d} with wbits 1 to the xtc axis" if not len(sel) else "")
    if why:
        rows = [_empty("5.size", 5, cmp_paper, 0.0, "deterministic", why, comparison=SIZE_PAPER),
                _empty("5.size.file", 5, cmp_file, 0.0, "deterministic", why, role="control", comparison=SIZE_FILE)]
    else:
        from xtc.study.config import task_of

        labels = [task_of(config, t).num_labels for t in tasks]
        teacher_all = teacher_view(config, data.runs)
        t_bytes = [teacher_all[t]["bytes"] for t in tasks if not isnan(teacher_all[t]["bytes"])]
        rows = [_size_paper_row(arch, d, labels, t_bytes, sel, cmp_paper),
                _size_file_row(arch, d, labels, t_bytes, sel, cmp_file)]
    return rows + _loss_rows(data, d, L, tasks, sel) + [
        Row("5", 5, POOLED, "decides", "size (the paper's counting) and accuracy loss, together",
            "5.size and 5.loss", "conjunction", 0.0,
            note="the finding is the conjunction of its deciding rows: it holds only if size and loss both "
                 "hold; a part not testable here leaves it inconclusive unless another part does not hold")]


def _arch_text(arch: dict) -> str:
    return f"V={arch['vocab_size']}, H={arch['hidden_size']}, L={arch['num_layers']}, FFN={arch['intermediate_size']}"


def _size_estimate(effect: float, sel) -> dict:
    """A deterministic effect (sizes do not vary with seeds): its interval is the point."""
    return {**_no_effect(), "effect": effect, "ci_low": effect, "ci_high": effect, "n": int(sel["n"].min()),
            "n_tasks": len(sel), "se": 0.0}


def _size_paper_row(arch: dict, d: int, labels: list, t_bytes: list, sel, compare: str) -> Row:
    """5.size: the paper's counting (quantized weights only, from the architecture) against its ~50x; not
    testable where this architecture's ceiling under that counting is below 50x."""
    if not t_bytes:
        return _empty("5.size", 5, compare, 0.0, "deterministic", "sizes missing", comparison=SIZE_PAPER)
    share = paper_size_share()
    ceiling = _mean([one_bit_ceiling(arch, d, k, quantized_only=True) for k in labels])
    ratio = _mean(t_bytes) / _mean([architecture_bytes(arch, d, 1, k, quantized_only=True) for k in labels])
    effect = ratio - PAPER_SIZE["ratio"]
    testable = ceiling >= PAPER_SIZE["ratio"]
    why = ("" if testable else
           f"not testable here: no 1-bit model of this architecture at {d} layers reaches "
           f"{PAPER_SIZE['ratio']:g}x under the paper's counting (its ceiling is {ceiling:.1f}x: the word "
           f"embeddings outweigh the layers); the figure belongs to BERT-base (ceiling "
           f"{PAPER_SIZE['ratio'] / share:.1f}x); a BERT-base teacher (teacher.model) would test it")
    return Row("5.size", 5, POOLED, "decides" if testable else "not testable here", SIZE_PAPER, compare,
               "deterministic", 0.0, _size_estimate(effect, sel), "none: sizes do not vary",
               ("holds" if effect >= 0 else "does not hold") if testable else "inconclusive", why,
               threshold=f"the paper's ~{PAPER_SIZE['ratio']:g}x, counted as the paper counts (its own ceiling: "
                         f"{PAPER_SIZE['ratio'] / share:.1f}x); this architecture's ceiling under that counting: "
                         f"{ceiling:.1f}x ({_arch_text(arch)})",
               evidence=f"{d}L W1: {ratio:.1f}x (quantized weights only) vs the paper's {PAPER_SIZE['ratio']:g}x",
               numbers={"ratio": ratio, "required": PAPER_SIZE["ratio"], "ceiling": ceiling, "architecture": arch},
               note="counted from the architecture: the quantized matrices and word embeddings at 1 bit, nothing "
                    "else (scales, fp32 embeddings, LayerNorms, biases, pooler and classifier are left out, as the "
                    "paper leaves them out)")


def _size_file_row(arch: dict, d: int, labels: list, t_bytes: list, sel, compare: str) -> Row:
    """5.size.file (control): the packed export against the paper's share of this architecture's ceiling."""
    share = paper_size_share()
    ceiling = _mean([one_bit_ceiling(arch, d, k) for k in labels])
    required = share * ceiling
    s_bytes = [b for b in sel.get("model_bytes", []) if not isnan(b)]
    source = ",".join(sorted(set(sel["size_source"]) - {""})) if "size_source" in sel else ""
    threshold = (f"required {required:.1f}x = {share:.3f} (paper: ~{PAPER_SIZE['ratio']:g}x of its "
                 f"{PAPER_SIZE['ratio'] / share:.1f}x ceiling) x this architecture's {d}-layer 1-bit ceiling "
                 f"{ceiling:.1f}x ({_arch_text(arch)}, fp32 position/token-type embeddings, LayerNorms, biases, "
                 "pooler, classifier)")
    if not t_bytes or not s_bytes:
        return _empty("5.size.file", 5, compare, 0.0, "deterministic", "sizes missing", threshold=threshold,
                      role="control", comparison=SIZE_FILE)
    ratio = _mean(t_bytes) / _mean(s_bytes)
    effect = ratio - required
    return Row("5.size.file", 5, POOLED, "control", SIZE_FILE, compare, "deterministic", 0.0,
               _size_estimate(effect, sel), "none: sizes do not vary", "holds" if effect >= 0 else "does not hold",
               "", threshold,
               evidence=f"{d}L W1: {ratio:.1f}x ({source}) vs required {required:.1f}x (ceiling {ceiling:.1f}x)",
               numbers={"ratio": ratio, "required": required, "ceiling": ceiling, "paper_share": share,
                        "size_source": source})


def _loss_rows(data: Data, d: int, L: int, tasks, sel) -> list[Row]:
    """5.loss: the 1-bit student at half depth against the teacher, per task and pooled (non-inferiority)."""
    m = data.config["claims"]["size_max_drop"]
    compare = f"{d}-layer 1-bit student - {L}-layer teacher"
    teacher = data.teacher(tasks)
    if any(isnan(teacher.scores[t]) for t in tasks) or not len(sel):
        return [_empty("5.loss", 5, compare, m, "non-inferiority", "teacher or 1-bit student runs missing")]
    return _rows_of(data, Test("5.loss", 5, "decides", f"{d}-layer 1-bit student vs the {L}-layer teacher",
                               compare, "non-inferiority", m, (data.arm(sel, depth=d), teacher), tasks,
                               note="teacher: one run per task (a fixed reference)"))


def finding_verdict(verdicts) -> str:
    """A finding holds when every one of its tests holds (a test not testable here counts as inconclusive), does
    not hold when one of them does not."""
    verdicts = list(verdicts)
    if "does not hold" in verdicts:
        return "does not hold"
    return "holds" if verdicts and all(v == "holds" for v in verdicts) else "inconclusive"


def _agreement(pooled: Row, tasks: list[Row]) -> str:
    n = len(tasks)
    count = {v: sum(r.verdict == v for r in tasks) for v in VERDICTS}
    return (f"{count['holds']} of {n} tasks hold, {count['does not hold']} do not hold, "
            f"{count['inconclusive']} inconclusive")


def finish(rows: list[Row], alpha: float = 1 - CONFIDENCE) -> list[Row]:
    """Holm over each role's statistical rows, the verdicts, the pooling rule, what would decide the
    inconclusive rows, the conjunction of finding 5 and each finding's verdict."""
    for role in ("decides", "control"):
        fam = [r for r in rows if r.role == role and r.tested]
        for r in fam:
            r.p_value = p_value(r.estimate, boundary_of(r.kind, r.margin))
        for r, p, lvl in zip(fam, holm([r.p_value for r in fam]), holm_levels([r.p_value for r in fam], alpha)):
            r.p_holm, r.holm_level = p, lvl
            if not math.isnan(lvl):
                r.holm_low, r.holm_high = interval_at(r.estimate, 1 - lvl)
    for r in rows:
        if not r.tested:
            continue
        b = boundary_of(r.kind, r.margin)
        if math.isnan(r.p_holm) or r.p_holm >= alpha:
            r.verdict = "inconclusive"
        else:
            r.verdict = "holds" if r.estimate["effect"] > b else "does not hold"
    for r in rows:  # the pooling rule
        per_task = [x for x in rows if x.claim == r.claim and x.task != POOLED]
        if r.task != POOLED or not per_task:
            continue
        r.agreement = _agreement(r, per_task)
        if r.verdict == "holds" and any(x.verdict == "does not hold" for x in per_task):
            r.verdict, r.decide = "inconclusive", "a task's own row contradicts the pooled effect: " + r.agreement
        elif r.verdict == "does not hold" and any(x.verdict == "holds" for x in per_task):
            r.verdict, r.decide = "inconclusive", "a task's own row contradicts the pooled effect: " + r.agreement
    for r in rows:
        if r.kind == "conjunction":
            parts = [x for x in rows if x.finding == r.finding and x.task == POOLED and x.role == "decides"
                     and x.kind != "conjunction"]
            untestable = [x for x in rows if x.finding == r.finding and x.task == POOLED
                          and x.role == "not testable here"]
            r.verdict = finding_verdict([x.verdict for x in parts] + ["inconclusive"] * len(untestable))
            r.evidence = "; ".join([f"{x.claim} {x.verdict}" for x in parts]
                                   + [f"{x.claim} not testable here" for x in untestable])
            open_parts = [x.claim for x in parts if x.verdict == "inconclusive"]
            r.decide = ("" if r.verdict != "inconclusive" else
                        f"decided by its parts: see {', '.join(open_parts + [x.claim for x in untestable])}")
        if r.verdict == "inconclusive" and r.decide is None:
            r.decide = decide_text(r.estimate, r.verdict, r.margin, r.kind,
                                   r.holm_level if not math.isnan(r.holm_level) else alpha)
        if r.decide is None:
            r.decide = ""
    for f in {r.finding for r in rows}:
        deciding = [r.verdict for r in rows if r.finding == f and r.task == POOLED
                    and r.role in ("decides", "not testable here")]  # an untestable part: the finding is not shown
        for r in rows:
            if r.finding == f:
                r.finding_verdict = finding_verdict(deciding)
    return rows


def check_claims(config: dict, runs, missing=None):
    """claims.csv: one row per (test, task) and a pooled row per test of the recipe's five findings (see each
    claim_* docstring), columns CLAIMS_COLUMNS."""
    import pandas as pd

    data = Data(config, runs, missing)
    rows = []
    for f in (claim_budget, claim_kd, claim_da, claim_depth, claim_size):
        rows += f(data)
    return pd.DataFrame([r.record() for r in finish(rows)], columns=CLAIMS_COLUMNS)
