"""The study grid: a config's axes expanded into runs, equal settings mapped to one run.

Grid (one factor at a time around the XTC recipe, runs shared between axes)
---------------------------------------------------------------------------
A config names an *anchor* setting (the recipe: full depth, 1-bit weights, 8-bit activations, one-stage KD,
the long budget, the base learning rate, no augmentation) and a list of *axes*. An axis varies some factors
(`vary`: factor -> list of values; several factors are crossed) and may fix others (`set`); every other
factor keeps its anchor value. Each combination, for every task and seed, becomes a run. Three rules map a
setting to a run, so that equal settings give the same run and are trained once:

* fp32 at the teacher's depth is the teacher itself (`xtc finetune`, once per task, shared by all seeds);
* fp32 below the teacher's depth is an XTC step-1 run: `xtc compress --layers k --wbits 32` with the
  `step1` settings of the config (budget, learning rate, KD mode; no augmentation), whatever the axis;
* a quantized student below the teacher's depth is XTC step 2: `--init <its step-1 run> --wbits b`;
  at the teacher's depth it starts from the teacher (`init~teacher`).

Rows are then deduplicated on the run folder; the `axes` column lists every axis a run belongs to (the
anchor row belongs to all of them). A student's folder names every setting, e.g.
`student/task~mrpc/depth~6/wbits~1/abits~8/kd~one-stage/epochs~3/lr~5e-05/da~off/init~teacher/seed~1`
(xtc.study.paths). Each run's row also carries its full `xtc` command line (xtc.study.flags) and input
files, which the Snakemake rules look up by run id.
"""
from __future__ import annotations

import itertools

from xtc.study.config import AUGMENTED_DA, da_step_share, norm_da, resolve_epochs
from xtc.study.flags import student_flags, teacher_flags
from xtc.study.paths import (SETTING_COLS, TEACHER, augment_file, config_key, metrics_file, parse_run_relpath,
                             run_relpath, teacher_run_id)

FACTORS = ("depth", "wbits", "abits", "kd", "epochs", "lr", "da", "examples")  # what an axis varies


def teacher_row(config: dict, task: str) -> dict:
    t = config["teacher"]
    row = {"kind": "teacher", "task": task, "depth": config["teacher"]["num_layers"], "wbits": 32, "abits": 32,
           "kd": "none", "epochs": float(t["epochs"]), "lr": float(t["lr"]), "da": "off", "examples": None,
           "init": "pretrained",
           "seed": int(t["seed"]), "budget": "teacher"}
    row["run_id"] = run_relpath(row)
    return row


def step1_row(config: dict, task: str, depth: int, seed: int) -> dict:
    s = config["step1"]
    row = {"kind": "student", "task": task, "depth": int(depth), "wbits": 32, "abits": 32, "kd": s["kd"],
           "epochs": resolve_epochs(config, task, s["epochs"]), "lr": float(s["lr"]), "da": "off",
           "examples": None, "init": "teacher", "seed": int(seed),
           "budget": s["epochs"] if isinstance(s["epochs"], str) else ""}
    row["run_id"] = run_relpath(row)
    return row


def run_examples(config: dict, value):
    """A student's training examples as its run records them: None for the profile's data.max_train_samples
    (also when an axis names that same number, so equal settings stay one run), else a count or 'all'."""
    default = config["data"].get("max_train_samples") or "all"
    return None if value is None or value == default else value


def setting_row(config: dict, task: str, seed: int, raw: dict) -> dict:
    """Map one axis point (raw factor values; budget names allowed) to a run (see the module docstring)."""
    L = config["teacher"]["num_layers"]
    depth = L if raw["depth"] == "full" else int(raw["depth"])
    wbits = int(raw["wbits"])
    if wbits == 32:
        return teacher_row(config, task) if depth == L else step1_row(config, task, depth, seed)
    da = norm_da(raw["da"])
    # da "on-steps" trains on the augmented file for the budget's epochs / (1 + copies): the optimizer steps of
    # "off" (up to the rounding of a last partial batch); its folder names the epochs it runs, as written (%g)
    epochs = float(f"{resolve_epochs(config, task, raw['epochs']) * da_step_share(config, da):g}")
    row = {"kind": "student", "task": task, "depth": depth, "wbits": wbits, "abits": int(raw["abits"]),
           "kd": raw["kd"], "epochs": epochs, "lr": float(raw["lr"]),
           "da": da, "examples": run_examples(config, raw.get("examples")),
           "init": "teacher" if depth == L else "step1", "seed": int(seed),
           "budget": raw["epochs"] if isinstance(raw["epochs"], str) else ""}
    row["run_id"] = run_relpath(row)
    return row


def axis_tasks(config: dict, axis_name: str) -> list[str]:
    """The tasks of an axis: its own `tasks` list (a subset, e.g. no augmentation of MNLI/QQP), else all."""
    axis = next((a for a in config["axes"] if a["name"] == axis_name), None)
    return [t for t in config["tasks"] if t in ((axis or {}).get("tasks") or config["tasks"])]


def axis_seeds(config: dict, axis_name: str) -> list[int]:
    """The seeds of an axis: its own `seeds` list (a subset, e.g. fewer seeds where runs vary little), else all."""
    axis = next((a for a in config["axes"] if a["name"] == axis_name), None)
    return [s for s in config["seeds"] if s in ((axis or {}).get("seeds") or config["seeds"])]


def members(config: dict):
    """Long table of the study design: one row per (axis, axis point, task, seed) with the run it maps to.

    Columns: axis, point (index of the point within the axis), the raw varied values as `v_<factor>`,
    the run's settings, kind, budget and run_id."""
    import pandas as pd

    rows = []
    for axis in config["axes"]:
        vary = axis["vary"]
        factors = list(vary)
        for pi, combo in enumerate(itertools.product(*(vary[f] for f in factors))):
            raw = {**config["anchor"], **(axis.get("set") or {}), **dict(zip(factors, combo))}
            for task in axis_tasks(config, axis["name"]):
                for seed in axis_seeds(config, axis["name"]):
                    r = setting_row(config, task, seed, raw)
                    rows.append({"axis": axis["name"], "point": pi, **{f"v_{f}": raw[f] for f in factors}, **r})
    return pd.DataFrame(rows)


def task_files(config: dict, task: str) -> dict:
    """The spec and data files of a task of your own (name -> path), so editing them re-runs its teacher and,
    through it, its students; none for a GLUE task (or data from the hub)."""
    from xtc.study.config import task_of

    spec_file = (config.get("task_specs") or {}).get(task)
    if spec_file is None:
        return {}
    spec = task_of(config, task).spec
    files = {"task_spec": spec_file}
    if not spec.hub_dataset:
        files.update({k: getattr(spec, k) for k in ("train_data", "dev_data") if getattr(spec, k)})
    return files


def run_inputs(config: dict, row: dict) -> dict:
    """The files a run needs before it starts: its teacher, the step-1 run it starts from, its augmented
    training data (name -> path); a teacher of a task of your own needs its spec and data files (a GLUE
    teacher: none)."""
    runs = config["paths"]["runs"]
    if row["kind"] == TEACHER:
        return task_files(config, row["task"])
    inputs = {"teacher": metrics_file(runs, teacher_run_id(row["task"]))}
    if row["init"] == "step1":
        inputs["init"] = metrics_file(runs, row["init_run"])
    if row["da"] in AUGMENTED_DA:
        inputs["train_file"] = augment_file(runs, row["task"])
    return inputs


def study_runs(config: dict):
    """Every unique run of the study, teachers first: settings, kind, budget name(s), the axes it belongs to
    (';'-separated, config order), the run it starts from (`init_run`), and how it runs: its `xtc` command
    (`command`: finetune or compress), its shell-quoted flags (`args`) and its input files (`inputs`)."""
    import pandas as pd

    m = members(config)
    order = {a["name"]: i for i, a in enumerate(config["axes"])}
    rows: dict[str, dict] = {}
    for task in config["tasks"]:
        t = teacher_row(config, task)
        rows[t["run_id"]] = {**t, "axes": ["teacher"]}
    for r in m.to_dict("records"):
        r["examples"] = parse_run_relpath(r["run_id"]).get("examples")  # pandas made None/int columns float
        cur = rows.setdefault(r["run_id"], {**{k: r[k] for k in ("kind", *SETTING_COLS, "budget", "run_id")},
                                            "axes": []})
        if r["axis"] not in cur["axes"]:
            cur["axes"].append(r["axis"])
        if r["budget"] and r["budget"] not in str(cur["budget"]).split("/"):
            cur["budget"] = "/".join(x for x in (cur["budget"], r["budget"]) if x)
    for r in list(rows.values()):  # step-1 runs that step-2 students start from
        if r["init"] == "step1":
            s1 = step1_row(config, r["task"], r["depth"], r["seed"])
            cur = rows.setdefault(s1["run_id"], {**s1, "axes": []})
            if "xtc-step1" not in cur["axes"]:
                cur["axes"].append("xtc-step1")
    out = []
    for r in rows.values():
        r = dict(r)
        r["axes"] = ";".join(sorted(r["axes"], key=lambda a: (a != "teacher", order.get(a, 99), a)))
        if r["kind"] == "teacher":
            r["init_run"] = ""
        elif r["init"] == "step1":
            r["init_run"] = step1_row(config, r["task"], r["depth"], r["seed"])["run_id"]
        else:
            r["init_run"] = teacher_run_id(r["task"])
        r["config_id"] = config_key(r["run_id"])
        r["command"] = "finetune" if r["kind"] == TEACHER else "compress"
        r["args"] = teacher_flags(config, r) if r["kind"] == TEACHER else student_flags(config, r)
        r["inputs"] = run_inputs(config, r)
        out.append(r)
    df = pd.DataFrame(out)
    df["examples"] = pd.Series([r["examples"] for r in out], dtype=object)  # None (the profile's), a count, 'all'
    task_order = {t: i for i, t in enumerate(config["tasks"])}
    df["_k"] = df["kind"].map({"teacher": 0, "student": 1})
    df["_t"] = df["task"].map(task_order)
    df = df.sort_values(["_k", "_t", "init", "depth", "wbits", "kd", "epochs", "lr", "da", "seed"],
                        ascending=[True, True, False, False, False, True, True, True, True, True])
    cols = ["run_id", "kind", "axes", *SETTING_COLS, "budget", "init_run", "config_id", "command", "args", "inputs"]
    return df[cols].reset_index(drop=True)
