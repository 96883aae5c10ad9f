"""Tests of xtc/study/config.py: a study profile is validated against the schema and the package; an error names
the key."""
import copy
import os
import re

import pytest

from study_fixtures import PROFILES, tiny_config
from xtc import study


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
