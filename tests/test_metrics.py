import json
import math

import pytest

from xtc.metrics import task_metrics
from xtc.tasks import get_task


def test_classification_metrics_hand_computed():
    # preds 1,1,0,0,1 vs labels 1,0,0,1,1: TP=2 FP=1 FN=1 TN=1
    m = task_metrics(get_task("mrpc"), {"dev": ([1, 1, 0, 0, 1], [1, 0, 0, 1, 1])})
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    cola = task_metrics(get_task("cola"), {"dev": ([1, 1, 0, 0, 1], [1, 0, 0, 1, 1])})
    mcc = (2 * 1 - 1 * 1) / math.sqrt(3 * 3 * 2 * 2)  # (TP*TN-FP*FN)/sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))
    assert cola["mcc"] == pytest.approx(mcc)


def test_regression_and_mnli_and_json_floats():
    m = task_metrics(get_task("stsb"), {"dev": ([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 5.0])})
    assert m["spearman"] == pytest.approx(1.0) and 0.95 < m["pearson"] < 1.0
    assert task_metrics(get_task("stsb"), {"dev": ([2.0, 2.0], [1.0, 3.0])})["pearson"] == 0.0
    mnli = task_metrics(get_task("mnli"), {"dev_matched": ([0, 1, 2], [0, 1, 1]),
                                           "dev_mismatched": ([0, 0], [0, 0])})
    assert mnli == {"accuracy": pytest.approx(2 / 3), "accuracy_mm": 1.0}
    assert all(type(v) is float for v in m.values())
    json.dumps(m, allow_nan=False)


def test_undefined_scores_are_zero_without_warnings_or_nan():
    """A constant prediction or label vector (correlation undefined), a NaN prediction, or F1 without a single
    positive: each scores 0.0, silently and JSON-safe; a standard deviation of exactly 1 is not 'constant'."""
    import warnings

    stsb, mrpc = get_task("stsb"), get_task("mrpc")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's ConstantInputWarning, sklearn's UndefinedMetricWarning
        assert task_metrics(stsb, {"dev": ([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])}) == {"pearson": 0.0, "spearman": 0.0}
        assert task_metrics(stsb, {"dev": ([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])}) == {"pearson": 0.0, "spearman": 0.0}
        no_positive = task_metrics(mrpc, {"dev": ([0, 0, 0], [0, 0, 0])})
        assert no_positive == {"accuracy": 1.0, "f1": 0.0}
    # std exactly 1 (0 and 2, population std) on either side is a perfect correlation, not a constant
    assert task_metrics(stsb, {"dev": ([0.0, 2.0, 0.0, 2.0], [1.0, 3.0, 1.0, 3.0])})["pearson"] == pytest.approx(1.0)
    assert task_metrics(stsb, {"dev": ([1.0, 3.0, 1.0, 3.0], [0.0, 2.0, 0.0, 2.0])})["pearson"] == pytest.approx(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nan_pred = task_metrics(stsb, {"dev": ([float("nan"), 1.0, 2.0], [1.0, 2.0, 3.0])})
    assert nan_pred["pearson"] == 0.0
    json.dumps(nan_pred, allow_nan=False)


# ---------------------------------------------------------------- pins (issue 14's mutation check)


def test_correlation_of_constant_or_nan_predictions_is_zero_and_unit_std_is_not_special():
    """Bugs (mutation survivors in metrics.py): the constant-prediction guard testing std == 1, or `and` for `or`,
    or NaN scored as a perfect 1.0."""
    from xtc.metrics import split_metrics

    stsb = get_task("stsb")
    assert split_metrics(stsb, [-1.0, 1.0, -1.0, 1.0], [0.0, 1.0, 0.0, 1.0]) == {"pearson": pytest.approx(1.0),
                                                                                "spearman": pytest.approx(1.0)}
    assert split_metrics(stsb, [0.0, 1.0, 0.0, 1.0], [-1.0, 1.0, -1.0, 1.0])["pearson"] == pytest.approx(1.0)
    assert split_metrics(stsb, [2.0, 2.0, 2.0], [0.0, 1.0, 3.0]) == {"pearson": 0.0, "spearman": 0.0}
    assert split_metrics(stsb, [0.0, 1.0, 3.0], [2.0, 2.0, 2.0]) == {"pearson": 0.0, "spearman": 0.0}
    assert split_metrics(stsb, [float("nan"), 1.0, 3.0], [0.0, 1.0, 3.0])["pearson"] == 0.0


def test_f1_without_any_positive_is_zero():
    """Bug: f1 with zero_division=1 would score 'no positives predicted, none present' as a perfect 1.0."""
    from xtc.metrics import split_metrics

    assert split_metrics(get_task("mrpc"), [0, 0, 0], [0, 0, 0]) == {"accuracy": 1.0, "f1": 0.0}
