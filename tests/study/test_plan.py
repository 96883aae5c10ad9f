"""Tests of xtc/study/plan.py: what a study costs, counted in training examples."""
import copy

import pytest

from study_fixtures import tiny_config
from xtc import study


def test_plan_costs_a_step_by_its_examples():
    # step_s is a step of 32 examples: halving the batch doubles the steps, not the compute of an epoch
    from xtc.study.plan import estimate_cost

    cfg = study.validate_config(tiny_config())  # fills the schema's default cost section
    small = copy.deepcopy(cfg)
    small["train"]["batch_size"] = cfg["train"]["batch_size"] // 2
    a, b = estimate_cost(cfg), estimate_cost(small)
    assert (b["steps"].sum() > a["steps"].sum()) and b["compute_s"].sum() == pytest.approx(a["compute_s"].sum(),
                                                                                           rel=0.02)
