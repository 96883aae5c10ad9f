# Shared set-up: config validation, the study grid (xtc/study/grid.py) exposed as a Paramspace, paths, flags.
import copy
import os
import sys

from snakemake.utils import Paramspace, validate
from snakemake_interface_executor_plugins.settings import DeploymentMethod

import xtc.study as study


try:
    # the schema (errors name the key, e.g. "config error at axes[2].vary.kd[0]: ...") and the checks a
    # schema cannot express (budget names, depths vs the teacher, DA needs KD); a normalised copy
    STUDY = study.validate_config(copy.deepcopy(config))
except study.ConfigError as exc:
    raise ValueError(f"invalid study config: {exc}") from None
validate(config, "../schemas/config.schema.yaml")  # Snakemake's validation; fills the schema's defaults

RUNS = STUDY["paths"]["runs"]
RESULTS = STUDY["paths"]["results"]
FIGURES = STUDY["paths"]["figures"]
GLUE_DIR = study.resolve_glue_dir(STUDY)

RUNS_TABLE = study.study_runs(STUDY)  # every unique run, teachers first, with the axes it belongs to
STUDENTS = Paramspace(study.paramspace_frame(STUDY), param_sep="~")
STUDENT = STUDENTS.wildcard_pattern  # task~{task}/depth~{depth}/.../seed~{seed}
QUANTIZED = [study.student_key(r) for r in RUNS_TABLE.to_dict("records")
             if r["kind"] == "student" and r["wbits"] < 32]
AXES = [a["name"] for a in STUDY["axes"]]

wildcard_constraints:
    task="[a-z0-9]+",
    depth="[0-9]+",
    wbits="[0-9]+",
    abits="[0-9]+",
    kd="[a-z-]+",
    epochs="[^/]+",
    lr="[^/]+",
    da="on|off",
    init="teacher|step1",
    seed="[0-9]+",


# Every shell: bash strict mode and the repository on PYTHONPATH. With the project's venv (no --sdm conda),
# the Python running Snakemake comes first on PATH, so its `xtc` console script runs even when the venv is
# not activated (`.venv/bin/snakemake`); inside a per-rule conda env, `xtc` is `python -m xtc.cli` of that
# env. glue_dir 'hub' drops XTC_GLUE_DIR so that xtc reads the Hugging Face hub.
_prefix = ["set -euo pipefail; ",
           "export PYTHONPATH=%s${{PYTHONPATH:+:$PYTHONPATH}}; " % workflow.basedir]
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    _prefix.append('xtc() {{ python -m xtc.cli "$@"; }}; ')
else:
    _prefix.append("export PATH=%s:$PATH; " % os.path.dirname(sys.executable))
    _prefix.append('command -v xtc >/dev/null 2>&1 || xtc() {{ python -m xtc.cli "$@"; }}; ')
if GLUE_DIR is None:
    _prefix.append("unset XTC_GLUE_DIR; ")
shell.prefix("".join(_prefix))


def res(rule_name, key, default):
    """A rule's threads/resources from the config's `resources` section."""
    return STUDY["resources"].get(rule_name, {}).get(key, default)


def student_row(wildcards):
    return {"kind": "student", **{c: study.parse_value(c, wildcards[c]) for c in study.STUDENT_COLS}}


def student_inputs(wildcards):
    """The teacher; the step-1 run a reduced-depth quantized student starts from; the augmented data."""
    row = student_row(wildcards)
    inputs = {"teacher": f"{RUNS}/teacher/task~{row['task']}/metrics.json"}
    if row["init"] == "step1":
        s1 = study.step1_row(STUDY, row["task"], row["depth"], row["seed"])
        inputs["init"] = f"{RUNS}/{s1['run_id']}/metrics.json"
    if row["da"] == "on":
        inputs["train_file"] = study.augment_file(RUNS, row["task"])
    return inputs


def student_start_flags(wildcards):
    """`--layers k` (copy k evenly spaced teacher layers), or `--init STEP1_DIR`; plus `--train-file`."""
    return study.compress_flags(STUDY, student_row(wildcards))


def run_dir(wildcards, output):
    return os.path.dirname(output[0])


DATA_FLAGS = study.data_flags(STUDY)
TEACHER_DATA_FLAGS = study.data_flags(STUDY, "teacher")
# a run folder without resume state is stale (Snakemake removed its metrics.json to re-run it): start over
FRESH_RUN = "if [ ! -d {params.out}/.xtc_state ]; then rm -rf {params.out}; fi; "


def finished_runs(wildcards):
    """Every run's metrics.json and every quantized student's size.json (inputs of the aggregation)."""
    return ([f"{RUNS}/{rid}/metrics.json" for rid in RUNS_TABLE["run_id"]]
            + [f"{RUNS}/export/{key}/size.json" for key in QUANTIZED])
