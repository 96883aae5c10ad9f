"""xtc.study.curves: the plateau test of the budget axis' learning curves (late gain = score at the last
evaluation of the longest budget minus at the last evaluation at or before half its steps, paired by seed)."""
import math

import pandas as pd
import pytest

from test_claims import study_config
from xtc.study.curves import CURVES_COLUMNS, plateau_table, plateau_verdict, write_plateaus
from xtc.study.grid import members

# budget axis of test_claims' config: long = 8 epochs; 8 steps per epoch -> evaluations at 8, 16, ..., 64
STEPS = [8 * (e + 1) for e in range(8)]


def history(cfg, curve):
    """history.csv rows for every budget-axis run: curve(task, wbits, seed, step) -> score (a fraction)."""
    m = members(cfg)
    m = m[m["axis"] == "budget"].drop_duplicates("run_id")
    rows = []
    for r in m.to_dict("records"):
        steps = STEPS if r["v_epochs"] == "long" else [8]
        for s in steps:
            for metric in ("score", "f1"):  # only the score counts
                rows.append({"run_id": r["run_id"], "task": r["task"], "wbits": r["wbits"], "seed": r["seed"],
                             "step": s, "metric": metric,
                             "value": curve(r["task"], r["wbits"], r["seed"], s) if metric == "score" else 0.0})
    return pd.DataFrame(rows)


def row(table, task, wbits):
    return table[(table["task"] == task) & (table["wbits"] == wbits)].iloc[0]


def test_rising_flat_and_noisy_curves_get_their_verdicts(tmp_path):
    cfg = study_config(tmp_path)  # 4 seeds; plateau_gain defaults to 1 point

    def curve(task, wbits, seed, step):
        if wbits == 2:   # flat: +0.1 point over the second half, whatever the seed
            return 0.80 + 0.001 * step / 64
        if task == "mrpc":  # still climbing: +3 points over the second half, +-0.1 between seeds
            return 0.60 + 0.06 * step / 64 + 0.001 * seed
        # W1 STS-B: seed noise of +-4 points around a gain of 1: cannot tell
        return 0.50 + (0.04 * (-1) ** seed if step == 64 else 0.0) + (0.01 if step == 64 else 0.0)

    t = plateau_table(cfg, history(cfg, curve))
    assert list(t.columns) == CURVES_COLUMNS
    assert sorted(zip(t["task"], t["wbits"])) == [("mrpc", 1), ("mrpc", 2), ("stsb", 1), ("stsb", 2)]
    assert set(t["budget"]) == {"long"} and set(t["epochs"]) == {8.0}
    assert row(t, "mrpc", 2)["verdict"] == "flat" and row(t, "stsb", 2)["verdict"] == "flat"
    rising = row(t, "mrpc", 1)
    assert rising["verdict"] == "rising" and rising["gain"] == pytest.approx(3.0)
    assert rising["ci_low"] > 1.0 and rising["decide"] == ""
    noisy = row(t, "stsb", 1)
    assert noisy["verdict"] == "inconclusive" and noisy["ci_low"] < 1.0 < noisy["ci_high"]
    assert noisy["gain"] == pytest.approx(1.0) and noisy["n"] == 4
    assert "longer budget" in noisy["decide"] or "seeds" in noisy["decide"]


def test_the_gain_runs_from_the_evaluation_nearest_half_the_steps_to_the_last_one(tmp_path):
    cfg = study_config(tmp_path, seeds=(1, 2))
    # a distinct score at every step, so any other pair of steps (first/best/step after half) gives another gain
    scores = {8: 0.10, 16: 0.20, 24: 0.30, 32: 0.42, 40: 0.55, 48: 0.50, 56: 0.90, 64: 0.61}
    t = plateau_table(cfg, history(cfg, lambda task, wbits, seed, step: scores[step]))
    r = row(t, "mrpc", 1)
    assert (r["from_step"], r["to_step"]) == (32, 64)
    assert r["score_from"] == pytest.approx(42.0) and r["score_to"] == pytest.approx(61.0)
    assert r["gain"] == pytest.approx(19.0)
    # no seed variance: a zero-width interval, clear of the margin
    assert r["ci_low"] == pytest.approx(19.0) and r["verdict"] == "rising"


def test_the_margin_is_the_configs_and_a_ci_touching_it_is_not_clear_of_it(tmp_path):
    cfg = study_config(tmp_path, seeds=(1, 2))
    cfg["claims"]["plateau_gain"] = 5.0
    t = plateau_table(cfg, history(cfg, lambda task, wbits, seed, step: 0.5 + 0.03 * (step >= 64)))
    assert set(t["verdict"]) == {"flat"} and set(t["margin"]) == {5.0}  # +3 points < 5
    assert "CI high < 5" in t["rule"].iloc[0]
    at = {"ci_low": 0.2, "ci_high": 5.0}
    assert plateau_verdict(at, 5.0) == "inconclusive"
    assert plateau_verdict({"ci_low": 5.0, "ci_high": 9.0}, 5.0) == "inconclusive"
    assert plateau_verdict({"ci_low": float("nan"), "ci_high": float("nan")}, 5.0) == "inconclusive"


def test_runs_without_history_and_studies_without_a_budget_axis(tmp_path):
    cfg = study_config(tmp_path, seeds=(1, 2))
    h = history(cfg, lambda task, wbits, seed, step: 0.5)
    t = plateau_table(cfg, h[h["task"] != "stsb"])
    stsb = row(t, "stsb", 1)
    assert stsb["n"] == 0 and stsb["verdict"] == "inconclusive" and "no run" in stsb["decide"]
    one_seed = plateau_table(cfg, h[h["seed"] == 1])
    assert math.isnan(row(one_seed, "mrpc", 1)["ci_low"]) and row(one_seed, "mrpc", 1)["verdict"] == "inconclusive"
    cfg["axes"] = [a for a in cfg["axes"] if a["name"] != "budget"]
    assert plateau_table(cfg, h).empty and plateau_table(study_config(tmp_path), None).empty


def test_csv_and_markdown_are_written_together(tmp_path):
    cfg = study_config(tmp_path, seeds=(1, 2))
    h = history(cfg, lambda task, wbits, seed, step: 0.5 + 0.001 * seed + 0.02 * step / 64)
    out_csv, out_md = tmp_path / "r" / "learning_curves.csv", tmp_path / "r" / "tables" / "learning_curves.md"
    t = write_plateaus(cfg, h, str(out_csv), str(out_md))
    back = pd.read_csv(out_csv)
    assert len(back) == 4 and list(back.columns) == CURVES_COLUMNS
    md = out_md.read_text()
    assert md.count("\n| MRPC | W") == 2 and "32 -> 64" in md and "+1.0 ±0.0 (n=2)" in md
    assert "claims.plateau_gain = 1 points" in md
    assert list(t["verdict"]) == list(back["verdict"])


def test_markdown_exactly():
    """The whole Markdown of a two-row table (one row without runs), character for character."""
    nan = float("nan")
    t = pd.DataFrame([
        {"task": "stsb", "wbits": 2, "budget": "long", "epochs": 3.0, "from_step": 64, "to_step": 192,
         "from_fraction": 1 / 3,
         "score_from": 50.0, "score_to": 52.25, "gain": 2.25, "ci_low": 1.5, "ci_high": 3.0, "n": 3, "sd": 0.3,
         "margin": 1.0, "rule": "r", "verdict": "rising", "decide": ""},
        {"task": "foo", "wbits": 1, "budget": "long", "epochs": 3.0, "from_step": nan, "to_step": nan,
         "score_from": nan, "score_to": nan, "gain": nan, "ci_low": nan, "ci_high": nan, "n": 0, "sd": nan,
         "margin": 1.0, "rule": "r", "verdict": "inconclusive", "decide": "no run with two evaluations"},
        {"task": "sst2", "wbits": 1, "budget": "long", "epochs": 3.0, "from_step": 96, "to_step": 192,
         "from_fraction": 0.5,
         "score_from": 70.0, "score_to": 70.5, "gain": 0.5, "ci_low": nan, "ci_high": nan, "n": 1, "sd": nan,
         "margin": 1.0, "rule": "r", "verdict": "inconclusive", "decide": "more seeds"},
    ], columns=CURVES_COLUMNS)
    from xtc.study.curves import plateau_markdown

    assert plateau_markdown(t) == (
        "## Learning curves: has the long budget reached the plateau?\n\n"
        "Late gain: dev score x100 at the last evaluation of the longest budget minus at the evaluation nearest "
        "half its steps (the fraction of the run it fell at is shown), mean over seeds ± half-width of the 95% "
        "t-interval. Flat: CI high < 1; rising: CI low > 1; else inconclusive (claims.plateau_gain = 1 points).\n\n"
        "| task | weights | budget | steps (fraction) | score at half -> end | late gain | verdict |\n"
        "|---|---|---|---|---|---|---|\n"
        "| STS-B | W2 | long (3 ep) | 64 -> 192 (0.33 -> 1) | 50.0 -> 52.2 | +2.2 ±0.8 (n=3) | rising |\n"
        "| foo | W1 | long | | | | inconclusive (no run with two evaluations) |\n"
        "| SST-2 | W1 | long (3 ep) | 96 -> 192 (0.50 -> 1) | 70.0 -> 70.5 | +0.5 (n=1) | inconclusive (more seeds) |\n")
    empty = plateau_markdown(pd.DataFrame(columns=CURVES_COLUMNS))
    assert "claims.plateau_gain = plateau_gain points" in empty and empty.endswith("|---|---|---|---|---|---|---|\n")


def test_two_evaluations_are_enough_and_one_is_not(tmp_path):
    from xtc.study.curves import _late_gain

    two = pd.DataFrame({"step": [32, 64], "value": [0.5, 0.6]})
    assert _late_gain(two) == (32, 64, 0.5, 0.6)
    assert _late_gain(pd.DataFrame({"step": [64], "value": [0.6]})) is None
    # the evaluation nearest half the steps, before or after it; of two equally near, the earlier
    assert _late_gain(pd.DataFrame({"step": [40, 64], "value": [0.5, 0.6]}))[0] == 40
    assert _late_gain(pd.DataFrame({"step": [20, 36, 64], "value": [0.4, 0.5, 0.6]}))[0] == 36
    assert _late_gain(pd.DataFrame({"step": [64, 128, 192], "value": [0.4, 0.5, 0.6]}))[0] == 64  # 1/3 vs 2/3


def test_a_gain_on_the_margin_asks_for_a_longer_budget_and_fp32_is_not_a_curve(tmp_path):
    cfg = study_config(tmp_path)
    cfg["axes"][0]["vary"]["wbits"] = [32, 1]

    def curve(task, wbits, seed, step):  # a late gain of exactly 1 point +-2 between seeds: on the margin
        return 0.5 + ((0.01 + 0.02 * (-1) ** seed) if step == 64 else 0.0)

    t = plateau_table(cfg, history(cfg, curve))
    assert sorted(zip(t["task"], t["wbits"])) == [("mrpc", 1), ("stsb", 1)]  # no fp32 row
    r = row(t, "mrpc", 1)
    assert r["verdict"] == "inconclusive" and r["gain"] == pytest.approx(1.0)
    assert r["decide"] == "more seeds would not decide it at this gain; a longer budget would"


def test_rows_go_by_task_then_widest_first_and_an_undecided_gain_says_how_many_seeds(tmp_path):
    import re

    cfg = study_config(tmp_path)

    def curve(task, wbits, seed, step):  # a late gain of 3 points +-2 between seeds: more seeds would tell
        return 0.5 + ((0.03 + 0.02 * (-1) ** seed) if step == 64 else 0.0)

    t = plateau_table(cfg, history(cfg, curve))
    assert list(zip(t["task"], t["wbits"])) == [("mrpc", 2), ("mrpc", 1), ("stsb", 2), ("stsb", 1)]
    r = row(t, "mrpc", 1)
    assert r["verdict"] == "inconclusive"
    assert re.fullmatch(r"~\d+ seeds give 80% power to decide it if the gain and its sd stay as observed", r["decide"])
    out = tmp_path / "out"
    for _ in range(2):  # into a folder that exists: written again, not refused
        write_plateaus(cfg, history(cfg, curve), str(out / "c.csv"), str(out / "c.md"))
    assert (out / "c.csv").is_file() and (out / "c.md").is_file()


def test_the_longest_budget_is_the_tasks_own_under_per_task_overrides(tmp_path):
    cfg = study_config(tmp_path)
    cfg["budget_overrides"] = [{"tasks": ["mrpc"], "budget": "short", "epochs": 16.0}]  # mrpc: short is longest
    t = plateau_table(cfg, history(cfg, lambda task, wbits, seed, step: 0.5))
    mrpc = t[t["task"] == "mrpc"]
    assert set(mrpc["budget"]) == {"short"} and set(mrpc["epochs"]) == {16.0}
    assert set(t.loc[t["task"] == "stsb", "budget"]) == {"long"}
