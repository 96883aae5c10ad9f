"""Tests of xtc/study/stats.py: the stratified t-interval, power and the seeds to decide, Holm, the dev-set
bootstrap, collapsed runs."""
import math

import pytest
from scipy import stats

from test_claims import _runs_frame
from xtc.study import claims as C, stats as S


def test_one_task_interval_is_scipys_paired_t_interval():
    d = [0.3, 1.1, 0.4, 0.9, 0.2]
    st = C.stratified_t({"mrpc": dict(enumerate(d))})
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    assert st["effect"] == pytest.approx(sum(d) / 5)
    assert (st["ci_low"], st["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert st["df"] == pytest.approx(4) and st["n"] == 5 and st["n_tasks"] == 1


def test_two_tasks_are_stratified_with_satterthwaite_df():
    st = C.stratified_t({"a": {1: 1.0, 2: 3.0}, "b": {1: 2.0, 2: 4.0}})
    # each task: mean 2 / 3, variance 2, n 2; effect (2 + 3) / 2; var = 2 * (1/4 * 2 / 2) = 0.5; df = 2
    assert st["effect"] == pytest.approx(2.5) and st["se"] == pytest.approx(math.sqrt(0.5))
    assert st["df"] == pytest.approx(2.0)
    assert st["ci_high"] - st["effect"] == pytest.approx(stats.t.ppf(0.975, 2) * math.sqrt(0.5))


@pytest.mark.parametrize("d, n", [(1.0, 10), (0.5, 34)])
def test_power_at_80_percent_matches_the_textbook_sample_size(d, n):
    """One-sample (paired) t-test, two-sided alpha 0.05, 80% power: Cohen's d = 1 needs 10 pairs, d = 0.5 needs
    34 (G*Power; statsmodels TTestPower gives 9.94 and 33.37)."""
    st = S.stratified_t({"a": {1: d - 1.0, 2: d + 1.0, 3: d}})  # effect d, sd 1
    assert st["effect"] == pytest.approx(d) and st["per_task"]["a"]["sd"] == pytest.approx(1.0)
    assert S.seeds_for_power(st, 0.0) == n
    assert S.power_at(st, 0.0, n) >= 0.8 > S.power_at(st, 0.0, n - 1)
    text = C.decide_text(st, "inconclusive", 0.0, "superiority")
    assert (f"~{n} seeds per task give 80% power" in text) == (n <= C.MAX_PRACTICAL_SEEDS), text


def test_a_dev_set_floor_that_seeds_cannot_shrink_is_said():
    st = S.stratified_t({"a": {1: 0.9, 2: 1.1, 3: 1.0}}, dev_var=1.0)  # effect 1, dev se 1: never 80% power
    assert S.seeds_for_power(st, 0.0) is None
    assert "does not shrink with seeds" in C.decide_text(st, "inconclusive", 0.0, "superiority")
    # without the dev part: sd 0.1 against an effect of 1; at 2 seeds the t quantile (12.7, df 1) costs the power
    assert S.seeds_for_power(S.stratified_t({"a": {1: 0.9, 2: 1.1, 3: 1.0}}), 0.0) == 3


def test_an_effect_on_the_boundary_cannot_be_decided_by_seeds():
    st = C.stratified_t({"a": {1: -0.6, 2: -0.4, 3: -0.5}})  # effect -0.5 = -margin
    assert S.seeds_for_power(st, -0.5) is None
    assert "too close to -0.5" in C.decide_text(st, "inconclusive", 0.5, "non-inferiority")


def test_seeds_for_power_reaches_max_seeds_and_uses_the_weights():
    st = C.stratified_t({"a": {1: 0.5, 2: 1.5, 3: 1.0}})  # effect 1, sd 0.5
    need = S.seeds_for_power(st, 0.7)
    assert need is not None and need > 3
    assert S.seeds_for_power(st, 0.7, max_seeds=need) == need  # the last seed count is tried too
    assert S.seeds_for_power(st, 0.7, max_seeds=need - 1) is None
    two = {"a": {1: 0.0, 2: 2.0, 3: 1.0}, "b": {1: 1.0, 2: 1.01, 3: 1.02}}
    w = {"a": 0.1, "b": 0.9}  # the noisy task barely counts
    equal, weighted = S.stratified_t(two), S.stratified_t(two, w)
    assert S.seeds_for_power(weighted, 0.8) < S.seeds_for_power(equal, 0.8)
    assert C.decide_text(weighted, "inconclusive", 0.0, "superiority") != C.decide_text(equal, "inconclusive", 0.0,
                                                                                          "superiority")


def test_holm_matches_a_hand_computation():
    # sorted: 0.005 x4 = 0.02; 0.01 x3 = 0.03; 0.03 x2 = 0.06; 0.04 x1 = 0.04 -> 0.06 (never below an earlier one)
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert S.holm_levels([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.05 / 3, 0.05, 0.05 / 2, 0.05 / 4])
    got = S.holm([float("nan"), 0.02, 0.6])  # NaN: not in the family
    assert math.isnan(got[0]) and got[1:] == pytest.approx([0.04, 0.6])
    st = S.stratified_t({"a": {1: 0.3, 2: 1.1, 3: 0.4, 4: 0.9}})
    lo, hi = S.interval_at(st, 1 - 0.05 / 4)
    assert lo < st["ci_low"] and hi > st["ci_high"]  # the Holm level widens the interval
    assert S.p_value(st, lo) == pytest.approx(0.05 / 4)  # and its edge is where p reaches the level


def test_resampled_metrics_on_the_identity_draw_are_xtc_metrics():
    import numpy as np

    from xtc.metrics import split_metrics
    from xtc.tasks import TASKS

    rng = np.random.default_rng(0)
    for task, k in (("mrpc", 2), ("cola", 2), ("mnli", 3), ("stsb", 0)):
        y = rng.random(50) * 5 if k == 0 else rng.integers(0, k, 50)
        p = y + rng.normal(0, 1, 50) if k == 0 else np.where(rng.random(50) < 0.7, y, rng.integers(0, k, 50))
        want = split_metrics(TASKS[task], p, y)
        for metric, value in want.items():
            got = S.resampled_metrics(metric, p, y, np.arange(50)[None], max(k, 2))
            assert got[0] == pytest.approx(value, abs=1e-12), (task, metric)


def test_the_dev_bootstrap_interval_widens_when_the_arms_disagree_on_more_examples(tmp_path):
    labels = [1] * 100 + [0] * 100
    a = [lab if i < 160 else 1 - lab for i, lab in enumerate(labels)]  # right on the first 160: acc 0.80
    quiet = [lab if i < 150 else 1 - lab for i, lab in enumerate(labels)]  # 0.75, differs from a on 10
    noisy = [lab if i >= 50 else 1 - lab for i, lab in enumerate(labels)]  # 0.75, differs from a on 90
    runs = _runs_frame(tmp_path, {"a": a, "quiet": quiet, "noisy": noisy}, labels)
    boot = S.DevBootstrap(runs, lambda t: ("accuracy",), lambda t: 2, resamples=400)
    assert boot.scores("a").mean() == pytest.approx(80.0, abs=1.0) and boot.scores("missing") is None
    seeds = {"mrpc": {1: 5.0, 2: 4.0, 3: 6.0}}  # seed noise alone: sd 1

    def interval(other):
        dv = S.dev_variance({"mrpc": {s: boot.scores("a") - boot.scores(other) for s in (1, 2, 3)}})
        return S.stratified_t(seeds, dev_var=dv)

    q, n, seed_only = interval("quiet"), interval("noisy"), S.stratified_t(seeds)
    assert 0 < q["se_dev"] < n["se_dev"]
    assert seed_only["ci_high"] - seed_only["ci_low"] < q["ci_high"] - q["ci_low"] < n["ci_high"] - n["ci_low"]
    # paired: the disagreement, not the accuracy, sets the width (10 differing examples of 200: about 1.6 points)
    assert q["se_dev"] == pytest.approx(100 * math.sqrt(10 / 200 / 200), rel=0.25)
    again = S.DevBootstrap(runs, lambda t: ("accuracy",), lambda t: 2, resamples=400)
    assert (again.scores("noisy") == boot.scores("noisy")).all()  # a fixed RNG seed: the same CSV every run


def test_collapse_is_one_class_or_one_constant():
    assert S.is_collapsed([1, 1, 1], regression=False) and not S.is_collapsed([1, 0, 1], regression=False)
    assert S.is_collapsed([2.5, 2.5, 2.5], regression=True) and not S.is_collapsed([2.5, 2.6], regression=True)
