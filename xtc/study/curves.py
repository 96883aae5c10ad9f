"""Has the long budget trained the students to their plateau? A test per task and quantized bit-width of the
`budget` axis, on each run's evaluation history (history.csv): the *late gain*, the dev score (x100) at the
last evaluation of the longest budget minus the score at the evaluation nearest half its steps (`from_fraction`
says which fraction that was: with evaluations at epoch ends only, a 3-epoch run's nearest is 1/3), paired by
seed, with a 95% t-interval over seeds (stats.stratified_t with one task).

Rule (an equivalence-style test around the config's `claims.plateau_gain`, fixed before any result is seen):
  flat         ci_high < plateau_gain   the second half of the run adds less than plateau_gain points
  rising       ci_low > plateau_gain    the curve is still climbing: a longer budget would add more
  inconclusive otherwise (`decide` gives the seeds that would decide it if the gain and its sd stay as observed)
"""
from __future__ import annotations

import math

from xtc.study.claims import MAX_PRACTICAL_SEEDS
from xtc.study.config import resolve_epochs
from xtc.study.grid import axis_tasks, members
from xtc.study.stats import CONFIDENCE, POWER, seeds_for_power, stratified_t
from xtc.study.views import TASK_TITLES

CURVES_COLUMNS = ["task", "wbits", "budget", "epochs", "from_step", "to_step", "from_fraction", "score_from",
                  "score_to", "gain",
                  "ci_low", "ci_high", "n", "sd", "margin", "rule", "verdict", "decide"]


def rule_text(margin: float) -> str:
    return (f"late gain (score at the end - at the evaluation nearest half the steps), {100 * CONFIDENCE:g}% CI over "
            f"seeds: flat if CI high < {margin:g}; "
            f"rising if CI low > {margin:g}; else inconclusive")


def plateau_verdict(estimate: dict, margin: float) -> str:
    if math.isnan(estimate["ci_low"]):
        return "inconclusive"
    if estimate["ci_high"] < margin:
        return "flat"
    if estimate["ci_low"] > margin:
        return "rising"
    return "inconclusive"


def _late_gain(h) -> tuple[int, int, float, float] | None:
    """(from_step, to_step, score_from, score_to) of one run's score history: the last evaluation and the one
    nearest half of its steps (the earlier of two equally near); None with fewer than two evaluations."""
    by_step = h.groupby("step")["value"].last().sort_index()
    if len(by_step) < 2:
        return None
    to_step = int(by_step.index[-1])
    earlier = [int(s) for s in by_step.index[:-1]]
    from_step = min(earlier, key=lambda s: (abs(s - to_step / 2), s))
    return from_step, to_step, float(by_step[from_step]), float(by_step[to_step])


def plateau_table(config: dict, history):
    """One row per task and quantized bit-width of the budget axis (its longest budget): CURVES_COLUMNS."""
    import pandas as pd

    ax = next((a for a in config["axes"] if a["name"] == "budget"), None)
    if ax is None or history is None or not len(history):
        return pd.DataFrame(columns=CURVES_COLUMNS)
    margin = float(config["claims"]["plateau_gain"])
    m = members(config)
    m = m[(m["axis"] == "budget") & (m["wbits"] < 32)]
    hist = history[history["metric"] == "score"]
    rows = []
    for task in axis_tasks(config, "budget"):
        mt = m[m["task"] == task]
        if not len(mt):
            continue
        longest = max(dict.fromkeys(mt["v_epochs"]), key=lambda v: resolve_epochs(config, task, v))
        for wbits in sorted(set(mt["wbits"]), reverse=True):
            runs = mt[(mt["wbits"] == wbits) & (mt["v_epochs"] == longest)]
            gains, ends = {}, []
            for run_id, seed in zip(runs["run_id"], runs["seed"]):
                g = _late_gain(hist[hist["run_id"] == run_id])
                if g is not None:
                    gains[int(seed)] = 100 * (g[3] - g[2])
                    ends.append(g)
            row = {"task": task, "wbits": int(wbits), "budget": longest,
                   "epochs": resolve_epochs(config, task, longest), "margin": margin, "rule": rule_text(margin)}
            if not gains:
                rows.append({**row, "n": 0, "verdict": "inconclusive", "decide": "no run with two evaluations"})
                continue
            estimate = stratified_t({task: gains})
            verdict = plateau_verdict(estimate, margin)
            need = seeds_for_power(estimate, margin, max_seeds=MAX_PRACTICAL_SEEDS) if verdict == "inconclusive" else None
            rows.append({**row, "from_step": min(e[0] for e in ends), "to_step": max(e[1] for e in ends),
                         "from_fraction": sum(e[0] / e[1] for e in ends) / len(ends),
                         "score_from": 100 * sum(e[2] for e in ends) / len(ends),
                         "score_to": 100 * sum(e[3] for e in ends) / len(ends),
                         "gain": estimate["effect"], "ci_low": estimate["ci_low"], "ci_high": estimate["ci_high"], "n": estimate["n"],
                         "sd": estimate["per_task"][task]["sd"], "verdict": verdict,
                         "decide": "" if verdict != "inconclusive" else
                         (f"~{need} seeds give {100 * POWER:g}% power to decide it if the gain and its sd stay as "
                          "observed" if need
                          else "more seeds would not decide it at this gain; a longer budget would")})
    return pd.DataFrame(rows, columns=CURVES_COLUMNS)


def plateau_markdown(table) -> str:
    margin = f"{table['margin'].iloc[0]:g}" if len(table) else "plateau_gain"
    lines = ["## Learning curves: has the long budget reached the plateau?", "",
             "Late gain: dev score x100 at the last evaluation of the longest budget minus at the evaluation nearest "
             "half its steps (the fraction of the run it fell at is shown), mean over seeds ± half-width of the 95% "
             "t-interval. Flat: CI high < "
             f"{margin}; rising: CI low > {margin}; else inconclusive (claims.plateau_gain = {margin} points).", "",
             "| task | weights | budget | steps (fraction) | score at half -> end | late gain | verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        title = TASK_TITLES.get(r["task"], r["task"])
        if not r["n"]:
            lines.append(f"| {title} | W{r['wbits']} | {r['budget']} | | | | {r['verdict']} ({r['decide']}) |")
            continue
        half = (r["ci_high"] - r["ci_low"]) / 2 if not math.isnan(r["ci_low"]) else float("nan")
        pm = "" if math.isnan(half) else f" ±{half:.1f}"
        verdict = r["verdict"] + (f" ({r['decide']})" if r["decide"] else "")
        lines.append(f"| {title} | W{r['wbits']} | {r['budget']} ({r['epochs']:g} ep) | {int(r['from_step'])} -> "
                     f"{int(r['to_step'])} ({r['from_fraction']:.2f} -> 1) | {r['score_from']:.1f} -> "
                     f"{r['score_to']:.1f} | {r['gain']:+.1f}{pm} "
                     f"(n={r['n']}) | {verdict} |")
    return "\n".join(lines) + "\n"


def write_plateaus(config: dict, history, out_csv: str, out_md: str):
    import os

    table = plateau_table(config, history)
    from xtc.files import make_dirs, write_csv_atomic, write_text_atomic

    for p in (out_csv, out_md):
        make_dirs(os.path.dirname(os.path.abspath(p)), "the results folder")
    write_csv_atomic(out_csv, table, "the learning-curve table")
    write_text_atomic(out_md, plateau_markdown(table), "the learning-curve table")
    return table
