# Shared set-up: the config validated once, the study grid built once (xtc/study/grid.py: one row per run
# with its `xtc` flags and input files), the lookups the rules make in it, and the shell prefix.
import os
import shlex
import sys

from snakemake_interface_executor_plugins.settings import DeploymentMethod

import xtc.study as study
from xtc.files import remove_stale_snakemake_lock
from xtc.study import paths


try:
    # Snakemake's validate (schema defaults filled in `config`) plus the checks a schema cannot express
    # (budget names, depths vs the teacher, DA needs KD); errors name the key, e.g. axes[2].vary.kd[0]
    study.validate_config(config)
except study.ConfigError as exc:
    raise ValueError(f"invalid study config: {exc}") from None

if workflow.is_main_process and remove_stale_snakemake_lock():  # left by a snakemake killed with -9
    print("xtc-bench: removed Snakemake's stale lock (.snakemake/locks) of a killed run; no other snakemake "
          "runs in this folder", file=sys.stderr)

RUNS = config["paths"]["runs"]
RESULTS = config["paths"]["results"]
FIGURES = config["paths"]["figures"]
REFERENCE = config["paths"]["reference"]  # committed results to reproduce (rule reproduction), or None
if REFERENCE is not None and os.path.realpath(REFERENCE) == os.path.realpath(RESULTS):
    # the fresh summary.csv would overwrite the reference it is compared with
    raise ValueError(f"invalid study config: paths.reference is paths.results ({RESULTS}); in the profile, point "
                     "paths.results at another folder for the fresh study, or set paths.reference: null")
ALLOW_INCOMPLETE = config["allow_incomplete"]
AXES = [a["name"] for a in config["axes"]]
FIGURE_NAMES = study.figure_names(config)  # the axes' figures and one learning-curve figure per bit-width
LEARNING_CURVES = study.learning_curve_names(config)

RUNS_TABLE = study.study_runs(config)  # every unique run, teachers first: settings, axes, args, inputs
RUN_INPUTS = dict(zip(RUNS_TABLE["run_id"], RUNS_TABLE["inputs"]))
QUANTIZED = [paths.run_key(r) for r in RUNS_TABLE.to_dict("records") if r["kind"] == "student" and r["wbits"] < 32]
AUGMENT_ARGS = {task: study.augment_flags(config, task) for task in config["tasks"]}


wildcard_constraints:
    run=f"{paths.TEACHER_RUN_RE}|{paths.STUDENT_RUN_RE}",
    key=paths.STUDENT_KEY_RE,
    task="[a-z0-9]+",


# Every shell: bash strict mode and the repository on PYTHONPATH. With the project's venv (no --sdm conda),
# the Python running Snakemake comes first on PATH, so its `xtc` console script runs even when the venv is
# not activated (`.venv/bin/snakemake`); inside a per-rule conda env, `xtc` is `python -m xtc.cli` of that
# env. glue_dir 'hub' drops XTC_GLUE_DIR so that xtc reads the Hugging Face hub.
_prefix = ["set -euo pipefail; ",
           "export PYTHONPATH=%s${{PYTHONPATH:+:$PYTHONPATH}}; " % shlex.quote(workflow.basedir)]
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    _prefix.append('xtc() {{ python -m xtc.cli "$@"; }}; ')
else:
    _prefix.append("export PATH=%s:$PATH; " % shlex.quote(os.path.dirname(sys.executable)))
    _prefix.append('command -v xtc >/dev/null 2>&1 || xtc() {{ python -m xtc.cli "$@"; }}; ')
if study.resolve_glue_dir(config) is None:
    _prefix.append("unset XTC_GLUE_DIR; ")
shell.prefix("".join(_prefix))


def res(rule_name, key, default):
    """A rule's threads/resources from the config's `resources` section."""
    return config["resources"].get(rule_name, {}).get(key, default)


def figure_caption(name):
    """The report caption of a figure: one for every learning-curve figure, one per axis figure otherwise."""
    return "../report/learning_curve.rst" if name in LEARNING_CURVES else f"../report/{name}.rst"


def run_args():
    """The run's `xtc finetune`/`xtc compress` flags (shell-quoted), from the runs table."""
    return lookup(query="run_id == '{run}'", within=RUNS_TABLE, cols="args")


def run_inputs(wildcards):
    """The run's teacher, the step-1 run it starts from, its augmented data (runs table `inputs`)."""
    return RUN_INPUTS[wildcards.run]


def run_folder(wildcards):
    return paths.run_dir(RUNS, wildcards.run)


def run_state(wildcards):
    return paths.state_dir(paths.run_dir(RUNS, wildcards.run))


# a run folder without resume state is stale (Snakemake removed its metrics.json to re-run it): start over
FRESH_RUN = "if [ ! -d {params.state:q} ]; then rm -rf {params.out:q}; fi; "


def study_outputs(wildcards=None):
    """Every run's metrics.json and every quantized student's size.json: what the study is made of. Rule
    `all` asks for them too, so a run lost after the aggregation (a cancelled job, a deleted folder) is
    trained again. With allow_incomplete, only finished runs (and their exports) count: the aggregation then
    marks the others as missing instead of training them."""
    run_ids, keys = list(RUNS_TABLE["run_id"]), QUANTIZED
    if ALLOW_INCOMPLETE:
        run_ids = [rid for rid in run_ids if os.path.exists(paths.metrics_file(RUNS, rid))]
        finished = set(run_ids)
        keys = [key for key in keys if paths.student_run_id(key) in finished]
    return [paths.metrics_file(RUNS, rid) for rid in run_ids] + [paths.size_file(RUNS, key) for key in keys]
