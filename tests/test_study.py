"""xtc.study: grid expansion and dedup, run-folder names, aggregation of a synthetic run tree (with a missing
run), summary statistics, claims verdicts and config validation. No training: metrics.json files are fake."""
import copy
import json
import math
import os
import re

import pandas as pd
import pytest

from xtc import study
from xtc.study.curves import CURVES_COLUMNS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILES = os.path.join(ROOT, "workflow", "config")


def tiny_config(tmp_path=None, seeds=(1, 2)) -> dict:
    """A 4-layer teacher, two tasks (one small, one large), every axis with few points."""
    cfg = {
        "profile": "test",
        "teacher": {"model": "default", "num_layers": 4, "epochs": 1.0, "lr": 5e-5},
        "tasks": ["sst2", "rte"],
        "seeds": list(seeds),
        "data": {"max_train_samples": 32, "max_eval_samples": 32, "max_seq_length": 32},
        "train": {},
        "budgets": {"short": 1.0, "long": 3.0, "reduce": 3.0},
        "budget_overrides": [{"tasks": ["rte"], "budget": "reduce", "epochs": 4.0}],
        "anchor": {"depth": "full", "wbits": 1, "abits": 8, "kd": "one-stage", "epochs": "long", "lr": 5e-5,
                   "da": False},  # YAML's `off`
        "step1": {"epochs": "reduce", "lr": 5e-5, "kd": "one-stage"},
        "axes": [
            {"name": "budget", "vary": {"wbits": [2, 1], "epochs": ["short", "long"]}},
            {"name": "lr", "vary": {"lr": [5e-5, 1e-4]}},
            {"name": "kd", "vary": {"kd": ["none", "two-stage", "one-stage"]}},
            {"name": "da", "vary": {"da": ["off", "on"]}},
            {"name": "bits", "vary": {"wbits": [2, 1]}},
            {"name": "depth", "vary": {"depth": ["full", 2]}, "set": {"wbits": 32}},
            {"name": "xtc", "vary": {"depth": ["full", 2], "wbits": [32, 1]}},
        ],
        "paths": {"runs": str(tmp_path / "runs") if tmp_path else "runs/test",
                  "results": str(tmp_path / "results") if tmp_path else "results/test",
                  "figures": str(tmp_path / "figures") if tmp_path else "figures/test"},
        "claims": {"size_max_drop": 1.5},
    }
    return study.validate_config(cfg)


ANCHOR = "task~sst2/depth~4/wbits~1/abits~8/kd~one-stage/epochs~3/lr~5e-05/da~off/init~teacher/seed~1"


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


def test_run_ids_round_trip_and_match_the_rules_patterns():
    import re

    cfg = tiny_config()
    runs = study.study_runs(cfg)
    for r in runs.to_dict("records"):
        parsed = study.parse_run_relpath(r["run_id"])
        assert parsed["kind"] == r["kind"]
        if r["kind"] == "student":
            assert {c: parsed[c] for c in study.SETTING_COLS} == {c: r[c] for c in study.SETTING_COLS}
            assert study.run_relpath(parsed) == r["run_id"]
        # the teacher and student rules' wildcard constraints: each run id matches exactly one of them
        own, other = ((study.TEACHER_RUN_RE, study.STUDENT_RUN_RE) if r["kind"] == "teacher"
                      else (study.STUDENT_RUN_RE, study.TEACHER_RUN_RE))
        assert re.fullmatch(own, r["run_id"]) and not re.fullmatch(other, r["run_id"])
    assert study.parse_run_relpath("student/" + ANCHOR)["lr"] == 5e-5
    assert study.metrics_file("runs", "student/" + ANCHOR) == f"runs/student/{ANCHOR}/metrics.json"
    assert study.teacher_dir("runs", "rte") == "runs/teacher/task~rte"
    with pytest.raises(ValueError, match="not a run folder name"):
        study.parse_run_relpath("student/task~sst2/depth~4")


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


def test_students_get_the_cache_budget_and_teachers_do_not():
    cfg = tiny_config()
    assert "--teacher-cache-gb 6 " in study.data_flags(cfg) + " "  # the schema default
    assert "--teacher-cache-gb" not in study.data_flags(cfg, "teacher")  # `xtc finetune` has no teacher
    runs = study.study_runs(cfg)
    assert all(("--teacher-cache-gb" in a) == (k == "student") for k, a in zip(runs["kind"], runs["args"]))
    cfg["train"]["teacher_cache_gb"] = 0
    assert "--teacher-cache-gb 0" in study.data_flags(cfg)


@pytest.mark.parametrize("profile", ["quick", "smoke", "standard", "paper", "cpu-full", "onebit-map", "gpu-small"])
def test_profiles_validate_and_expand(profile):
    cfg = study.load_config(os.path.join(PROFILES, f"{profile}.yaml"))  # each profile is complete
    runs = study.study_runs(cfg)
    assert cfg["profile"] == profile and runs["run_id"].is_unique
    n_students = {"quick": 72, "smoke": 23, "standard": 56, "paper": 474, "cpu-full": 300, "onebit-map": 11, "gpu-small": 48}[profile]
    assert (runs["kind"] == "student").sum() == n_students
    if profile == "smoke":
        assert all(cfg["paths"][k].startswith("scratch/smoke/") for k in ("runs", "results", "figures"))
    reference = cfg["paths"]["reference"]  # schema default: null (no reproduction table)
    assert reference is None or os.path.realpath(reference) != os.path.realpath(cfg["paths"]["results"])


def test_teachers_take_their_own_warm_up_and_students_the_train_one():
    cfg = tiny_config()
    cfg["train"]["warmup_epochs"] = 0.125
    assert "--warmup-epochs 0.125 " in study.data_flags(cfg, "teacher") + " "  # null: the students' value
    cfg["teacher"]["warmup_epochs"] = 0.5
    assert "--warmup-epochs 0.5 " in study.data_flags(cfg, "teacher") + " "
    assert "--warmup-epochs 0.125 " in study.data_flags(cfg) + " "


GLUE_TRAIN_SIZES = {"cola": 8551, "sst2": 67349, "mrpc": 3668, "stsb": 5749, "qnli": 104743, "rte": 2490,
                    "mnli": 392702, "qqp": 363846, "wnli": 635}


@pytest.mark.parametrize("profile", ["quick", "standard", "paper", "cpu-full"])
def test_study_profiles_span_at_least_8x_in_optimizer_steps(profile):
    """Issue 13: short -> long is at least 8x in optimizer steps on every task of the budget axis, counted as
    xtc.train counts them (ceil(epochs x steps per epoch)); smoke is a CI fixture and exempt."""
    import math

    cfg = study.load_config(os.path.join(PROFILES, f"{profile}.yaml"))
    axis = next(a for a in cfg["axes"] if a["name"] == "budget")
    names = axis["vary"]["epochs"]
    assert len(names) >= 2
    cap = cfg["data"]["max_train_samples"]
    for task in study.axis_tasks(cfg, "budget"):
        n = min(GLUE_TRAIN_SIZES[task], cap or GLUE_TRAIN_SIZES[task])
        per_epoch = math.ceil(n / cfg["train"]["batch_size"])
        steps = sorted(max(1, math.ceil(study.resolve_epochs(cfg, task, b) * per_epoch)) for b in names)
        assert steps[-1] >= 8 * steps[0], (task, steps)


def test_snakemake_validate_accepts_the_quick_profile():
    import yaml
    from snakemake.utils import validate

    with open(os.path.join(PROFILES, "quick.yaml")) as f:
        cfg = yaml.safe_load(f)
    validate(cfg, study.SCHEMA_PATH)
    assert cfg["claims"]["tolerance"] == 0.5


# ----------------------------------------------------------------------------------------------- config errors


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["axes"][2]["vary"].update(kd=["twostage"]), "axes[2].vary.kd[0]"),
    (lambda c: c["anchor"].update(lr="5e-5"), "write exponent numbers with a decimal point"),
    (lambda c: c["axes"][5]["vary"].update(depth=[7]), "depth 7 is not in 1..4"),
    (lambda c: c["axes"][0]["vary"].update(epochs=["huge"]), "unknown budget 'huge'"),
    (lambda c: c["anchor"].update(kd="none"), "data augmentation (da: on) needs KD"),
    (lambda c: c.update(tasks=["sst2", "mnli2"]), "tasks[1]"),
    (lambda c: c.pop("seeds"), "'seeds' is a required property"),
    (lambda c: c["axes"].append({"name": "lr", "vary": {"lr": [1e-3]}}), "axis names must be unique"),
    (lambda c: c["axes"][3].update(tasks=["cola"]), "not in the config's tasks"),
    (lambda c: c["axes"][3].update(seeds=[1, 7]), "axes[3].seeds: 7 not in the config's seeds"),
    (lambda c: c["axes"][3]["vary"].update(da=["off", "on-step"]), "axes[3].vary.da[1]"),
    (lambda c: (c["axes"][3]["vary"].update(da=["off", "on-steps"]), c["anchor"].update(kd="none")),
     "data augmentation (da: on-steps) needs KD"),
    (lambda c: c["axes"][3].update(set={"examples": 8}), "examples cannot be set with it"),  # da on: augment file
    (lambda c: c["axes"][0].update(name="Budget"), "axes[0].name"),
    (lambda c: c["axes"][0]["vary"].update(examples=[0]), "axes[0].vary.examples[0]"),
    (lambda c: c["teacher"].update(reference={"sst2": 92.1}), "teacher.reference.sst2"),  # a fraction, not points
    (lambda c: c["teacher"].update(reference={"sst-2": 0.92}), "teacher.reference"),
    (lambda c: c["claims"].update(size_min_ratio=40.0), "size_min_ratio"),  # the threshold is the architecture's
])
def test_config_errors_name_the_key(mutate, message):
    cfg = copy.deepcopy(tiny_config())
    mutate(cfg)
    with pytest.raises(study.ConfigError) as exc:
        study.validate_config(cfg)
    assert message in str(exc.value)


def test_a_task_of_your_own_beside_glue_tasks(tmp_path):
    spec = tmp_path / "verdicts.yaml"
    (tmp_path / "train.csv").write_text("a,y\nthe movie,pos\n")
    spec.write_text("name: verdicts\ntrain_data: train.csv\ndev_data: train.csv\ntext_columns: [a]\n"
                    "label_column: y\nlabels: [pos, neg, mixed]\n")
    cfg = copy.deepcopy(tiny_config())
    cfg["tasks"] = [*cfg["tasks"], "verdicts"]
    cfg["task_specs"] = {"verdicts": str(spec)}
    cfg = study.validate_config(cfg)
    runs = study.study_runs(cfg).set_index("run_id")
    teacher = runs.loc["teacher/task~verdicts"]
    assert f"--task {spec}" in teacher["args"]  # xtc reads the spec; the runs live under task~verdicts
    assert teacher["inputs"] == {"task_spec": str(spec), "train_data": str(tmp_path / "train.csv"),
                                 "dev_data": str(tmp_path / "train.csv")}
    students = runs[(runs["kind"] == "student") & (runs["task"] == "verdicts")]
    assert len(students) and all(f"--task {spec}" in a for a in students["args"])
    assert runs.loc["teacher/task~sst2"]["inputs"] == {}
    bad = copy.deepcopy(cfg)
    bad["task_specs"] = {"other": str(spec)}
    with pytest.raises(study.ConfigError, match=r"task_specs.other: the spec .* names its task 'verdicts'"):
        study.validate_config(bad)
    bad["task_specs"] = {}
    with pytest.raises(study.ConfigError, match=r"tasks\[\d\]: 'verdicts' is neither a GLUE task"):
        study.validate_config(bad)
    bad["task_specs"] = {"verdicts": str(tmp_path / "none.yaml")}
    with pytest.raises(study.ConfigError, match="task_specs.verdicts: task spec .* does not exist"):
        study.validate_config(bad)


# ----------------------------------------------------------------------------------------------- synthetic tree


def _metrics(task: str, score: float) -> dict:
    return {"accuracy": score}  # sst2 and rte: accuracy only


def write_tree(cfg: dict, score_of, skip=(), packed_ratio: float = 20.0, benchmark: bool = True) -> str:
    """Fake finished runs: metrics.json (as xtc writes it), size.json for quantized students, benchmarks."""
    root = cfg["paths"]["runs"]
    teacher_bytes = 4_000_000
    for r in study.study_runs(cfg).to_dict("records"):
        if r["run_id"] in skip:
            continue
        d = os.path.join(root, r["run_id"])
        os.makedirs(d, exist_ok=True)
        rec = {"task": r["task"], "selection_metric": "accuracy", "metrics": _metrics(r["task"], score_of(r)),
               "wall_seconds": 1.5, "train_tokens_per_second": 100.0}
        if r["kind"] == "student":
            fp32 = teacher_bytes * r["depth"] // cfg["teacher"]["num_layers"]
            rec["size"] = {"fp32_bytes": fp32, "quantized_bytes": fp32 if r["wbits"] == 32 else fp32 // 30,
                           "teacher_fp32_bytes": teacher_bytes, "ratio_to_teacher": 1.0}
            rec["layers"] = {"student": r["depth"], "teacher": 4, "teacher_layers": [1, 3] if r["depth"] == 2 else None}
            if r["wbits"] < 32:
                key = study.run_key(r)
                os.makedirs(os.path.dirname(study.size_file(root, key)), exist_ok=True)
                w = teacher_bytes / packed_ratio * (r["depth"] / 4)
                with open(study.size_file(root, key), "w") as f:
                    json.dump({"weights_bytes": w, "file_bytes": w + 1000}, f)
        with open(os.path.join(d, "metrics.json"), "w") as f:
            json.dump(rec, f)
        if benchmark:
            b = study.benchmark_file(root, r["run_id"])
            os.makedirs(os.path.dirname(b), exist_ok=True)
            with open(b, "w") as f:
                f.write("s\th:m:s\tmax_rss\tmax_vms\n12.5\t0:00:12\t850.0\t2000\n")
    return root


def base_score(r) -> float:
    """A plausible study: teacher 0.90 (sst2) / 0.70 (rte); quantization, short budgets, shallow depth cost."""
    s = {"sst2": 0.90, "rte": 0.70}[r["task"]]
    if r["kind"] == "teacher":
        return s
    s -= {1: 0.010, 2: 0.005, 32: 0.002}[r["wbits"]]
    s -= 0.04 if r["epochs"] < 2 else 0.0
    s -= {"none": 0.03, "two-stage": 0.01, "one-stage": 0.0}[r["kd"]]
    s += {"sst2": 0.002, "rte": 0.02}[r["task"]] if r["da"] == "on" else 0.0
    s -= 0.003 * (4 - r["depth"])
    s += 0.002 * (r["seed"] - 1.5)  # seed noise: +-0.001
    return s


def test_aggregation_with_a_missing_run(tmp_path):
    cfg = tiny_config(tmp_path)
    missing_id = "student/" + ANCHOR.replace("seed~1", "seed~2").replace("task~sst2", "task~rte")
    root = write_tree(cfg, base_score, skip={missing_id})
    with pytest.raises(study.IncompleteStudyError, match=r"1 planned runs have no results.*--allow-incomplete"):
        study.write_results(cfg, root, cfg["paths"]["results"])
    assert not os.path.exists(cfg["paths"]["results"])  # nothing written
    res = study.write_results(cfg, root, cfg["paths"]["results"], allow_incomplete=True)
    runs, summary, missing = res["runs"], res["summary"], res["missing"]
    # runs.csv: tidy, one row per run and metric (accuracy + the derived GLUE score), settings as columns
    for col in ("task", "depth", "wbits", "abits", "kd", "epochs", "lr", "da", "init", "seed", "metric", "value",
                "wall_s", "max_rss_mb", "fp32_bytes", "quantized_bytes", "packed_bytes", "axes"):
        assert col in runs.columns
    n_runs = len(study.study_runs(cfg))
    assert runs["run_id"].nunique() == n_runs - 1
    assert set(runs["metric"]) == {"accuracy", "score"}
    assert (runs["wall_s"] == 12.5).all() and (runs["max_rss_mb"] == 850.0).all()
    q = runs[(runs["wbits"] == 1) & (runs["depth"] == 4)].iloc[0]
    assert q["packed_bytes"] == 200_000 and q["size_source"] == "packed" and q["ratio_to_teacher"] == 20.0
    t = runs[runs["kind"] == "teacher"].iloc[0]
    assert t["fp32_bytes"] == 4_000_000 and t["ratio_to_teacher"] == 1.0
    # the missing run is listed with its reason (only once: its export is not expected separately)
    assert list(missing["run_id"]) == [missing_id]
    assert missing["reason"].iloc[0] == "not run (no metrics.json)"
    # summary: mean, std (ddof=1) and n over seeds; the incomplete configuration has n=1 of 2
    s = summary[(summary["config_id"] == study.config_key("student/" + ANCHOR)) & (summary["metric"] == "accuracy")]
    assert s["n"].iloc[0] == 2 and s["n_planned"].iloc[0] == 2 and bool(s["complete"].iloc[0])
    assert s["mean"].iloc[0] == pytest.approx(0.89)
    assert s["std"].iloc[0] == pytest.approx(math.sqrt(2) * 0.001) and s["std_ddof"].iloc[0] == 1
    inc = summary[(summary["config_id"] == study.config_key(missing_id)) & (summary["metric"] == "accuracy")]
    assert inc["n"].iloc[0] == 1 and not bool(inc["complete"].iloc[0]) and math.isnan(inc["std"].iloc[0])
    # tables: the incomplete cell is marked and the missing run is listed in the footnote
    runs2, missing2 = study.read_results(cfg["paths"]["results"])
    paths = study.write_tables(cfg, runs2, missing2, os.path.join(cfg["paths"]["results"], "tables"))
    assert [os.path.basename(p) for p in paths] == [f"{a['name']}.md" for a in cfg["axes"]]
    kd = open(os.path.join(cfg["paths"]["results"], "tables", "kd.md")).read()
    assert "†" in kd and f"`{missing_id}`" in kd and "| teacher (fp32, 4 layers) | 90.0 | 70.0 | 80.0 |" in kd
    # ± is the 95% t half-width over seeds: scores 88.9 and 89.1 -> t(0.975, 1) * 0.1414 / sqrt(2) = 1.27
    assert "| one-stage | 89.0 ±1.3 | 68.9† |" in kd
    assert "Teacher: fp32, 4 layers, one fine-tuning run per task" in kd and "SST-2 90.0, RTE 70.0; Avg 80.0." in kd
    depth = open(os.path.join(cfg["paths"]["results"], "tables", "depth.md")).read()
    assert "Every planned run of this table finished." in depth


def test_cell_without_any_run_is_a_dash_and_figures_are_written(tmp_path):
    cfg = tiny_config(tmp_path, seeds=(1,))
    gone = "student/" + ANCHOR.replace("wbits~1", "wbits~2").replace("epochs~3", "epochs~1")
    root = write_tree(cfg, base_score, skip={gone}, benchmark=False)
    study.write_results(cfg, root, cfg["paths"]["results"], allow_incomplete=True)
    runs, missing = study.read_results(cfg["paths"]["results"])
    table = study.axis_table(cfg, "budget", runs, missing)
    assert "| 2 | short (1 ep) | — | 65.4 | — |" in table and f"`{gone}`" in table
    assert runs["wall_s"].isna().all()  # no benchmark files: NaN, not an error
    paths = study.make_figures(cfg, runs, cfg["paths"]["figures"])
    assert sorted(os.path.basename(p) for p in paths) == sorted(
        f"{n}.{e}" for n in study.FIGURES for e in ("png", "pdf"))
    for p in paths:
        with open(p, "rb") as f:
            head = f.read(8)
        assert head.startswith(b"\x89PNG") if p.endswith(".png") else head.startswith(b"%PDF")


def test_aggregation_of_an_empty_tree_lists_everything_as_missing(tmp_path):
    cfg = tiny_config(tmp_path)
    res = study.write_results(cfg, str(tmp_path / "nothing"), cfg["paths"]["results"], allow_incomplete=True)
    assert res["runs"].empty and len(res["missing"]) == len(study.study_runs(cfg))
    claims = study.check_claims(cfg, res["runs"], res["missing"])
    assert set(claims["verdict"]) == {"inconclusive"}
    assert sorted(set(claims["finding"])) == [1, 2, 3, 4, 5]


def test_table_half_widths_and_the_teachers_distance_to_its_reference():
    from scipy.stats import t

    from xtc.study.tables import ci_half_width, teacher_text

    assert ci_half_width(2.0, 4) == pytest.approx(t.ppf(0.975, 3) * 2.0 / 2)
    assert math.isnan(ci_half_width(2.0, 1)) and math.isnan(ci_half_width(float("nan"), 3))
    cfg = tiny_config()
    cfg["teacher"]["reference"] = {"sst2": 0.92}  # the full-data fine-tune (schema key: teacher.reference)
    teacher = {"sst2": {"score": 90.0, "m_accuracy": 90.0}, "rte": {"score": 70.0, "m_accuracy": 70.0}}
    text = teacher_text(cfg, teacher, ["sst2", "rte"])
    assert "SST-2 90.0, RTE 70.0; Avg 80.0." in text and "(teacher.reference): SST-2 -2.0." in text
    # the reference is scored on whole dev sets: a profile that scores a subset says so beside the distance
    cfg["data"]["max_eval_samples"] = None
    assert "two subsets" not in teacher_text(cfg, teacher, ["sst2", "rte"])
    cfg["data"]["max_eval_samples"] = 400
    assert "first 400 dev examples of each task: the distance mixes two subsets" in teacher_text(cfg, teacher,
                                                                                                 ["sst2", "rte"])


# claims: tests/test_claims.py


def test_cli_study_all_on_a_partial_tree(tmp_path, capsys):
    import yaml

    from xtc.cli import main

    cfg = tiny_config(tmp_path, seeds=(1,))
    write_tree(cfg, base_score, skip={"teacher/task~rte"})
    cfg_file = tmp_path / "study.yaml"
    cfg_file.write_text(study.dump_config(cfg))
    assert yaml.safe_load(cfg_file.read_text())["anchor"]["da"] == "off"
    out = tmp_path / "out"
    args = ["study", "all", "--config", str(cfg_file), "--runs-dir", cfg["paths"]["runs"],
            "--results-dir", str(out / "results"), "--figures-dir", str(out / "figures")]
    assert main(args) == 2  # a missing run is an error unless the study may be incomplete ...
    err = capsys.readouterr().err
    assert "teacher/task~rte (not run (no metrics.json))" in err and "--allow-incomplete" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()  # ... one line, nothing written
    assert main(args + ["--allow-incomplete"]) == 0
    assert json.loads(capsys.readouterr().out)["missing"] == 1
    claims = pd.read_csv(out / "results" / "claims.csv")
    assert set(claims["verdict"]) <= set(study.VERDICTS) and sorted(set(claims["finding"])) == [1, 2, 3, 4, 5]
    assert (out / "figures" / "size.pdf").exists()
    assert list(pd.read_csv(out / "results" / "learning_curves.csv").columns) == CURVES_COLUMNS
    assert (out / "results" / "tables" / "learning_curves.md").exists()
    assert main(["study", "plan", "--config", str(cfg_file)]) == 0
    assert json.loads(capsys.readouterr().out)["runs"] == {"teachers": 2, "students": 20}


def _add_history(cfg: dict, score_of) -> None:
    """Give every fake run an evaluation history (as xtc writes it): one evaluation per epoch, the score
    rising towards the run's final one."""
    for r in study.study_runs(cfg).to_dict("records"):
        path = os.path.join(cfg["paths"]["runs"], r["run_id"], "metrics.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            rec = json.load(f)
        epochs = max(1, int(r["epochs"]))
        rec["history"] = [{"stage": "kd", "step": 10 * e, "epoch": float(e),
                           "metrics": _metrics(r["task"], score_of(r) - 0.02 * (epochs - e))}
                          for e in range(1, epochs + 1)]
        with open(path, "w") as f:
            json.dump(rec, f)


def test_cli_study_commands_write_history_learning_curves_and_print_one_line_per_claim(tmp_path, capsys):
    from xtc.cli import main

    cfg = tiny_config(tmp_path)
    write_tree(cfg, base_score)
    _add_history(cfg, base_score)
    cfg_file = tmp_path / "study.yaml"
    cfg_file.write_text(study.dump_config(cfg))
    res, figs = tmp_path / "results", tmp_path / "figures"
    common = ["--config", str(cfg_file)]
    assert main(["study", "aggregate", *common, "--runs-dir", cfg["paths"]["runs"], "--out-dir", str(res)]) == 0
    assert str(res / "history.csv") in json.loads(capsys.readouterr().out)["out"]
    hist = pd.read_csv(res / "history.csv")
    assert list(hist.columns) == study.HISTORY_COLUMNS and set(hist["run_id"]) == set(study.study_runs(cfg)["run_id"])
    long_w1 = hist[(hist["metric"] == "score") & (hist["wbits"] == 1) & (hist["epochs"] == 3) & (hist["depth"] == 4)
                   & (hist["kd"] == "one-stage") & (hist["lr"] == 5e-5) & (hist["da"] == "off")]
    assert sorted(set(long_w1["step"])) == [10, 20, 30]
    assert main(["study", "figures", *common, "--results-dir", str(res), "--out-dir", str(figs)]) == 0
    written = sorted(os.path.basename(p) for p in capsys.readouterr().out.split())
    assert written == sorted(f"{n}.{e}" for n in study.figure_names(cfg) for e in ("png", "pdf"))
    assert "learning_curve_w2.png" in written and "learning_curve_w1.pdf" in written
    assert main(["study", "claims", *common, "--results-dir", str(res), "--out", str(res / "claims.csv")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    claims = pd.read_csv(res / "claims.csv")
    assert list(claims.columns) == study.CLAIMS_COLUMNS and len(lines) == len(claims)
    for line, r in zip(lines, claims.to_dict("records")):
        assert line == f"claim {r['claim']} [{r['task']}, {r['role']}]: {r['verdict']} -- {r['evidence']}"
    curves_args = ["study", "curves", *common, "--results-dir", str(res), "--out-csv", str(res / "learning_curves.csv"),
                   "--out-md", str(res / "tables" / "learning_curves.md")]
    assert main(curves_args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    curves = pd.read_csv(res / "learning_curves.csv")
    assert len(lines) == len(curves) > 0
    for line, r in zip(lines, curves.to_dict("records")):
        assert line.startswith(f"{r['task']} W{r['wbits']}: {r['verdict']} (late gain {r['gain']:+.2f} [")
    assert (res / "tables" / "learning_curves.md").read_text().startswith("## Learning curves")
    # results without a history.csv (an older aggregation): the axis figures only; no plateau tests
    os.remove(res / "history.csv")
    os.remove(res / "learning_curves.csv")
    assert main(curves_args) == 2
    assert "no history.csv there" in capsys.readouterr().err and not (res / "learning_curves.csv").exists()
    assert main(["study", "figures", *common, "--results-dir", str(res), "--out-dir", str(tmp_path / "f2")]) == 0
    assert sorted(os.listdir(tmp_path / "f2")) == sorted(f"{n}.{e}" for n in study.FIGURES for e in ("png", "pdf"))


def test_cli_study_reproduce(tmp_path, capsys):
    from xtc.cli import main

    cfg = tiny_config(tmp_path)
    write_tree(cfg, base_score)
    ref, fresh = tmp_path / "reference", tmp_path / "fresh"
    study.write_results(cfg, cfg["paths"]["runs"], str(ref))
    study.write_results(cfg, cfg["paths"]["runs"], str(fresh))
    out_csv, out_md = tmp_path / "out" / "reproduction.csv", tmp_path / "out" / "reproduction.md"
    args = ["study", "reproduce", "--reference-dir", str(ref), "--results-dir", str(fresh), "--out-csv", str(out_csv),
            "--out-md", str(out_md)]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    n_configs = study.read_results(str(ref))[0]["config_id"].nunique()
    assert report["cells"] == n_configs and report["status"] == {"identical": n_configs}
    assert report["outside_ci"] == [] and report["out"] == [str(out_csv), str(out_md)]
    assert len(pd.read_csv(out_csv)) == n_configs and f"{n_configs} identical (of {n_configs})" in out_md.read_text()
    # a fresh study 5 points lower on one configuration: outside the reference's CI, and named
    summary = pd.read_csv(fresh / "summary.csv")
    cid = study.config_key("student/" + ANCHOR)
    summary.loc[summary["config_id"] == cid, "mean"] -= 0.05
    summary.to_csv(fresh / "summary.csv", index=False)
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outside_ci"] == [cid] and report["status"]["outside CI"] == 1
    # bad input: one line naming the problem, exit 2, nothing written
    new = tmp_path / "new"
    csv, md = str(new / "reproduction.csv"), str(new / "reproduction.md")
    for ref_dir, res_dir, o_csv, o_md, problem in (
            (tmp_path / "nowhere", fresh, csv, md, "no summary.csv in the reference folder"),
            (ref, cfg["paths"]["runs"], csv, md, "no summary.csv in the fresh folder"),
            (ref, fresh, str(tmp_path), md, "is a folder"),
            (ref, fresh, csv, csv, "are the same file")):
        assert main(["study", "reproduce", "--reference-dir", str(ref_dir), "--results-dir", str(res_dir),
                     "--out-csv", o_csv, "--out-md", o_md]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("xtc study: error:") and problem in err, err
        assert not new.exists()


def test_write_versions_records_each_distinct_run_version_set(tmp_path):
    import json as _json

    from xtc.study import write_versions

    for i, torch_v in enumerate(["2.13.0", "2.13.0", "2.14.0"]):
        d = tmp_path / "runs" / f"r{i}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(_json.dumps({"versions": {"torch": torch_v}}))
    out = write_versions(str(tmp_path / "runs"), str(tmp_path / "versions.json"))
    assert out["runs_recorded"] == [{"torch": "2.13.0"}, {"torch": "2.14.0"}]
    assert _json.load(open(tmp_path / "versions.json"))["aggregated_with"]["python"]


# ----------------------------------------------------------------------------------------------- one home per fact


def _schema() -> dict:
    import yaml

    with open(study.SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def test_schema_enums_and_defaults_are_the_packages():
    """Settings the study varies or fixes take the package's allowed values and defaults: a change on
    either side without the other fails here."""
    from xtc.config import (ACT_BITS, KD_MODES, PRECISIONS, WEIGHT_BITS, AugmentConfig, CompressConfig,
                            TrainConfig)
    from xtc.tasks import TASKS

    sch = _schema()
    defs, props = sch["$defs"], sch["properties"]
    assert defs["wbits"]["enum"] == list(WEIGHT_BITS)
    assert defs["abits"]["enum"] == list(ACT_BITS)
    assert sorted(defs["kd"]["enum"]) == sorted([*KD_MODES, *study.KD_CONTROLS])  # xtc's modes + the control arms
    assert [d for d in defs["da"]["enum"] if isinstance(d, str)] == list(study.DA_LEVELS)
    assert defs["task"]["enum"] == list(TASKS)
    train = {k: v["default"] for k, v in props["train"]["properties"].items() if v.get("default") is not None}
    tc = TrainConfig()
    assert train == {"batch_size": tc.batch_size, "eval_batch_size": tc.eval_batch_size,
                     "eval_every": tc.eval_every, "warmup_epochs": tc.warmup_epochs, "precision": tc.precision,
                     "adam_epsilon": tc.adam_epsilon, "teacher_cache_gb": CompressConfig().teacher_cache_gb}
    assert props["train"]["properties"]["precision"]["enum"] == list(PRECISIONS)
    assert props["teacher"]["properties"]["seed"]["default"] == tc.seed
    aug = {k: v["default"] for k, v in props["augment"]["properties"].items() if v.get("default") is not None}
    ac = AugmentConfig()  # augment's settings are a dataclass now (they were keyword defaults of augment())
    assert aug == {"copies": ac.copies, "replace_prob": ac.replace_prob, "candidates": ac.candidates, "seed": ac.seed,
                   "pair_mode": ac.pair_mode, "replace_stop_words": ac.replace_stop_words}
    # any slug names an axis; the claims and figures read these names (an axis of another name gets its table)
    name = re.compile(props["axes"]["items"]["properties"]["name"]["pattern"])
    assert all(name.fullmatch(n) for n in ("budget", "lr", "kd", "da", "bits", "depth", "xtc", "data-1k"))
    assert not name.fullmatch("Data 1k")


def _xtc_modules() -> dict:
    import glob

    pkg = os.path.join(ROOT, "xtc")
    out = {}
    for p in glob.glob(os.path.join(pkg, "**", "*.py"), recursive=True):
        name = os.path.relpath(p[:-3], ROOT).replace(os.sep, ".").removesuffix(".__init__")
        out[name] = p
    return out


def test_no_import_cycle_and_no_private_names_across_modules():
    """Every `xtc` import, also those inside functions: the module graph has no cycle (xtc.study.config and
    xtc.study.grid imported each other), and no module imports another's _private name."""
    import ast

    mods = _xtc_modules()
    graph, private = {}, []
    for name, path in mods.items():
        deps = set()
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "xtc":
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
                private += [f"{name} imports {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in mods and d != name}
    assert not private
    state, cycle = {}, []

    def visit(u, stack):
        state[u] = "open"
        for v in sorted(graph[u]):
            if state.get(v) == "open":
                cycle.append(" -> ".join(stack[stack.index(v):] + [u, v]))
            elif v not in state:
                visit(v, stack + [u])
        state[u] = "done"

    for u in sorted(graph):
        if u not in state:
            visit(u, [])
    assert graph["xtc.study.grid"] and not cycle


def test_every_run_is_a_valid_xtc_command_with_its_settings():
    """The flags the runs table carries parse with xtc's own command line into the run's settings."""
    import shlex

    from xtc.cli import build_parser
    from xtc.settings import build_settings

    from xtc.config import CompressConfig

    cfg = tiny_config()
    cfg["axes"][2]["vary"]["kd"].append("two-stage-1x")
    cfg["axes"][3]["vary"]["da"].append("on-steps")
    parser = build_parser()
    for r in study.study_runs(cfg).to_dict("records"):
        a = build_settings(parser.parse_args([r["command"], *shlex.split(r["args"])]))  # as xtc's main does
        t = a.train  # the parsed settings, as config objects (xtc.config)
        assert a.task == r["task"] and a.out == study.run_dir(cfg["paths"]["runs"], r["run_id"])
        assert t.epochs == r["epochs"] and t.lr == r["lr"] and t.seed == r["seed"]
        assert t.precision == cfg["train"]["precision"] and t.batch_size == cfg["train"]["batch_size"]
        if r["kind"] == "student":
            c = a.compress
            kd, factor = study.kd_flags(r["kd"])  # a control arm runs as xtc's two-stage at its own factor
            assert (a.quant.wbits, a.quant.abits, c.kd) == (r["wbits"], r["abits"], kd)
            assert c.stage1_lr_factor == (CompressConfig().stage1_lr_factor if factor is None else factor)
            assert a.teacher == study.teacher_dir(cfg["paths"]["runs"], r["task"])
            assert (c.init is None) == (r["init"] == "teacher") and (c.train_file is None) == (r["da"] == "off")
            assert c.layers == (r["depth"] if r["init"] == "teacher" else None)
            inputs = r["inputs"]
            assert inputs["teacher"] == os.path.join(a.teacher, study.METRICS_FILE)
            if c.init:
                assert inputs["init"] == os.path.join(c.init, study.METRICS_FILE)
            if c.train_file:
                assert inputs["train_file"] == c.train_file
        else:
            assert a.model == "default" and r["inputs"] == {}


def test_paths_with_spaces_and_semicolons_stay_one_argument(tmp_path):
    """A model path, runs folder or GLUE folder with a space or a `;` reaches xtc as one argument and never
    runs a second command (each job's flags go to bash as the rules pass them)."""
    import shlex
    import subprocess

    cfg = tiny_config(tmp_path)
    model = str(tmp_path / "my model; touch INJECTED")
    cfg["teacher"]["model"] = model
    cfg["paths"]["runs"] = str(tmp_path / "runs dir;touch INJECTED")
    cfg["glue_dir"] = str(tmp_path / "glue $(touch INJECTED)")
    runs = study.study_runs(cfg)
    jobs = [(r["command"], r["args"]) for r in runs.to_dict("records")]
    jobs += [("augment", study.augment_flags(cfg, t)) for t in cfg["tasks"]]
    for command, args in jobs:
        out = subprocess.run(["bash", "-c", f"printf '%s\\n' {args}"], cwd=tmp_path, capture_output=True,
                             text=True, check=True).stdout.splitlines()
        assert out == shlex.split(args)
        assert out[out.index("--glue-dir") + 1] == os.path.realpath(cfg["glue_dir"])
        if command == "finetune":
            assert out[out.index("--model") + 1] == model
    assert not (tmp_path / "INJECTED").exists()


def test_a_yaml_syntax_error_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: bad\ntasks: [sst2, rte\nseeds: [1]\n")
    with pytest.raises(study.ConfigError, match=r"bad\.yaml, line 3, column 6: YAML syntax error: .*"
                       r"while parsing a flow sequence at line 2, column 8"):
        study.load_config(str(bad))
    with pytest.raises(study.ConfigError, match="is a YAML mapping"):
        bad.write_text("- just\n- a list\n")
        study.load_config(str(bad))


def test_a_missing_schema_is_an_error_not_a_skip(tmp_path):
    cfg = copy.deepcopy(tiny_config())
    with pytest.raises(study.ConfigError, match="schema .*missing"):
        study.validate_config(cfg, schema=str(tmp_path / "nowhere.yaml"))


def test_plan_costs_a_step_by_its_examples():
    # step_s is a step of 32 examples: halving the batch doubles the steps, not the compute of an epoch
    from xtc.study.plan import estimate_cost

    cfg = study.validate_config(tiny_config())  # fills the schema's default cost section
    small = copy.deepcopy(cfg)
    small["train"]["batch_size"] = cfg["train"]["batch_size"] // 2
    a, b = estimate_cost(cfg), estimate_cost(small)
    assert (b["steps"].sum() > a["steps"].sum()) and b["compute_s"].sum() == pytest.approx(a["compute_s"].sum(),
                                                                                           rel=0.02)


def test_read_results_keeps_empty_and_numeric_looking_text_columns_as_text(tmp_path):
    """runs.csv written by pandas loses the type of text columns: an empty budget reads back as NaN and a
    single teacher layer as a number; read_results restores both as text."""
    from xtc.study.aggregate import MISSING_COLUMNS, RUNS_COLUMNS

    cols = {c: ["a", "b"] for c in RUNS_COLUMNS}
    cols.update(budget=["", "short"], teacher_layers=["", "5"], size_source=["", "packed"], value=[0.5, 0.25])
    pd.DataFrame(cols).to_csv(tmp_path / "runs.csv", index=False)
    runs, missing = study.read_results(str(tmp_path))
    assert runs["budget"].tolist() == ["", "short"] and runs["teacher_layers"].tolist() == ["", "5"]
    assert runs["size_source"].tolist() == ["", "packed"] and runs["value"].tolist() == [0.5, 0.25]
    assert list(missing.columns) == MISSING_COLUMNS and len(missing) == 0  # no missing.csv: none missing
    pd.DataFrame({c: ["x"] for c in MISSING_COLUMNS}).to_csv(tmp_path / "missing.csv", index=False)
    assert study.read_results(str(tmp_path))[1]["reason"].tolist() == ["x"]


@pytest.mark.parametrize("value", [None, "0.9", float("nan")])
def test_task_score_is_none_for_a_missing_text_or_nan_metric(value):
    from xtc.study.aggregate import task_score

    assert task_score("sst2", {"accuracy": value}) is None
    assert task_score("sst2", {}) is None
    assert task_score("mrpc", {"accuracy": 0.5, "f1": value}) is None


def test_each_kind_of_missing_run_gets_its_reason_and_folder(tmp_path):
    cfg = tiny_config(tmp_path, seeds=(1,))
    root = write_tree(cfg, base_score)
    plan = study.study_runs(cfg).to_dict("records")
    students = [r for r in plan if r["kind"] == "student" and r["wbits"] < 32]
    unfinished, unreadable, other_task, no_export, emptied = students[:5]
    for r in (unfinished, unreadable, other_task, emptied):
        os.unlink(os.path.join(root, r["run_id"], "metrics.json"))
    os.makedirs(os.path.join(root, unfinished["run_id"], study.STATE_DIR))
    open(os.path.join(root, unreadable["run_id"], "metrics.json"), "w").write("{broken")
    json.dump({"task": "cola", "metrics": {}}, open(os.path.join(root, other_task["run_id"], "metrics.json"), "w"))
    os.unlink(study.size_file(root, study.run_key(no_export)))
    runs, missing = study.collect(cfg, root)
    got = {r["run_id"]: (r["reason"], r["run_dir"]) for r in missing.to_dict("records")}
    d = lambda r: os.path.join(root, r["run_id"])  # noqa: E731
    assert got[unfinished["run_id"]] == ("unfinished (resume state present)", d(unfinished))
    assert got[unreadable["run_id"]][0].startswith("unreadable metrics.json: Expecting property name")
    assert got[unreadable["run_id"]][1] == d(unreadable)
    assert got[other_task["run_id"]] == (f"unreadable metrics.json: metrics.json is for task 'cola', not "
                                         f"'{other_task['task']}'", d(other_task))
    assert got[no_export["run_id"]] == ("no export (packed size unknown)",
                                        os.path.dirname(study.size_file(root, study.run_key(no_export))))
    assert got[emptied["run_id"]] == ("not run (no metrics.json)", d(emptied))  # a folder alone is not a start
    assert len(got) == 5 and list(missing.columns) == study.aggregate.MISSING_COLUMNS
    # the runs after an unreadable one are still read
    assert set(runs["run_id"]) == {r["run_id"] for r in plan} - {unfinished["run_id"], unreadable["run_id"],
                                                                  other_task["run_id"], emptied["run_id"]}


def test_benchmark_files_without_a_usable_time_give_nan(tmp_path):
    from xtc.study.aggregate import read_benchmark

    p = tmp_path / "b.tsv"
    p.write_text("s\tmax_rss\nbad\t100\n")
    got = read_benchmark(str(p))
    assert math.isnan(got["wall_s"]) and got["max_rss_mb"] == 100.0
    p.write_text("h:m:s\tmax_rss\n0:00:01\t5\n7\n")  # no "s" column; a short row is skipped
    got = read_benchmark(str(p))
    assert math.isnan(got["wall_s"]) and got["max_rss_mb"] == 5.0
    p.write_text("s\n1.0\n3.0\n")
    assert read_benchmark(str(p))["wall_s"] == 2.0 and math.isnan(read_benchmark(str(p))["max_rss_mb"])
    assert read_benchmark(str(tmp_path / "absent.tsv")) == {}
    p.write_text("s\n")  # a header without rows
    assert read_benchmark(str(p)) == {}


def test_a_runs_row_carries_every_recorded_field(tmp_path):
    cfg = tiny_config(tmp_path, seeds=(1,))
    root = write_tree(cfg, base_score)
    runs, _ = study.collect(cfg, root)
    s = runs[(runs["depth"] == 2) & (runs["wbits"] == 1) & (runs["metric"] == "accuracy")].iloc[0]
    assert s["teacher_layers"] == "1,3" and s["train_wall_s"] == 1.5 and s["train_tokens_per_s"] == 100.0
    assert s["wall_s"] == 12.5 and s["max_rss_mb"] == 850.0 and s["run_dir"] == os.path.join(root, s["run_id"])
    assert (s["fp32_bytes"], s["quantized_bytes"], s["teacher_fp32_bytes"]) == (2_000_000, 2_000_000 // 30, 4_000_000)
    assert (s["packed_bytes"], s["packed_file_bytes"]) == (100_000, 101_000) and bool(s["is_selection_metric"])
    score = runs[(runs["run_id"] == s["run_id"]) & (runs["metric"] == "score")].iloc[0]
    assert not bool(score["is_selection_metric"])
    full = runs[(runs["kind"] == "student") & (runs["depth"] == 4)].iloc[0]
    assert full["teacher_layers"] == ""  # no layer list: the student kept every teacher layer
    assert (runs.loc[runs["kind"] == "teacher", "teacher_layers"] == "").all()
    assert list(runs.columns) == study.aggregate.RUNS_COLUMNS


def test_results_files_and_the_incomplete_study_message(tmp_path):
    cfg = tiny_config(tmp_path, seeds=(1,))
    plan = study.study_runs(cfg)
    gone = set(plan["run_id"][:5])
    root = write_tree(cfg, base_score, skip=gone)
    with pytest.raises(study.IncompleteStudyError) as e:
        study.write_results(cfg, root, cfg["paths"]["results"])
    assert str(e.value).startswith("5 planned runs have no results") and str(e.value).count("(not run") == 3
    assert str(e.value).count("(no metrics.json)); ") == 3  # three examples, each followed by "; "
    study.write_results(cfg, root, cfg["paths"]["results"], allow_incomplete=True)
    for name in ("runs.csv", "summary.csv", "missing.csv"):  # no index column
        head = open(os.path.join(cfg["paths"]["results"], name)).readline()
        assert head.startswith({"runs.csv": "run_id,", "summary.csv": "config_id,", "missing.csv": "run_id,"}[name])
    summary = pd.read_csv(os.path.join(cfg["paths"]["results"], "summary.csv"))
    assert summary["n_planned"].dtype.kind == "i" and summary["n"].dtype.kind == "i"  # counts, not 2.0
    empty = study.aggregate.summarize(cfg, pd.DataFrame(columns=study.aggregate.RUNS_COLUMNS))
    assert len(empty) == 0 and list(empty.columns)[:3] == ["config_id", "kind", "axes"] and "n_planned" in empty


def test_runs_csv_reads_the_selection_the_final_checkpoint_and_the_training_size(tmp_path):
    cfg = tiny_config(tmp_path, seeds=(1,))
    root = write_tree(cfg, base_score)
    anchor = os.path.join(root, "student", ANCHOR)
    rec = json.load(open(os.path.join(anchor, "metrics.json")))
    rec.update(selected_by="validation", best_step=20, final_step=30, final_metrics={"accuracy": 0.5},
               validation_metrics={"accuracy": 0.8}, data={"train": {"n": 32, "how": "stratified"}})
    json.dump(rec, open(os.path.join(anchor, "metrics.json"), "w"))
    json.dump({"task": "sst2", "labels": [0, 1, 1], "selected": [1, 1, 1], "final": [0, 1, 1]},
              open(os.path.join(anchor, "dev_predictions.json"), "w"))
    runs, _ = study.collect(cfg, root)
    new = runs[(runs["run_id"] == "student/" + ANCHOR) & (runs["metric"] == "score")].iloc[0]
    assert (new["selected_by"], new["best_step"], new["final_step"]) == ("validation", 20, 30)
    assert (new["final_value"], new["validation_value"], new["train_examples"]) == (0.5, 0.8, 32)
    assert new["collapsed"] == True  # noqa: E712  (one class for every dev example)
    old = runs[(runs["run_id"] != "student/" + ANCHOR) & (runs["metric"] == "score")]
    assert (old["selected_by"] == "dev").all() and old["final_value"].isna().all()  # older records
    assert old["collapsed"].isna().all()  # no predictions: unknown, not "not collapsed"
    summary = study.summarize(cfg, runs)
    cell = summary[(summary["config_id"] == "student/" + ANCHOR.rsplit("/seed~", 1)[0])
                   & (summary["metric"] == "score")].iloc[0]
    assert cell["n_collapsed"] == 1 and cell["final_mean"] == 0.5 and cell["selected_by"] == "validation"


def test_table_footers_say_what_the_fp32_rows_ran(tmp_path):
    from xtc.study.tables import axis_table

    cfg = tiny_config(tmp_path, seeds=(1,))
    write_tree(cfg, base_score)
    runs, missing = study.collect(cfg, cfg["paths"]["runs"])
    depth = axis_table(cfg, "depth", runs, missing)
    assert "A bits 32" in depth and "A bits 8" not in depth  # fp32 rows: no activation quantization
    assert "budget reduce (3/4 ep)" in depth and "budget long" not in depth  # step-1 runs: the reduce budget
    xtc = axis_table(cfg, "xtc", runs, missing)
    assert "A bits 8 for W1 rows, 32 for fp32 rows" in xtc and "budget long (3 ep) for W1 rows, reduce" in xtc
