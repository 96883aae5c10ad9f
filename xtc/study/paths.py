"""Run folder names and the files below the runs root, shared with the Snakefile.

A teacher's folder is `teacher/task~T`, a student's `student/<student_key>`: every setting, in STUDENT_COLS
order (the order Snakemake's Paramspace turns into wildcards). `run_relpath` and `parse_run_relpath` convert
both ways; `run_key` (the part after `teacher/` or `student/`) also names a run's export, log and benchmark
files.
"""
from __future__ import annotations

STUDENT_COLS = ("task", "depth", "wbits", "abits", "kd", "epochs", "lr", "da", "init", "seed")


def fmt_value(col: str, v) -> str:
    """How a setting is written in a folder name: integers plainly, floats with %g (5e-05, 0.5, 3)."""
    if col in ("lr", "epochs"):
        return f"{float(v):g}"
    if col in ("depth", "wbits", "abits", "seed"):
        return str(int(v))
    return str(v)


def parse_value(col: str, s: str):
    if col in ("lr", "epochs"):
        return float(s)
    if col in ("depth", "wbits", "abits", "seed"):
        return int(s)
    return s


def student_key(row) -> str:
    """'task~mrpc/depth~6/.../seed~1': the Paramspace instance pattern of a student."""
    return "/".join(f"{c}~{fmt_value(c, row[c])}" for c in STUDENT_COLS)


def run_relpath(row) -> str:
    """Run folder relative to the runs root: 'teacher/task~T' or 'student/<student_key>'."""
    if row.get("kind", "student") == "teacher":
        return f"teacher/task~{row['task']}"
    return "student/" + student_key(row)


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
    expected = ("task",) if kind == "teacher" else STUDENT_COLS
    if kind not in ("teacher", "student") or tuple(k for k in out if k != "kind") != expected:
        raise ValueError(f"{path!r} is not a run folder name: expected {kind}/" + "/".join(f"{c}~..." for c in expected))
    return out


def config_key(run_id: str) -> str:
    """A run's setting without the seed: the unit averaged over seeds."""
    return run_id.rsplit("/seed~", 1)[0] if "/seed~" in run_id else run_id


def teacher_dir(runs_dir: str, task: str) -> str:
    return f"{runs_dir}/teacher/task~{task}"


def augment_file(runs_dir: str, task: str) -> str:
    return f"{runs_dir}/augment/task~{task}/train.jsonl"


def export_file(runs_dir: str, key: str) -> str:
    return f"{runs_dir}/export/{key}/model.xtc"


def size_file(runs_dir: str, key: str) -> str:
    return f"{runs_dir}/export/{key}/size.json"


def benchmark_file(runs_dir: str, rule: str, key: str) -> str:
    return f"{runs_dir}/benchmarks/{rule}/{key}.tsv"


def log_file(runs_dir: str, rule: str, key: str) -> str:
    return f"{runs_dir}/logs/{rule}/{key}.log"


def run_key(row) -> str:
    """The part of a run's path after 'teacher/' or 'student/' (names its log and benchmark files)."""
    return row["run_id"].split("/", 1)[1]
