"""Every path of the study, spelled once: run folder names and the files below the runs root.

A run's id is its folder relative to the runs root: `teacher/task~T` for a teacher, `student/<student_key>`
for a student, where the key names every setting in SETTING_COLS order
(`task~mrpc/depth~6/wbits~1/abits~8/kd~one-stage/epochs~3/lr~5e-05/da~off/init~teacher/seed~1`). `examples`
(the student's training examples) is named only where a run sets it apart from the profile's
data.max_train_samples (`.../da~off/examples~4096/init~teacher/...`), so a profile that never varies it keeps
the folder names above.
`run_relpath` and `parse_run_relpath` convert both ways; the run id also names the run's log and benchmark
files, and a student's key names its export. The Snakemake rules build their patterns from the same
functions (with wildcard names in place of values) and match them with the regexes below.
Stdlib only: the Snakefile imports this at parse time.
"""
from __future__ import annotations

import os

# the settings that identify a run, in folder-name order (the grid's rows carry them as columns)
SETTING_COLS = ("task", "depth", "wbits", "abits", "kd", "epochs", "lr", "da", "examples", "init", "seed")
# settings left out of the folder name when None (the profile's default)
OPTIONAL_COLS = ("examples",)
from xtc.files import METRICS_FILE, STATE_DIR  # noqa: E402,F401  (torch-free; re-exported for the rules)

TEACHER, STUDENT = "teacher", "student"
# regexes of a run id, for Snakemake's wildcard_constraints
TEACHER_RUN_RE = rf"{TEACHER}/task~[a-z0-9]+"
STUDENT_KEY_RE = "".join((rf"(?:/{c}~[^/]+)?" if c in OPTIONAL_COLS else rf"/{c}~[^/]+")
                         for c in SETTING_COLS).lstrip("/")
STUDENT_RUN_RE = rf"{STUDENT}/{STUDENT_KEY_RE}"

_INT_COLS = ("depth", "wbits", "abits", "seed")
_FLOAT_COLS = ("lr", "epochs")


def fmt_value(col: str, v) -> str:
    """How a setting is written in a folder name and on the command line: integers plainly, floats with %g
    (5e-05, 0.5, 3); training examples as a count or 'all' (the whole training set)."""
    if col == "examples":
        return "all" if v == "all" else str(int(v))
    if col in _FLOAT_COLS:
        return f"{float(v):g}"
    if col in _INT_COLS:
        return str(int(v))
    return str(v)


def parse_value(col: str, s: str):
    if col == "examples":
        return s if s == "all" else int(s)
    if col in _FLOAT_COLS:
        return float(s)
    if col in _INT_COLS:
        return int(s)
    return s


def teacher_key(task: str) -> str:
    return f"task~{task}"


def student_key(row) -> str:
    """'task~mrpc/depth~6/.../seed~1': a student's settings as a folder path."""
    return "/".join(f"{c}~{fmt_value(c, row[c])}" for c in SETTING_COLS
                    if not (c in OPTIONAL_COLS and row.get(c) is None))


def teacher_run_id(task: str) -> str:
    return f"{TEACHER}/{teacher_key(task)}"


def student_run_id(key: str) -> str:
    return f"{STUDENT}/{key}"


def run_relpath(row) -> str:
    """A run's id (its folder relative to the runs root): 'teacher/task~T' or 'student/<student_key>'."""
    if row.get("kind", STUDENT) == TEACHER:
        return teacher_run_id(row["task"])
    return student_run_id(student_key(row))


def parse_run_relpath(path: str) -> dict:
    """Inverse of run_relpath: settings (typed) plus kind."""
    parts = path.strip("/").split("/")
    kind, fields = parts[0], parts[1:]
    out = {"kind": kind}
    for f in fields:
        if "~" not in f:
            raise ValueError(f"{path!r} is not a run folder name: {f!r} has no '~'")
        k, v = f.split("~", 1)
        out[k] = parse_value(k, v)
    expected = ("task",) if kind == TEACHER else tuple(c for c in SETTING_COLS
                                                       if c not in OPTIONAL_COLS or c in out)
    if kind not in (TEACHER, STUDENT) or tuple(k for k in out if k != "kind") != expected:
        raise ValueError(f"{path!r} is not a run folder name: expected {kind}/" + "/".join(f"{c}~..." for c in expected))
    if kind == STUDENT:
        out = {"kind": kind, **{c: out.get(c) for c in SETTING_COLS}}  # an optional setting left out is None
    return out


def run_key(row) -> str:
    """The part of a run's id after 'teacher/' or 'student/' (names a student's export)."""
    return row["run_id"].split("/", 1)[1]


def config_key(run_id: str) -> str:
    """A run's setting without the seed: the unit averaged over seeds."""
    return run_id.rsplit("/seed~", 1)[0] if "/seed~" in run_id else run_id


def run_dir(runs_dir: str, run_id: str) -> str:
    return f"{runs_dir}/{run_id}"


def metrics_file(runs_dir: str, run_id: str) -> str:
    return f"{run_dir(runs_dir, run_id)}/{METRICS_FILE}"


def state_dir(run_folder: str) -> str:
    return os.path.join(run_folder, STATE_DIR)


def teacher_dir(runs_dir: str, task: str) -> str:
    return run_dir(runs_dir, teacher_run_id(task))


def augment_file(runs_dir: str, task: str) -> str:
    return f"{runs_dir}/augment/{teacher_key(task)}/train.jsonl"


def export_file(runs_dir: str, key: str) -> str:
    return f"{runs_dir}/export/{key}/model.xtc"


def size_file(runs_dir: str, key: str) -> str:
    return f"{runs_dir}/export/{key}/size.json"


def augment_job(task: str) -> str:
    """The augmentation job of a task, as named in logs and benchmarks ('augment/task~T')."""
    return f"augment/{teacher_key(task)}"


def export_job(key: str) -> str:
    """A student's export job, as named in logs and benchmarks ('export/<student_key>')."""
    return f"export/{key}"


def log_file(runs_dir: str, job: str) -> str:
    """A job's log: `job` is a run id, augment_job(task) or export_job(key)."""
    return f"{runs_dir}/logs/{job}.log"


def benchmark_file(runs_dir: str, job: str) -> str:
    """A job's Snakemake benchmark TSV (wall time, peak memory); `job` as in log_file."""
    return f"{runs_dir}/benchmarks/{job}.tsv"
