"""The fault table of issue 28: faults of the machine and of the user's own workflow, each made for real (two
writers, a full disk on a small tmpfs, kill -9, a read-only bind mount, truncated files, a damaged reference CSV),
then the same command run again. Writes bench/results/faults.md: per fault the command, what happened (exit status
and the one line), whether everything the user had before is intact, and whether the retry completed.

    sudo .venv/bin/python bench/fault_table.py      # root: it mounts tmpfs and bind mounts (Linux); ~5 min

The xtc rows use a tiny random BERT and synthetic GLUE files (tests/conftest.py, tests/glue_fixtures.py); the
Snakemake rows run a one-task, two-student study of the packaged default teacher on the real GLUE folder
($XTC_GLUE_DIR, else ../shared/glue), with the `make run` workflow profile.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
XTC, SNAKEMAKE = os.path.join(BIN, "xtc"), os.path.join(BIN, "snakemake")
FILLER = "filler.bin"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PATH": f"{BIN}:{os.environ['PATH']}",
       "XTC_GLUE_DIR": os.environ.get("XTC_GLUE_DIR") or os.path.join(os.path.dirname(ROOT), "shared", "glue")}
ROWS: list[dict] = []


# ------------------------------------------------------------------------------------------------ helpers
def run(cmd: list[str], cwd: str | None = None, timeout: int = 900) -> tuple[int, str]:
    """Exit status and the error line of a command (xtc prints one; for Snakemake the line naming the error)."""
    p = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    return p.returncode, error_line(p.stderr)


def error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for key in ("Error: Directory cannot be locked", "xtc ", "Error", "error"):
        hits = [ln for ln in lines if ln.startswith(key) or (key in ("Error", "error") and key in ln)]
        if hits:
            return hits[0] if key.startswith("Error: Dir") else hits[-1]
    return lines[-1] if lines else ""


def snapshot(folder: str, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """relative path -> sha256 of every file under `folder` (the tmpfs filler and the subfolders `skip` left out)."""
    out = {}
    for d, subs, files in os.walk(folder):
        subs[:] = [s for s in subs if os.path.relpath(os.path.join(d, s), folder) not in skip]
        for f in files:
            p = os.path.join(d, f)
            if f != FILLER:
                out[os.path.relpath(p, folder)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def intact(before: dict, after: dict) -> str:
    if before == after:
        return "yes (every file byte-identical)" if before else "yes (nothing was there, nothing left)"
    new = sorted(set(after) - set(before))
    gone = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    return "NO: " + "; ".join(f"{what} {', '.join(v[:3])}" for what, v in (("left behind", new), ("lost", gone),
                                                                          ("changed", changed)) if v)


def row(fault: str, command: str, rc: int, line: str, kept: str, retry: str, note: str = "") -> None:
    ROWS.append({"fault": fault, "command": command, "exit": rc, "line": line, "intact": kept, "retry": retry,
                 "note": note})
    print(f"[{len(ROWS)}] {fault}: exit {rc}: {line[:150]} | intact: {kept} | retry: {retry}", flush=True)


def retry_ok(cmd: list[str], check=None, cwd=None) -> str:
    rc, line = run(cmd, cwd=cwd)
    if rc != 0:
        return f"FAILED (exit {rc}: {line})"
    return "completed" + (f" ({check()})" if check else "")


@contextmanager
def tmpfs(size: str):
    d = tempfile.mkdtemp(prefix="xtc-fault-fs-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", d], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", d], check=False)
        os.rmdir(d)


def fill(fs: str, leave: int = 0) -> None:
    """Fill the filesystem of `fs` until `leave` bytes are free."""
    path = os.path.join(fs, FILLER)
    with open(path, "ab", buffering=0) as f:
        while True:
            free = shutil.disk_usage(fs).free
            if free <= leave:
                break
            try:
                f.write(b"\0" * min(free - leave, 1 << 16))
            except OSError:
                break


def free_space(fs: str) -> None:
    os.unlink(os.path.join(fs, FILLER))


@contextmanager
def read_only(folder: str):
    """`folder` as a read-only bind mount (root ignores permission bits, not a read-only mount)."""
    subprocess.run(["mount", "--bind", folder, folder], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", folder, folder], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", folder], check=False)


def wait_for(cond, timeout: float = 300, every: float = 0.02) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return True
        time.sleep(every)
    return False


def load_metrics(folder: str) -> dict:
    with open(os.path.join(folder, "metrics.json")) as f:
        return json.load(f)


def tests_helper(name: str):
    """A helper module of tests/ (the tiny model, the synthetic GLUE files), loaded from its file: tests/ is no
    package, and pytest, not the installed xtc, puts it on the import path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tests", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def show(cmd: list[str], work: str) -> str:
    return " ".join(cmd).replace(work + "/", "").replace(BIN + "/", "")


# ------------------------------------------------------------------------------------------------ xtc rows
def xtc_rows(work: str) -> None:
    make_tiny_model_dir = tests_helper("conftest").make_tiny_model_dir
    write_glue = tests_helper("glue_fixtures").write_glue
    glue = write_glue(os.path.join(work, "glue"))
    tiny = make_tiny_model_dir(os.path.join(work, "tiny"))
    common = ["--task", "sst2", "--glue-dir", glue, "--batch-size", "16", "--quiet"]

    def finetune(out, *extra):
        return [XTC, "finetune", "--model", tiny, "--out", out, *common, "--epochs", "1", *extra]

    teacher = os.path.join(work, "teacher")
    assert run(finetune(teacher, "--lr", "1e-3"))[0] == 0
    student = os.path.join(work, "student")
    compress = [XTC, "compress", "--teacher", teacher, "--out", student, *common, "--epochs", "1", "--lr", "1e-3",
                "--wbits", "1", "--abits", "8", "--layers", "2"]
    assert run(compress)[0] == 0
    packed = os.path.join(work, "student.xtc")
    assert run([XTC, "export", "--model", student, "--out", packed])[0] == 0

    # ---- two writers on one run folder
    out = os.path.join(work, "two")
    first_cmd = finetune(out, "--epochs", "100")
    first = subprocess.Popen(first_cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: os.path.exists(os.path.join(work, ".two.xtc-lock")))
    rc, line = run(first_cmd)
    first_rc = first.wait()
    ok = first_rc == 0 and load_metrics(out)["steps"] == 400
    row("two writers on one run folder (the same `xtc finetune` started twice)", show(first_cmd, work), rc, line,
        f"{'yes' if ok else 'NO'}: the first run finished undisturbed (exit {first_rc}, 400 steps)",
        "n/a: the first writer finished; the same command again says the folder holds a finished run")

    # ---- kill -9 of a training job, then the same command
    ref, killed = os.path.join(work, "ref"), os.path.join(work, "killed")
    assert run(finetune(ref, "--epochs", "40", "--eval-every", "5"))[0] == 0
    cmd = finetune(killed, "--epochs", "40", "--eval-every", "5")
    p = subprocess.Popen(cmd, env=ENV, stderr=subprocess.DEVNULL)
    state = os.path.join(killed, ".xtc_state", "state.json")
    wait_for(lambda: os.path.exists(state))
    time.sleep(0.5)
    p.send_signal(signal.SIGKILL)
    p.wait()
    steps_at_kill = json.load(open(state))["state"]["global_step"]
    state_bytes = sum(os.path.getsize(os.path.join(killed, ".xtc_state", f))
                      for f in os.listdir(os.path.join(killed, ".xtc_state")))

    def same_as_uninterrupted():
        a, b = load_metrics(killed), load_metrics(ref)
        same = a["metrics"] == b["metrics"] and [h["metrics"] for h in a["history"]] == \
            [h["metrics"] for h in b["history"]]
        return f"resumed at step {steps_at_kill} of 160; dev metrics and history " + \
            ("identical to an uninterrupted run" if same else "DIFFER from an uninterrupted run")
    row("`kill -9` of a training job", show(cmd, work), -9, "(killed)",
        f"yes: the checkpoint of step {steps_at_kill} ({state_bytes / 2**20:.1f} MB)",
        retry_ok(cmd, same_as_uninterrupted))

    # ---- a full disk at each write site of the xtc commands
    with tmpfs("4m") as fs:
        out = os.path.join(fs, "run")
        cmd = finetune(out)
        fill(fs)
        before = snapshot(fs)
        rc, line = run(cmd)
        kept = intact(before, snapshot(fs))
        free_space(fs)
        row("full disk at the first checkpoint (`finetune`)", show(cmd, fs), rc, line, kept,
            retry_ok(cmd, lambda: f"{load_metrics(out)['steps']} steps"))
    with tmpfs("8m") as fs:  # the checkpoint fits, the final model does not
        out = os.path.join(fs, "run")
        cmd = finetune(out)
        model_bytes = os.path.getsize(os.path.join(ref, "model.safetensors"))
        fill(fs, leave=int(state_bytes * 1.1) + model_bytes // 2)
        rc, line = run(cmd)
        left = sorted(os.listdir(out)) if os.path.isdir(out) else []
        free_space(fs)
        row("full disk at the final save (`finetune`; its checkpoint fitted)", show(cmd, fs), rc, line,
            f"{'yes' if left == ['.xtc_state'] else 'NO'}: the run folder holds only its last checkpoint {left} "
            f"(no partial model files)",
            retry_ok(cmd, lambda: f"only saved: {load_metrics(out)['steps']} steps, no step trained again"),
            "the folder did not exist before; the trained run is kept as a checkpoint instead of being thrown away")
    with tmpfs("4m") as fs:  # --overwrite of a finished run on a full disk: the finished run stays
        out = os.path.join(fs, "run")
        shutil.copytree(ref, out)
        cmd = finetune(out, "--overwrite")
        fill(fs)
        before = snapshot(fs)
        rc, line = run(cmd)
        kept = intact(before, snapshot(fs))
        free_space(fs)
        row("full disk at the first checkpoint of `--overwrite` over a finished run", show(cmd, fs), rc, line,
            kept, retry_ok(cmd, lambda: f"replaced: {load_metrics(out)['steps']} steps"))
    with tmpfs("4m") as fs:
        out = os.path.join(fs, "student.xtc")
        cmd = [XTC, "export", "--model", student, "--out", out]
        fill(fs)
        before = snapshot(fs)
        rc, line = run(cmd)
        kept = intact(before, snapshot(fs))
        free_space(fs)
        row("full disk at export", show(cmd, work).replace(fs + "/", ""), rc, line, kept,
            retry_ok(cmd, lambda: f"{os.path.getsize(out)} bytes, loads"))
    with tmpfs("4m") as fs:
        out = os.path.join(fs, "aug.jsonl")
        cmd = [XTC, "augment", "--task", "sst2", "--teacher", teacher, "--out", out, "--glue-dir", glue, "--quiet"]
        fill(fs)
        before = snapshot(fs)
        rc, line = run(cmd)
        kept = intact(before, snapshot(fs))
        free_space(fs)
        row("full disk at augment", show(cmd, work).replace(fs + "/", ""), rc, line, kept,
            retry_ok(cmd, lambda: f"{len(open(out).read().splitlines())} lines"))

    # ---- a read-only output folder
    ro = os.path.join(work, "ro")
    os.makedirs(ro)
    with read_only(ro):
        for name, cmd in (("finetune", finetune(os.path.join(ro, "run"))),
                          ("export", [XTC, "export", "--model", student, "--out", os.path.join(ro, "s.xtc")]),
                          ("augment", [XTC, "augment", "--task", "sst2", "--teacher", teacher, "--out",
                                       os.path.join(ro, "aug.jsonl"), "--glue-dir", glue, "--quiet"])):
            rc, line = run(cmd)
            ROWS.append(None)  # placeholder, filled after the remount
            ROWS[-1] = {"fault": f"read-only output folder (`{name}`)", "command": show(cmd, work), "exit": rc,
                        "line": line, "intact": intact({}, snapshot(ro)), "retry": cmd, "note": ""}
    for r in ROWS:
        if r and isinstance(r["retry"], list):
            r["retry"] = retry_ok(r["retry"]) + " (after the folder was made writable)"
            print(f"[{ROWS.index(r) + 1}] {r['fault']}: exit {r['exit']}: {r['line']} | {r['retry']}", flush=True)

    # ---- truncated files
    def truncate(path: str) -> None:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)

    bad = os.path.join(work, "bad.xtc")
    shutil.copy(packed, bad)
    truncate(bad)
    cmd = [XTC, "evaluate", "--model", bad, "--task", "sst2", "--glue-dir", glue]
    rc, line = run(cmd)
    row("truncated `.xtc` file", show(cmd, work), rc, line, "the damaged file itself only (nothing else read or "
        "written)", retry_ok([XTC, "export", "--model", student, "--out", bad, "--overwrite"]) +
        " (`xtc export --overwrite` rewrites it from the student folder)")

    dam = os.path.join(work, "student-damaged")
    shutil.copytree(student, dam)
    truncate(os.path.join(dam, "model.safetensors"))
    for cmd in ([XTC, "evaluate", "--model", dam, "--task", "sst2", "--glue-dir", glue],
                [XTC, "export", "--model", dam, "--out", os.path.join(work, "dam.xtc")]):
        rc, line = run(cmd)
        row(f"truncated `model.safetensors` of a finished student (`{cmd[1]}`)", show(cmd, work), rc, line,
            "the damaged file itself only; nothing written", "by training again: `xtc compress ... --overwrite` "
            "(the weights are lost with the file; metrics.json keeps the record)", "")
    ROWS[-1]["retry"] = retry_ok(compress[:5] + [dam] + compress[6:] + ["--overwrite"],
                                 lambda: "the student trained again") + " with `xtc compress ... --overwrite`"

    tdam = os.path.join(work, "teacher-damaged")
    shutil.copytree(teacher, tdam)
    truncate(os.path.join(tdam, "model.safetensors"))
    cmd = compress[:3] + [tdam, "--out", os.path.join(work, "from-damaged")] + compress[6:]
    rc, line = run(cmd)
    row("truncated teacher (`model.safetensors` of the `--teacher` folder)", show(cmd, work), rc, line,
        intact({}, snapshot(os.path.join(work, "from-damaged"))) if os.path.exists(
            os.path.join(work, "from-damaged")) else "yes: no student folder created",
        retry_ok(finetune(tdam, "--lr", "1e-3", "--overwrite")) + " (the teacher fine-tuned again), then " +
        retry_ok(cmd), "the teacher-output cache itself is never on disk (built in memory per run, "
        "xtc/teacher_cache.py): nothing to truncate")

    for what, victim in (("tensors file", "tensors"), ("state.json", "state.json")):
        out = os.path.join(work, f"halfway-{victim}")
        cmd = finetune(out, "--epochs", "40", "--eval-every", "5")
        p = subprocess.Popen(cmd, env=ENV, stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(os.path.join(out, ".xtc_state", "state.json")))
        p.send_signal(signal.SIGKILL)
        p.wait()
        sd = os.path.join(out, ".xtc_state")
        target = [f for f in os.listdir(sd) if f.startswith(victim)][0]
        truncate(os.path.join(sd, target))
        before = snapshot(out)
        rc, line = run(cmd)
        row(f"truncated resume state ({what})", show(cmd, work), rc, line, intact(before, snapshot(out)) +
            " (the damaged state is not touched)", retry_ok(cmd + ["--overwrite"]) + " with `--overwrite`",
            "the unfinished run's progress is lost with its damaged state (its checksum fails); it starts over")


# ------------------------------------------------------------------------------------------------ study rows
def study_config(work: str) -> str:
    """The smoke profile cut to one task and one axis (two students, one figure): every rule runs, in about a minute."""
    text = open(os.path.join(ROOT, "workflow", "config", "smoke.yaml")).read()
    text = re.sub(r"(?m)^tasks: \[.*$", "tasks: [rte]", text).replace("profile: smoke", "profile: faults")
    text = re.sub(r"(?m)^task_specs:\n(  .*\n)+", "task_specs: {}\n", text)  # GLUE's RTE only
    head, rest = text.split("axes:", 1)
    text = head + ("axes:\n  - name: kd\n    title: \"KD (fault table)\"\n    vary: {kd: [two-stage, one-stage]}\n\n"
                   "augment:" + rest.split("augment:", 1)[1])
    text = text.replace("scratch/smoke/", "study/")
    path = os.path.join(work, "study.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def snakemake_cmd(config: str) -> list[str]:
    return [SNAKEMAKE, "--snakefile", os.path.join(ROOT, "Snakefile"), "--cores", "2", "--workflow-profile",
            os.path.join(ROOT, "workflow", "profiles", "default"), "--configfile", config]


def pgrep(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


JOB_RECORDS = ("logs", "benchmarks")  # Snakemake's per-job log and benchmark files: rewritten by every rerun job


def study_rows(work: str) -> None:
    config = study_config(work)
    sm = snakemake_cmd(config)
    shown = "snakemake --cores 2 --workflow-profile workflow/profiles/default --configfile study.yaml"
    rc, line = run(sm, cwd=work)
    assert rc == 0, line
    runs, results, figures = (os.path.join(work, "study", d) for d in ("runs", "results", "figures"))
    done = snapshot(runs, JOB_RECORDS)

    def complete():
        plan = subprocess.run(sm + ["-n"], cwd=work, env=ENV, capture_output=True, text=True).stdout
        return "study complete, a dry run plans nothing" if "Nothing to be done" in plan else "NOT complete"

    # ---- two snakemake instances on one study
    os.unlink(os.path.join(results, "runs.csv"))  # work for the first instance: aggregation and the report
    first = subprocess.Popen(sm, cwd=work, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: os.listdir(os.path.join(work, ".snakemake", "locks")) if os.path.isdir(
        os.path.join(work, ".snakemake", "locks")) else False)
    rc, line = run(sm, cwd=work)
    first_rc = first.wait()
    row("two `snakemake` instances on one study (Snakemake's own lock)", shown, rc, line,
        f"{'yes' if first_rc == 0 and snapshot(runs, JOB_RECORDS) == done else 'NO'}: the first instance finished "
        f"(exit {first_rc}), runs/ byte-identical (job logs aside)",
        retry_ok(sm, complete, cwd=work) + " once the first finished",
        "Snakemake's message is its own (several lines; the first is shown)")

    # ---- kill -9 of snakemake during aggregation and during figures, then `make run` again
    for stage, victim, pattern in (("aggregation", os.path.join(results, "runs.csv"), "xtc study aggregate"),
                                   ("figures", os.path.join(figures, sorted(f for f in os.listdir(figures)
                                                                            if f.endswith(".png")
                                                                            and not f.startswith("flip_share"))[0]),
                                    "xtc study figures")):
        os.unlink(victim)
        p = subprocess.Popen(sm, cwd=work, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        assert wait_for(lambda: pgrep(pattern)), f"`{pattern}` never ran: nothing to kill during {stage}"
        os.killpg(p.pid, signal.SIGKILL)  # snakemake and its job, as a crash or an OOM kill of the session would
        p.wait()
        locks = os.path.join(work, ".snakemake", "locks")
        stale = sorted(os.listdir(locks)) if os.path.isdir(locks) else []
        rc, line = run(sm, cwd=work)
        retry = ("completed" + f" ({complete()})") if rc == 0 else f"FAILED (exit {rc}: {line})"
        row(f"`kill -9` of `snakemake` (and its job) during {stage}, then `make run` again", shown, -9,
            f"(killed; Snakemake's lock files {', '.join(stale)} left behind)",
            f"{'yes' if snapshot(runs, JOB_RECORDS) == done else 'NO'}: runs/ byte-identical (job logs aside); "
            f"the {stage} outputs were removed by Snakemake when the job started (it always does) and are rewritten",
            retry + "; the stale lock is removed by the workflow (no `--unlock` needed)")

    # ---- a full disk at aggregation and at figures: the previous outputs stay
    for stage, cmd_of in (("aggregate", lambda out: [XTC, "study", "aggregate", "--config", config, "--runs-dir",
                                                     runs, "--out-dir", out]),
                          ("figures", lambda out: [XTC, "study", "figures", "--config", config, "--results-dir",
                                                   results, "--out-dir", out])):
        with tmpfs("8m") as fs:
            out = os.path.join(fs, stage)
            shutil.copytree(results if stage == "aggregate" else figures, out)
            cmd = cmd_of(out)
            assert run(cmd)[0] == 0
            fill(fs)
            before = snapshot(fs)
            rc, line = run(cmd)
            kept = intact(before, snapshot(fs))
            free_space(fs)
            row(f"full disk at {stage} (`xtc study {stage}`, previous outputs in the folder)",
                show(cmd, work).replace(fs + "/", ""), rc, line, kept, retry_ok(cmd))
    ro = os.path.join(work, "ro-study")
    os.makedirs(ro)
    cmd = [XTC, "study", "aggregate", "--config", config, "--runs-dir", runs, "--out-dir",
           os.path.join(ro, "results")]
    with read_only(ro):
        rc, line = run(cmd)
        kept = intact({}, snapshot(ro))
    row("read-only output folder (`xtc study aggregate`)", show(cmd, work), rc, line, kept,
        retry_ok(cmd) + " (after the folder was made writable)")

    # ---- a committed reference CSV with a missing column
    import pandas as pd

    ref = os.path.join(work, "reference")
    os.makedirs(ref)
    pd.read_csv(os.path.join(ROOT, "results", "quick", "summary.csv")).drop(columns=["std"]).to_csv(
        os.path.join(ref, "summary.csv"), index=False)
    out_csv, out_md = os.path.join(work, "repro.csv"), os.path.join(work, "repro.md")
    cmd = [XTC, "study", "reproduce", "--reference-dir", ref, "--results-dir", results, "--out-csv", out_csv,
           "--out-md", out_md]
    before = snapshot(ref)
    rc, line = run(cmd)
    kept = intact(before, snapshot(ref)) if not os.path.exists(out_csv) else "NO: wrote a table"
    shutil.copy(os.path.join(ROOT, "results", "quick", "summary.csv"), os.path.join(ref, "summary.csv"))
    row("committed reference CSV with a missing column (`std`)", show(cmd, work), rc, line, kept,
        retry_ok(cmd) + " (after `git checkout results/`)")


# ------------------------------------------------------------------------------------------------ table
def write_table(seconds: float) -> str:
    cell = lambda t: str(t).replace("|", "\\|").replace("\n", " / ")  # noqa: E731
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    ok = sum(r["intact"].startswith("yes") and r["retry"].startswith(("completed", "n/a")) for r in ROWS)
    lines = ["# Faults (issue 28)", "",
             f"`sudo .venv/bin/python bench/fault_table.py` ({len(ROWS)} faults, {seconds / 60:.1f} min on "
             f"{cpu}). Each fault is made for real: two processes, a full tmpfs, `kill -9`, a read-only bind mount, "
             "truncated files. \"intact\" compares every file the user had before (sha256) with what is there "
             "after; \"retry\" runs the same command again after the fault is gone (space freed, folder writable, "
             "file restored).", "",
             f"Rows with everything intact and a completed retry: {ok} of {len(ROWS)}.", "",
             "| fault | command | exit | message (one line) | everything before intact? | retry | note |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {cell(r['fault'])} | `{cell(r['command'])}` | {r['exit']} | {cell(r['line'])} | "
              f"{cell(r['intact'])} | {cell(r['retry'])} | {cell(r['note'])} |" for r in ROWS]
    out = os.path.join(ROOT, "bench", "results", "faults.md")
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return out


def main() -> int:
    if os.geteuid() != 0:
        print("bench/fault_table.py: needs root (it mounts tmpfs and read-only bind mounts)", file=sys.stderr)
        return 2
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="xtc-faults-") as work:
        xtc_rows(work)
        if "--xtc-only" not in sys.argv:
            study_rows(work)
    out = write_table(time.time() - t0)
    print(f"{out}: {len(ROWS)} faults")
    return 0


if __name__ == "__main__":
    sys.exit(main())
