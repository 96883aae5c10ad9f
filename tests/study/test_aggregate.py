"""Tests of xtc/study/aggregate.py: task scores, aggregation of a study's run folders."""
import pytest


@pytest.mark.parametrize("task, metrics, score", [
    ("mrpc", {"accuracy": 0.60, "f1": 0.80}, 0.70),
    ("qqp", {"accuracy": 0.90, "f1": 0.50}, 0.70),
    ("stsb", {"pearson": 0.90, "spearman": 0.70}, 0.80),
    ("mnli", {"accuracy": 0.80, "accuracy_mm": 0.60}, 0.70),
    ("cola", {"mcc": 0.30, "accuracy": 0.90}, 0.30),  # CoLA is scored by MCC alone
])
def test_task_score_averages_all_of_its_metrics(task, metrics, score):
    """Bug: a task score that takes only the first (or one) of its GLUE metrics."""
    from xtc.study.aggregate import task_score

    assert task_score(task, metrics) == pytest.approx(score, abs=1e-12)
    assert task_score(task, {k: v for k, v in list(metrics.items())[:1]}) is None or task == "cola"
