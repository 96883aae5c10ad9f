"""Tests of xtc/study/grid.py: the grid's expansion and dedup, each axis' runs, seeds, training examples and control
arms. No training."""
import copy

import pytest

from study_fixtures import ANCHOR, tiny_config
from xtc import study


# ----------------------------------------------------------------------------------------------- grid


def test_grid_dedup_shares_the_anchor_and_step1_runs():
    cfg = tiny_config()
    runs = study.study_runs(cfg)
    assert runs["run_id"].is_unique
    anchor = runs[runs["run_id"] == "student/" + ANCHOR]
    assert len(anchor) == 1  # trained once ...
    assert anchor["axes"].iloc[0].split(";") == ["budget", "lr", "kd", "da", "bits", "xtc"]  # ... in six axes
    # fp32 at full depth is the teacher, once per task, shared by every seed
    teacher = runs[runs["run_id"] == "teacher/task~sst2"]
    assert len(teacher) == 1 and set(teacher["axes"].iloc[0].split(";")) == {"teacher", "depth", "xtc"}
    # the 2-layer fp32 student is the layer-reduction point, the XTC fp32 point and the step 1 of W1 at 2 layers
    s1 = runs[(runs["task"] == "rte") & (runs["depth"] == 2) & (runs["wbits"] == 32) & (runs["seed"] == 1)]
    assert len(s1) == 1 and s1["axes"].iloc[0] == "depth;xtc;xtc-step1"
    assert s1["epochs"].iloc[0] == 4.0  # per-task budget override of `reduce`
    step2 = runs[(runs["depth"] == 2) & (runs["wbits"] == 1) & (runs["task"] == "rte") & (runs["seed"] == 1)]
    assert step2["init"].iloc[0] == "step1" and step2["init_run"].iloc[0] == s1["run_id"].iloc[0]
    # per task and seed: budget 4 + lr 1 + kd 2 + da 1 + depth 1 + xtc 1 = 10 students
    assert (runs["kind"] == "student").sum() == 10 * 2 * 2
    members = study.members(cfg)
    assert len(members) > len(runs)  # the long design table repeats shared runs
    assert set(members["run_id"]) <= set(runs["run_id"])


def test_an_axis_varies_the_training_examples_and_only_a_changed_size_names_them():
    """Grid factor `examples`: a student's own training-set size (the first N examples, or all). It is named in
    the run's folder only where it differs from data.max_train_samples (32 here), so equal settings stay one run
    and profiles that never vary it keep their folder names."""
    import re

    from xtc.study.plan import estimate_cost

    cfg = copy.deepcopy(tiny_config())
    cfg["axes"].append({"name": "data-8", "tasks": ["sst2"], "vary": {"examples": [8, 32, "all"]}})
    cfg["train"]["batch_size"] = 8  # 8 examples: 1 step an epoch, 32: 4
    cfg = study.validate_config(cfg)
    runs = study.study_runs(cfg).set_index("run_id")
    small, same, whole = (f"student/{ANCHOR}".replace("/init~", f"/examples~{n}/init~") for n in (8, 32, "all"))
    assert small in runs.index and whole in runs.index and same not in runs.index
    assert "data-8" in runs.loc["student/" + ANCHOR, "axes"]  # 32 examples is the anchor run itself
    assert "--max-train-samples 8 " in runs.loc[small, "args"] + " "
    assert "--max-train-samples" not in runs.loc[whole, "args"]  # all of the task's training set
    assert "--max-train-samples 32 " in runs.loc["student/" + ANCHOR, "args"] + " "
    for rid, n in ((small, 8), (whole, "all"), ("student/" + ANCHOR, None)):
        parsed = study.parse_run_relpath(rid)
        assert parsed["examples"] == n and runs.loc[rid, "examples"] == n and study.run_relpath(parsed) == rid
        assert re.fullmatch(study.STUDENT_RUN_RE, rid)
    with pytest.raises(ValueError, match="not a run folder name"):  # a setting out of its place
        study.parse_run_relpath("student/" + ANCHOR.replace("/init~teacher/", "/init~teacher/examples~8/"))
    cost = estimate_cost(cfg)
    steps = cost[cost["job"] == "student"].set_index("run_id")["steps"]
    assert steps[small] * 4 == steps["student/" + ANCHOR] and steps[whole] > steps["student/" + ANCHOR]


def test_control_arms_train_on_the_augmented_file_at_offs_steps_and_two_stage_at_factor_1():
    """Issue 23: da on-steps reads the augmented file for epochs / (1 + copies), with the warm-up scaled alike, so
    its optimizer and warm-up steps are those of da off; kd two-stage-1x is xtc's two-stage at
    --stage1-lr-factor 1 (two-stage keeps the published 2.5). The plan counts both arms."""
    import shlex

    from xtc.study.plan import estimate_cost

    cfg = copy.deepcopy(tiny_config())
    cfg["axes"][2]["vary"]["kd"] = ["two-stage", "two-stage-1x", "one-stage"]
    cfg["axes"][3]["vary"]["da"] = ["off", "on", "on-steps"]
    cfg["augment"] = {"copies": 3}
    cfg["train"]["warmup_epochs"] = 0.5
    cfg = study.validate_config(cfg)
    runs = study.study_runs(cfg).set_index("run_id")
    off = "student/" + ANCHOR
    on, on_steps = off.replace("/da~off/", "/da~on/"), off.replace("/epochs~3/", "/epochs~0.75/").replace(
        "/da~off/", "/da~on-steps/")
    two, two_1x = (off.replace("/kd~one-stage/", f"/kd~{k}/") for k in ("two-stage", "two-stage-1x"))
    assert {on, on_steps, two, two_1x} <= set(runs.index) and runs.loc[on_steps, "budget"] == "long"
    flags = {rid: dict(zip(*[iter(shlex.split(runs.loc[rid, "args"]))] * 2)) for rid in (off, on, on_steps, two, two_1x)}
    assert flags[on_steps]["--train-file"] == flags[on]["--train-file"] == runs.loc[on_steps, "inputs"]["train_file"]
    assert (flags[on]["--epochs"], flags[on_steps]["--epochs"]) == ("3", "0.75")  # 3 epochs / (1 + 3 copies)
    assert (flags[on]["--warmup-epochs"], flags[on_steps]["--warmup-epochs"]) == ("0.5", "0.125")
    assert flags[two_1x]["--kd"] == flags[two]["--kd"] == "two-stage"
    assert flags[two_1x]["--stage1-lr-factor"] == "1" and "--stage1-lr-factor" not in flags[two]
    cost = estimate_cost(cfg)
    steps = cost[cost["job"] == "student"].set_index("run_id")["steps"]
    assert steps[on_steps] == steps[off] and steps[on] == 4 * steps[off] and steps[two_1x] == steps[two]
    # steps as xtc.train counts them: 32 examples -> 1 step an epoch at batch 32; the augmented file: 128 -> 4
    assert (steps[off], steps[on_steps]) == (3, 3)
    assert set(cost.loc[cost["job"] == "export", "run_id"]) >= {on_steps, two_1x}


def test_an_axis_runs_its_own_seeds_and_the_plan_states_each_tasks_training_size():
    cfg = copy.deepcopy(tiny_config(seeds=(1, 2, 3)))
    cfg["axes"][6]["seeds"] = [1, 2]  # xtc
    cfg["data"]["validation_samples"] = 500
    cfg = study.validate_config(cfg)
    runs = study.study_runs(cfg)
    step2 = runs[runs["init"] == "step1"]
    assert len(step2) and set(step2["seed"]) == {1, 2}
    assert set(runs.loc[runs["axes"].str.contains("budget"), "seed"]) == {1, 2, 3}
    # the originals a student learns from: the training rows less the validation rows, capped (claim 3.small)
    assert study.task_sizes(cfg) == {"sst2": 32, "rte": 32}
    assert study.examples_available(cfg, "rte", "all") == 2490 - 498  # validation: at most a fifth
    cfg["data"]["max_train_samples"] = None
    assert study.task_sizes(cfg) == {"sst2": 67349 - 500, "rte": 2490 - 498}
