"""The five findings of the XTC recipe as statistical tests on the results.

Each test is an *effect*: a difference of dev scores (x100, "points"), paired by task and seed wherever the
grid pairs them (every student axis point is run with the same seeds; the teacher is one run per task and
enters as a fixed reference), averaged over the axis' tasks with equal weight, as the tables' Avg is.

Confidence interval: a stratified t-interval. Per task t, the paired differences d_ts over seeds give a mean
m_t and a variance s_t^2 (ddof=1); the effect is sum_t w_t m_t (w_t = 1/T, or a contrast of task groups),
its variance sum_t w_t^2 s_t^2 / n_t, and its degrees of freedom Welch-Satterthwaite's. Why not a bootstrap:
studies here have 2 to 5 seeds per task, where a percentile bootstrap over seeds cannot produce more than a
handful of distinct resamples and its interval is far too narrow (with 2 seeds it spans at most the two
values); the t-interval is exact under normal seed noise, widens honestly at small n (t_{0.975,1} = 12.7),
needs no random numbers, and so gives the same CSV on every run. scipy.stats.t supplies the quantiles.

Decision rules, written in each row's `rule`:
  superiority      holds if ci_low > 0; does not hold if ci_high < 0
  non-inferiority  ("matches or beats", margin m > 0): holds if ci_low > -m; does not hold if ci_high < -m
  deterministic    (sizes, which do not vary with seeds): holds if the measured value reaches the threshold
A CI touching the boundary exactly is not clear of it. Anything else is "inconclusive", and `decide` says what would decide it: the seeds per task that would put
the CI clear of the boundary if the effect and the seed variance stay as observed, or, when that is more
seeds than a study can afford, that more training (which is what the claim is about) would have to change
the effect. Margins come from the paper's statements and the config's `claims` section, fixed before any
result is looked at; nothing here adapts a threshold to the data.

Thresholds that depend on the architecture are computed from the teacher's own config.json: the size claim's
required ratio is the paper's "~50x" as a share of the paper architecture's 1-bit ceiling, times this
architecture's 1-bit ceiling (`one_bit_ceiling`); the depth claims look at half the teacher's depth.
"""
from __future__ import annotations

import json
import math
import os

from xtc.study.config import resolve_epochs
from xtc.study.grid import axis_tasks
from xtc.study.views import axis_config as _axis, axis_view, task_title, teacher_view

VERDICTS = ("holds", "does not hold", "inconclusive")
CONFIDENCE = 0.95
MAX_PRACTICAL_SEEDS = 20  # beyond this, "add seeds" is not advice a study can follow

CLAIMS = {
    1: "Earlier extreme-quantization baselines were under-trained: longer training closes most of the gap.",
    2: "With long training, one-stage KD matches or beats multi-stage KD.",
    3: "Data augmentation helps, most on the small tasks (CoLA, MRPC, RTE, STS-B).",
    4: "Layer reduction by copying teacher layers, with KD fine-tuning and no pre-training distillation, gives "
       "a 5/6-layer model better than TinyBERT-6L.",
    5: "Layer reduction plus 1-bit weights cuts size ~50x with a small loss (1-bit: GLUE avg 83.44 vs 83.95).",
}

CLAIMS_COLUMNS = ["claim", "finding", "statement", "compare", "effect", "ci_low", "ci_high", "n", "n_tasks", "df",
                  "margin", "rule", "verdict", "finding_verdict", "decide", "mean_a", "sd_a", "mean_b", "sd_b",
                  "sd_paired", "threshold", "evidence", "numbers", "note"]

# The paper's size statement: a BERT-base teacher (12 layers) reduced to 6 layers with 1-bit weights is "~50x"
# smaller. Its architecture, so that the statement can be turned into a share of that architecture's ceiling.
BERT_BASE = {"vocab_size": 30522, "hidden_size": 768, "num_layers": 12, "intermediate_size": 3072,
             "max_position_embeddings": 512, "type_vocab_size": 2}
PAPER_SIZE = {"ratio": 50.0, "architecture": BERT_BASE, "depth": 6, "num_labels": 3}  # MNLI: 3 labels


# ----------------------------------------------------------------------------------------------- statistics


def _mean(xs):
    return sum(xs) / len(xs)


def _var(xs):
    m = _mean(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def _tq(df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + CONFIDENCE / 2, df))


def stratified_t(diffs: dict, weights: dict | None = None) -> dict:
    """Effect = sum_t w_t mean_s(d_ts) over tasks t (w_t = 1/T by default) from paired differences
    {task: {seed: d}}; its stratified t-interval (Welch-Satterthwaite df). CI is NaN when a task has fewer
    than 2 seeds. Returns effect, ci_low, ci_high, se, df, n (fewest seeds of a task), n_tasks, and per task
    mean, sd and n."""
    tasks = [t for t in diffs if len(diffs[t])]
    w = weights or {t: 1 / len(tasks) for t in tasks}
    per = {t: {"mean": _mean(list(diffs[t].values())), "n": len(diffs[t]),
               "sd": math.sqrt(_var(list(diffs[t].values()))) if len(diffs[t]) > 1 else math.nan}
           for t in tasks}
    out = {"effect": sum(w[t] * per[t]["mean"] for t in tasks) if tasks else math.nan,
           "n": min((per[t]["n"] for t in tasks), default=0), "n_tasks": len(tasks), "per_task": per,
           "ci_low": math.nan, "ci_high": math.nan, "se": math.nan, "df": math.nan}
    if not tasks or out["n"] < 2:
        return out
    terms = {t: w[t] ** 2 * per[t]["sd"] ** 2 / per[t]["n"] for t in tasks}
    var = sum(terms.values())
    df = var ** 2 / sum(terms[t] ** 2 / (per[t]["n"] - 1) for t in tasks) if var > 0 else \
        float(sum(per[t]["n"] - 1 for t in tasks))
    half = _tq(df) * math.sqrt(var)
    out.update(se=math.sqrt(var), df=df, ci_low=out["effect"] - half, ci_high=out["effect"] + half)
    return out


def seeds_to_decide(st: dict, boundary: float, weights: dict | None = None, max_seeds: int = 1000):
    """The fewest seeds per task that would put the CI clear of `boundary` if the per-task means and seed
    sds stay as observed; None if more than max_seeds (or the effect sits on the boundary)."""
    per = st["per_task"]
    if not per or any(math.isnan(p["sd"]) for p in per.values()):
        return None
    w = weights or {t: 1 / len(per) for t in per}
    gap = abs(st["effect"] - boundary)
    for n in range(2, max_seeds + 1):
        terms = [w[t] ** 2 * per[t]["sd"] ** 2 / n for t in per]
        var = sum(terms)
        if var == 0:
            return n if gap > 0 else None
        df = var ** 2 / sum(x ** 2 / (n - 1) for x in terms)
        if _tq(df) * math.sqrt(var) < gap:
            return n
    return None


def boundary_of(kind: str, margin: float) -> float:
    """The CI boundary of a test: 0 for superiority, -margin for non-inferiority."""
    if kind == "superiority":
        return 0.0
    if kind == "non-inferiority":
        return -margin
    raise ValueError(f"unknown test kind {kind!r}: superiority or non-inferiority")


def decide(st: dict, margin: float, kind: str) -> str:
    """Verdict of a superiority (boundary 0) or non-inferiority (boundary -margin) test; ties are not wins."""
    if math.isnan(st["ci_low"]):
        return "inconclusive"
    boundary = boundary_of(kind, margin)
    if st["ci_low"] > boundary:
        return "holds"
    if st["ci_high"] < boundary:
        return "does not hold"
    return "inconclusive"


def rule_text(kind: str, margin: float) -> str:
    c = f"{100 * CONFIDENCE:g}% CI"
    if kind == "deterministic":
        return "deterministic (does not vary with seeds): holds if the measured value reaches the threshold"
    if kind == "superiority":
        return f"superiority: holds if {c} low > 0; does not hold if {c} high < 0; else inconclusive"
    boundary_of(kind, margin)  # refuses an unknown kind
    return (f"non-inferiority, margin {margin:g}: holds if {c} low > -{margin:g}; does not hold if {c} high < "
            f"-{margin:g}; else inconclusive")


def decide_text(st: dict, verdict: str, margin: float, kind: str, weights=None) -> str:
    """What would decide an inconclusive test (empty otherwise)."""
    if verdict != "inconclusive":
        return ""
    if st["n_tasks"] == 0:
        return "no paired runs: run the axis"
    if st["n"] < 2:
        return "a CI needs at least 2 finished seeds per task: run more seeds"
    boundary = boundary_of(kind, margin)
    n = seeds_to_decide(st, boundary, weights)
    if n is not None and n <= MAX_PRACTICAL_SEEDS:
        return (f"~{n} seeds per task would put the CI clear of {boundary:g} if the effect ({st['effect']:+.2f}) "
                f"and the seed sd stay as observed")
    return (f"the effect ({st['effect']:+.2f}) is too close to {boundary:g} for seeds to decide it "
            f"({'more than ' + str(MAX_PRACTICAL_SEEDS) if n is None or n > MAX_PRACTICAL_SEEDS else n} seeds per "
            "task); only a change in the effect itself (a longer budget, a stronger teacher) would")


# ----------------------------------------------------------------------------------------------- architecture


def teacher_architecture(config: dict) -> dict | None:
    """The teacher's vocabulary, hidden size, depth, FFN size, positions and token types from its config.json
    (the packaged default, a local folder, or a hub id already in the local cache); None if unreadable."""
    from xtc.models import resolve_model_path

    try:
        path = resolve_model_path(config["teacher"].get("model"))
        if os.path.isdir(path):
            with open(os.path.join(path, "config.json")) as f:
                hf = json.load(f)
        else:
            from transformers import AutoConfig

            hf = AutoConfig.from_pretrained(path, local_files_only=True).to_dict()
    except Exception:  # noqa: BLE001  (any failure means: architecture unknown, which the claim reports)
        return None
    return {"vocab_size": int(hf["vocab_size"]), "hidden_size": int(hf["hidden_size"]),
            "num_layers": int(hf["num_hidden_layers"]), "intermediate_size": int(hf["intermediate_size"]),
            "max_position_embeddings": int(hf["max_position_embeddings"]),
            "type_vocab_size": int(hf.get("type_vocab_size", 2))}


def architecture_bytes(arch: dict, depth: int, wbits: int, num_labels: int = 2, groups: int = 1,
                       quantized_only: bool = False) -> int:
    """Bytes of a BERT classifier of `depth` layers with the recipe's quantized weights (Q, K, V, attention
    output, FFN in/out, word embeddings) at `wbits` (packed at the fewest bytes, plus fp32 scales: one per
    scale group, one per row of the word-embedding table) and everything else fp32 (position and token-type
    embeddings, LayerNorms, biases, pooler, classifier). quantized_only counts only the quantized weights'
    packed bits, as the paper's size figures do."""
    from xtc.quant import min_weight_bytes

    V, H, F = arch["vocab_size"], arch["hidden_size"], arch["intermediate_size"]
    matrices = [H * H] * 4 + [H * F, F * H]
    if wbits >= 32:
        q_bytes = 4 * (V * H + depth * sum(matrices))
    else:
        q_bytes = min_weight_bytes(V * H, wbits) + depth * sum(min_weight_bytes(n, wbits) for n in matrices)
        if not quantized_only:
            q_bytes += 4 * V + 4 * depth * len(matrices) * groups
    if quantized_only:
        return q_bytes
    fp32 = (arch["max_position_embeddings"] * H + arch["type_vocab_size"] * H + 2 * H  # embeddings, their LN
            + depth * (4 * H + F + H + 2 * 2 * H)  # biases of the 6 matrices, 2 LayerNorms per layer
            + H * H + H + H * num_labels + num_labels)  # pooler, classifier
    return q_bytes + 4 * fp32


def one_bit_ceiling(arch: dict, depth: int, num_labels: int = 2, quantized_only: bool = False) -> float:
    """The largest size ratio (fp32 teacher / 1-bit student of `depth` layers) the recipe can reach on this
    architecture: every quantizable weight at 1 bit, the rest fp32 as the recipe keeps it."""
    teacher = architecture_bytes(arch, arch["num_layers"], 32, num_labels)
    return teacher / architecture_bytes(arch, depth, 1, num_labels, quantized_only=quantized_only)


def paper_size_share() -> float:
    """The paper's "~50x" as a share of its own architecture's 1-bit ceiling at 6 of 12 layers, counted as the
    paper counts (quantized weights only; 53.2x): the part of the ideal that "~50x" claims."""
    p = PAPER_SIZE
    return p["ratio"] / one_bit_ceiling(p["architecture"], p["depth"], p["num_labels"], quantized_only=True)


def half_depth(num_layers: int) -> int:
    """Half the teacher's depth, rounded up (6 of 12, 3 of 6, 2 of 3)."""
    return max(1, math.ceil(num_layers / 2))


# ----------------------------------------------------------------------------------------------- data access


def _seed_scores(view, **where) -> dict:
    """{task: {seed: score}} of the axis points matching `where` (v_<factor> or setting columns)."""
    if not len(view):
        return {}
    sel = view
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return {r["task"]: dict(r["seed_scores"]) for r in sel.to_dict("records")}


def _paired(a: dict, b: dict, tasks, fn=lambda x, y: x - y) -> dict:
    """{task: {seed: fn(a_ts, b_ts)}} over the seeds both have; b may be a per-task constant (the teacher)."""
    out = {}
    for t in tasks:
        at, bt = a.get(t, {}), b.get(t, {})
        if isinstance(bt, dict):
            seeds = sorted(set(at) & set(bt))
            out[t] = {s: fn(at[s], bt[s]) for s in seeds}
        else:
            out[t] = {} if _isnan(bt) else {s: fn(v, bt) for s, v in sorted(at.items())}
    return out


def _isnan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _summ(scores: dict, tasks) -> tuple[float, float]:
    """Mean over tasks of each task's mean over seeds, and the sd over seeds of the per-seed task average
    (the seeds every task has). A per-task constant (the teacher, one run) has sd NaN."""
    vals = [scores.get(t) for t in tasks]
    if not vals or any(v is None or (v == {} if isinstance(v, dict) else _isnan(v)) for v in vals):
        return math.nan, math.nan
    if not isinstance(vals[0], dict):
        return _mean(vals), math.nan
    mean = _mean([_mean(list(v.values())) for v in vals])
    seeds = sorted(set.intersection(*(set(v) for v in vals)))
    per_seed = [_mean([v[s] for v in vals]) for s in seeds]
    return mean, math.sqrt(_var(per_seed)) if len(per_seed) > 1 else math.nan


def _row(claim: str, finding: int, compare: str, st: dict, margin: float, kind: str, a=None, b=None, tasks=(),
         threshold="", numbers=None, note="", weights=None, evidence="", verdict=None, rule=None,
         decide_override=None) -> dict:
    v = verdict or decide(st, margin, kind)
    ma, sa = _summ(a or {}, list(tasks)) if tasks else (math.nan, math.nan)
    mb, sb = _summ(b or {}, list(tasks)) if tasks else (math.nan, math.nan)
    per = st["per_task"]
    sds = [p["sd"] for p in per.values() if not _isnan(p["sd"])]
    pooled = math.sqrt(_mean([s ** 2 for s in sds])) if sds else math.nan
    if not evidence and per:
        evidence = (", ".join(f"{task_title(t)} {p['mean']:+.2f}" for t, p in per.items())
                    + f"; effect {st['effect']:+.2f}")
        if not _isnan(st["ci_low"]):
            evidence += f" [{st['ci_low']:+.2f}, {st['ci_high']:+.2f}], n={st['n']}"
    return {"claim": claim, "finding": finding, "statement": CLAIMS[finding], "compare": compare,
            "effect": st["effect"], "ci_low": st["ci_low"], "ci_high": st["ci_high"], "n": st["n"],
            "n_tasks": st["n_tasks"], "df": st["df"], "margin": margin, "rule": rule or rule_text(kind, margin),
            "verdict": v,  # finding_verdict: check_claims adds it, from all of a finding's rows
            "decide": decide_override if decide_override is not None else decide_text(st, v, margin, kind, weights),
            "mean_a": ma, "sd_a": sa, "mean_b": mb, "sd_b": sb, "sd_paired": pooled, "threshold": threshold,
            "evidence": evidence,
            "numbers": json.dumps(_clean({"per_task": per, "se": st["se"], **(numbers or {})}), sort_keys=True,
                                  allow_nan=False),
            "note": note}


def _empty(claim, finding, compare, margin, kind, why, note="", threshold="") -> dict:
    st = {"effect": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0, "n_tasks": 0,
          "df": math.nan, "se": math.nan, "per_task": {}}
    return _row(claim, finding, compare, st, margin, kind, evidence=why, note=note, threshold=threshold,
                decide_override=why)


def _nan_json(x):
    return None if _isnan(x) else x


def _clean(x):
    """JSON-safe: NaN -> null, numpy scalars -> Python numbers, keys -> str."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item"):
        x = x.item()
    return _nan_json(x) if isinstance(x, float) else x


# ----------------------------------------------------------------------------------------------- the claims


def claim_budget(config, runs, missing=None) -> list[dict]:
    """Finding 1, per quantized bit-width b of the `budget` axis (one row each). With T the teacher's score,
    S and L the student's at the shortest and longest budget (paired by task and seed), "closes most of the
    gap" means gap(L) = T - L < (1 - c) (T - S), c = claims.closed_share (0.5: "most" is more than half).
    Effect = (1 - c)(T - S) - (T - L) = L - (1 - c) S - c T, superiority. If the shortest budget leaves no gap
    of at least claims.min_gap points there is nothing to close: inconclusive."""
    c = config["claims"]
    share = c["closed_share"]
    ax = _axis(config, "budget")
    compare = f"(1-{share:g})*gap(shortest) - gap(longest)"
    if not ax or "epochs" not in ax["vary"]:
        return [_empty("1", 1, compare, 0.0, "superiority", "no 'budget' axis varying epochs in the config")]
    tasks = axis_tasks(config, "budget")
    view = axis_view(config, "budget", runs, missing)
    teacher = {t: v["score"] for t, v in teacher_view(config, runs).items()}
    budgets = sorted(ax["vary"]["epochs"], key=lambda v: resolve_epochs(config, tasks[0], v))
    short, long = budgets[0], budgets[-1]
    fixed_bits = (ax.get("set") or {}).get("wbits", config["anchor"]["wbits"])
    bits = sorted({int(b) for b in ax["vary"].get("wbits", [fixed_bits]) if int(b) < 32})
    rows = []
    for b in bits:
        where = {"wbits": b} if "wbits" in ax["vary"] else {}
        s = _seed_scores(view, v_epochs=short, **where) if len(view) else {}
        lg = _seed_scores(view, v_epochs=long, **where) if len(view) else {}
        claim, cmp_b = f"1.W{b}", f"W{b}: {compare}, budgets {short} -> {long}"
        if any(_isnan(teacher.get(t)) for t in tasks):
            rows.append(_empty(claim, 1, cmp_b, 0.0, "superiority", "teacher runs missing"))
            continue
        e = {t: {sd: lg[t][sd] - (1 - share) * s[t][sd] - share * teacher[t]
                 for sd in sorted(set(s.get(t, {})) & set(lg.get(t, {})))} for t in tasks}
        st = stratified_t(e)
        gap_s = _paired(s, teacher, tasks, lambda x, y: y - x)
        gap_l = _paired(lg, teacher, tasks, lambda x, y: y - x)
        gs, gl = stratified_t(gap_s), stratified_t(gap_l)
        nums = {"gap_short": gs["effect"], "gap_long": gl["effect"], "short_budget": short, "long_budget": long,
                "closed_share_observed": (gs["effect"] - gl["effect"]) / gs["effect"]
                if gs["effect"] and not _isnan(gs["effect"]) else None,
                "teacher": {t: teacher[t] for t in tasks}}
        eps = "/".join(f"{resolve_epochs(config, t, short):g}" for t in tasks[:1])
        epl = "/".join(f"{resolve_epochs(config, t, long):g}" for t in tasks[:1])
        ev = (f"W{b}: gap {gs['effect']:.2f} -> {gl['effect']:.2f} points ({short}, {eps} ep -> {long}, {epl} ep); "
              "effect "
              f"{st['effect']:+.2f}" + (f" [{st['ci_low']:+.2f}, {st['ci_high']:+.2f}], n={st['n']}"
                                       if not _isnan(st["ci_low"]) else ""))
        verdict = dec = None
        if st["n_tasks"] < len(tasks):
            verdict, dec = "inconclusive", "short and long runs of every task needed"
        elif gs["effect"] < c["min_gap"]:
            verdict = "inconclusive"
            dec = f"no gap of at least {c['min_gap']:g} points at the shortest budget: nothing to close"
        rows.append(_row(claim, 1, cmp_b, st, 0.0, "superiority", a=lg, b=s, tasks=tasks, numbers=nums,
                         threshold=f"closed share > {share:g}; gap(shortest) >= {c['min_gap']:g}",
                         evidence=ev if st["n_tasks"] else "no paired runs", verdict=verdict, decide_override=dec,
                         note=f"a = longest budget, b = shortest; the verdict is about this config's budgets "
                              f"({eps} -> {epl} epochs), not training to convergence; teacher: one run per task "
                              "(a fixed reference)"))
    if not rows:
        rows.append(_empty("1", 1, compare, 0.0, "superiority", "no quantized bit-width in the budget axis"))
    return rows


def claim_kd(config, runs, missing=None) -> list[dict]:
    """Finding 2. In the `kd` axis (trained at the anchor's, long, budget): effect = one-stage - two-stage,
    paired by task and seed; non-inferiority with margin claims.tolerance ("matches or beats")."""
    m = config["claims"]["tolerance"]
    compare = "one-stage - two-stage"
    if not _axis(config, "kd"):
        return [_empty("2", 2, compare, m, "non-inferiority", "no 'kd' axis in the config")]
    tasks = axis_tasks(config, "kd")
    view = axis_view(config, "kd", runs, missing)
    one, two = _seed_scores(view, v_kd="one-stage"), _seed_scores(view, v_kd="two-stage")
    st = stratified_t(_paired(one, two, tasks))
    if st["n_tasks"] < len(tasks):
        return [_empty("2", 2, compare, m, "non-inferiority",
                       f"one-stage and two-stage runs finished for {st['n_tasks']} of {len(tasks)} tasks")]
    none = _seed_scores(view, v_kd="none")
    nums = {"none": _nan_json(_summ(none, tasks)[0]) if none else None}
    return [_row("2", 2, compare, st, m, "non-inferiority", a=one, b=two, tasks=tasks, numbers=nums,
                 note=f"budget: the anchor's ({config['anchor']['epochs']})")]


def claim_da(config, runs, missing=None) -> list[dict]:
    """Finding 3, two rows. 3.helps: effect = DA on - DA off, paired by task and seed, averaged over the axis'
    tasks; superiority. 3.small: (mean effect over the small tasks, claims.small_tasks) - (mean effect over the
    others), superiority; inconclusive when the axis lacks one of the two groups."""
    small = set(config["claims"]["small_tasks"])
    if not _axis(config, "da"):
        return [_empty("3.helps", 3, "on - off", 0.0, "superiority", "no 'da' axis in the config")]
    tasks = axis_tasks(config, "da")
    view = axis_view(config, "da", runs, missing)
    on, off = _seed_scores(view, v_da="on"), _seed_scores(view, v_da="off")
    d = _paired(on, off, tasks)
    st = stratified_t(d)
    if st["n_tasks"] < len(tasks):
        return [_empty("3.helps", 3, "on - off", 0.0, "superiority",
                       f"DA on/off pairs finished for {st['n_tasks']} of {len(tasks)} tasks")]
    rows = [_row("3.helps", 3, "DA on - DA off", st, 0.0, "superiority", a=on, b=off, tasks=tasks)]
    sm, lg = [t for t in tasks if t in small], [t for t in tasks if t not in small]
    cmp_s = f"mean(on - off) over small tasks ({','.join(sm) or 'none'}) - over others ({','.join(lg) or 'none'})"
    if not sm or not lg:
        rows.append(_empty("3.small", 3, cmp_s, 0.0, "superiority",
                           "the axis' tasks are all " + ("small" if sm else "large")
                           + ": add a task of the other group to the da axis"))
        return rows
    w = {**{t: 1 / len(sm) for t in sm}, **{t: -1 / len(lg) for t in lg}}
    st2 = stratified_t(d, w)
    ms = _mean([st["per_task"][t]["mean"] for t in sm])
    ml = _mean([st["per_task"][t]["mean"] for t in lg])
    ev = f"small tasks {ms:+.2f} vs others {ml:+.2f}; effect {st2['effect']:+.2f}" + (
        f" [{st2['ci_low']:+.2f}, {st2['ci_high']:+.2f}], n={st2['n']}" if not _isnan(st2["ci_low"]) else "")
    rows.append(_row("3.small", 3, cmp_s, st2, 0.0, "superiority", weights=w, evidence=ev,
                     numbers={"small_tasks": sm, "other_tasks": lg, "small_mean": ms, "other_mean": ml},
                     note="a contrast of task groups: with one task per group, task and size are confounded"))
    return rows


def claim_depth(config, runs, missing=None) -> list[dict]:
    """Finding 4, adapted (TinyBERT-6L is not trained here): the fp32 KD student at half the teacher's depth
    (6 of 12, as the paper's 6L) against the teacher; effect = student - teacher, paired by task (the
    teacher is one run), non-inferiority with margin claims.depth_max_drop."""
    m = config["claims"]["depth_max_drop"]
    L = config["teacher"]["num_layers"]
    d = half_depth(L)
    compare = f"{d}-layer fp32 student - {L}-layer teacher"
    note = "adapted: the paper compares with TinyBERT-6L, which this suite does not train"
    thr = f"depth {d} = half of the teacher's {L} layers (rounded up)"
    if not _axis(config, "depth"):
        return [_empty("4", 4, compare, m, "non-inferiority", "no 'depth' axis in the config", note, thr)]
    tasks = axis_tasks(config, "depth")
    view = axis_view(config, "depth", runs, missing)
    if not len(view) or d not in set(view[view["wbits"] == 32]["depth"]):
        return [_empty("4", 4, compare, m, "non-inferiority", f"add depth {d} to the depth axis", note, thr)]
    stu = _seed_scores(view[view["wbits"] == 32], depth=d)
    teacher = {t: v["score"] for t, v in teacher_view(config, runs).items()}
    st = stratified_t(_paired(stu, teacher, tasks))
    if st["n_tasks"] < len(tasks):
        return [_empty("4", 4, compare, m, "non-inferiority", "teacher or student runs missing", note, thr)]
    return [_row("4", 4, compare, st, m, "non-inferiority", a=stu, b={t: teacher[t] for t in tasks}, tasks=tasks,
                 threshold=thr, note=note + "; teacher: one run per task (a fixed reference)")]


def claim_size(config, runs, missing=None) -> list[dict]:
    """Finding 5 at half the teacher's depth, 1-bit weights (the paper's 6 of 12 layers), in the `xtc` axis.
    5.size: measured ratio (teacher fp32 bytes / packed student weights) >= required, where required =
    paper_size_share() x one_bit_ceiling(this architecture, that depth); deterministic (sizes do not vary
    with seeds). 5.loss: effect = student - teacher, paired by task; non-inferiority, margin
    claims.size_max_drop ("small loss")."""
    m = config["claims"]["size_max_drop"]
    L = config["teacher"]["num_layers"]
    d = half_depth(L)
    if not _axis(config, "xtc"):
        return [_empty("5.size", 5, "size ratio", 0.0, "superiority", "no 'xtc' axis in the config")]
    tasks = axis_tasks(config, "xtc")
    view = axis_view(config, "xtc", runs, missing)
    teacher_all = teacher_view(config, runs)
    teacher = {t: teacher_all[t]["score"] for t in tasks}
    sel = view[(view["wbits"] == 1) & (view["depth"] == d)] if len(view) else view
    arch = teacher_architecture(config)
    share = paper_size_share()
    rows = []
    cmp_size = f"ratio of the {d}-layer 1-bit student (teacher fp32 / packed) - required ratio"
    if arch is None:
        rows.append(_empty("5.size", 5, cmp_size, 0.0, "deterministic",
                           "the teacher's config.json is unreadable: architecture (and its ceiling) unknown"))
    elif not len(sel):
        rows.append(_empty("5.size", 5, cmp_size, 0.0, "deterministic",
                           f"add depth {d} with wbits 1 to the xtc axis"))
    else:
        from xtc.study.config import task_of

        ceilings = [one_bit_ceiling(arch, d, task_of(config, t).num_labels) for t in tasks]
        ceiling = _mean(ceilings)
        required = share * ceiling
        t_bytes = [teacher_all[t]["bytes"] for t in tasks if not _isnan(teacher_all[t]["bytes"])]
        s_bytes = [b for b in sel.get("model_bytes", []) if not _isnan(b)]
        source = ",".join(sorted(set(sel["size_source"]) - {""})) if "size_source" in sel else ""
        thr = (f"required {required:.1f}x = {share:.3f} (paper: ~{PAPER_SIZE['ratio']:g}x of its "
               f"{PAPER_SIZE['ratio'] / share:.1f}x ceiling) x this architecture's {d}-layer 1-bit ceiling "
               f"{ceiling:.1f}x (V={arch['vocab_size']}, H={arch['hidden_size']}, L={arch['num_layers']}, "
               f"FFN={arch['intermediate_size']}, fp32 position/token-type embeddings, LayerNorms, biases, "
               "pooler, classifier)")
        if not t_bytes or not s_bytes:
            rows.append(_empty("5.size", 5, cmp_size, 0.0, "deterministic", "sizes missing", threshold=thr))
        else:
            ratio = _mean(t_bytes) / _mean(s_bytes)
            eff = ratio - required
            st = {"effect": eff, "ci_low": eff, "ci_high": eff, "n": int(sel["n"].min()), "n_tasks": len(sel),
                  "df": math.nan, "se": 0.0, "per_task": {}}
            v = "holds" if eff >= 0 else "does not hold"
            rows.append(_row("5.size", 5, cmp_size, st, 0.0, "deterministic", threshold=thr, verdict=v,
                             evidence=f"{d}L W1: {ratio:.1f}x ({source}) vs required {required:.1f}x "
                                      f"(ceiling {ceiling:.1f}x)",
                             numbers={"ratio": ratio, "required": required, "ceiling": ceiling,
                                      "paper_share": share, "size_source": source, "architecture": arch},
                             decide_override=""))
    cmp_loss = f"{d}-layer 1-bit student - {L}-layer teacher"
    stu = _seed_scores(sel, depth=d) if len(sel) else {}
    st = stratified_t(_paired(stu, teacher, tasks))
    if st["n_tasks"] < len(tasks):
        rows.append(_empty("5.loss", 5, cmp_loss, m, "non-inferiority", "teacher or 1-bit student runs missing"))
    else:
        rows.append(_row("5.loss", 5, cmp_loss, st, m, "non-inferiority", a=stu, b=teacher, tasks=tasks,
                         note="teacher: one run per task (a fixed reference)"))
    return rows


def finding_verdict(verdicts) -> str:
    """A finding holds when every one of its tests holds, does not hold when one of them does not."""
    verdicts = list(verdicts)
    if "does not hold" in verdicts:
        return "does not hold"
    return "holds" if verdicts and all(v == "holds" for v in verdicts) else "inconclusive"


def check_claims(config: dict, runs, missing=None):
    """One row per test of the recipe's five findings (see each claim_* docstring), columns CLAIMS_COLUMNS;
    finding_verdict combines a finding's tests."""
    import pandas as pd

    rows = []
    for f in (claim_budget, claim_kd, claim_da, claim_depth, claim_size):
        part = f(config, runs, missing)
        fv = finding_verdict(r["verdict"] for r in part)
        rows += [{**r, "finding_verdict": fv} for r in part]
    return pd.DataFrame(rows, columns=CLAIMS_COLUMNS)
