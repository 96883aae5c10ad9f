"""Helpers of .ci/slurm-checks. They read only what Snakemake, Slurm and xtc print or write (Snakemake's job
blocks and "submitted with SLURM jobid" lines, sacct/squeue, the run folders), never the rules themselves.

    python .ci/slurm_checks.py jobs LOG [--allow-cancelled]      sacct table; requests == the rules' resources
    python .ci/slurm_checks.py same-outputs LOCAL_DIR SLURM_DIR  same files, CSV columns and runs
    python .ci/slurm_checks.py cancel RUNS_DIR LOG OUT.json      scancel one training job after a checkpoint
    python .ci/slurm_checks.py resumed OUT.json LOG REFERENCE_RUNS_DIR   resumed, metrics == uninterrupted
    python .ci/slurm_checks.py mini-config SMOKE_YAML OUT_YAML PATH_PREFIX
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time

import yaml

SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")
FAILED = "SLURM-job '{}' failed"
STATE_FILE = os.path.join(".xtc_state", "state.json")  # xtc/checkpoint.py: written last, atomically
# metrics.json keys that depend on what was computed, not on when or where (no timings, no paths)
DETERMINISTIC = ("metrics", "best_step", "history", "final_loss_terms", "loss_terms", "steps", "train_tokens",
                 "size")


def fail(msg: str) -> None:
    print(f"slurm-checks: {msg}", file=sys.stderr)
    sys.exit(1)


def job_blocks(log_text: str) -> dict[str, dict]:
    """Snakemake's job blocks ("rule NAME:" / "localrule NAME:" then indented "key: value" lines) by jobid."""
    blocks, current = {}, None
    for line in log_text.splitlines():
        m = re.match(r"^(local)?rule (\w+):$", line)
        if m:
            current = {"rule": m.group(2), "local": bool(m.group(1))}
            continue
        m = re.match(r"^    (\w+): (.*)$", line) if current is not None else None
        if m:
            current[m.group(1)] = m.group(2)
            if m.group(1) == "jobid":
                blocks[m.group(2)] = current
        elif current is not None and not line.startswith("    "):
            current = None
    for b in blocks.values():
        b["res"] = dict(kv.split("=", 1) for kv in b.get("resources", "").split(", ") if "=" in kv)
    return blocks


def submissions(log_text: str) -> list[tuple[str, str]]:
    """(Snakemake jobid, Slurm jobid) for every sbatch, retries included, in order."""
    return SUBMITTED.findall(log_text)


def sacct(job_ids: list[str]) -> dict[str, dict]:
    fields = ["JobIDRaw", "State", "Elapsed", "ReqCPUS", "ReqMem", "Timelimit", "ExitCode"]
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-j", ",".join(job_ids), "-o", ",".join(fields)],
                         capture_output=True, text=True, check=True).stdout
    return {row[0]: dict(zip(fields, row)) for row in (ln.split("|") for ln in out.splitlines()) if row[0]}


def minutes(limit: str) -> float:
    """Slurm's [D-]HH:MM:SS as minutes."""
    days, _, hms = limit.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return int(days or 0) * 1440 + h * 60 + m + s / 60


def mem_mb(req: str) -> float:
    m = re.fullmatch(r"([\d.]+)([KMGT]?)n?c?", req)
    if not m:
        raise ValueError(f"unexpected ReqMem {req!r}")
    return float(m.group(1)) * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 ** 2, "": 1}[m.group(2)]


def cmd_jobs(args) -> None:
    text = open(args.log).read()
    blocks, subs = job_blocks(text), submissions(text)
    if not subs:
        fail(f"{args.log}: no job was submitted to Slurm")
    local_submitted = [b["rule"] for sm, _ in subs if (b := blocks.get(sm)) and b["local"]]
    if local_submitted:
        fail(f"local rules went to Slurm: {sorted(set(local_submitted))}")
    remote = {j for j, b in blocks.items() if not b["local"]}
    missing = remote - {sm for sm, _ in subs}
    if missing:
        fail(f"jobs never submitted to Slurm: {sorted(blocks[j]['rule'] for j in missing)}")
    for _ in range(30):  # slurmdbd may take a moment to record the last jobs
        acct = sacct([sl for _, sl in subs])
        if all(sl in acct for _, sl in subs):
            break
        time.sleep(2)
    problems, rows = [], []
    final = {sm: sl for sm, sl in subs}  # the last attempt of each job
    for sm, sl in subs:
        b, a = blocks[sm], acct.get(sl)
        if a is None:
            problems.append(f"Slurm job {sl} ({b['rule']}) missing from sacct")
            continue
        want_cpus = int(b["res"].get("cpus_per_task", b.get("threads", 1)))
        want_mem, want_min = float(b["res"]["mem_mb"]), float(b["res"]["runtime"])
        got = (int(a["ReqCPUS"]), mem_mb(a["ReqMem"]), minutes(a["Timelimit"]))
        if got != (want_cpus, want_mem, want_min):
            problems.append(f"Slurm job {sl} ({b['rule']}): requested cpus/mem_mb/minutes {got}, "
                            f"rule says {(want_cpus, want_mem, want_min)}")
        ok_states = {"COMPLETED"} | ({"CANCELLED"} if args.allow_cancelled and final[sm] != sl else set())
        state = a["State"].split()[0]
        if state not in ok_states:
            problems.append(f"Slurm job {sl} ({b['rule']}) ended {a['State']}")
        rows.append((sl, b["rule"], a["State"], a["Elapsed"], a["ReqCPUS"], a["ReqMem"], a["Timelimit"],
                     b["res"].get("cpus_per_task", "1"), b["res"]["mem_mb"], b["res"]["runtime"]))
    head = ("JobID", "rule", "State", "Elapsed", "ReqCPUS", "ReqMem", "Timelimit", "threads", "mem_mb", "runtime")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
    by_rule: dict[str, int] = {}
    for sm in final:
        by_rule[blocks[sm]["rule"]] = by_rule.get(blocks[sm]["rule"], 0) + 1
    local = sorted({b["rule"] for b in blocks.values() if b["local"]})
    print(f"{len(final)} rule instances as {len(subs)} sbatch jobs ({', '.join(f'{k} {v}' for k, v in by_rule.items())}); "
          f"local: {', '.join(local)}")
    if problems:
        fail("\n".join(problems))


def tree(root: str) -> set[str]:
    """Files a study produces, without logs, benchmarks, resume state and Snakemake's own files (and the HTML
    report that .ci/workflow-checks adds to the local run)."""
    skip = ("runs/logs/", "runs/benchmarks/")
    files = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in (".xtc_state", ".snakemake")]
        for f in filenames:
            rel = os.path.relpath(os.path.join(dirpath, f), root)
            if not rel.startswith(skip) and not rel.endswith((".log", ".out")) and rel != "report.html":
                files.add(rel)
    return files


def cmd_same_outputs(args) -> None:
    import pandas as pd

    a, b = tree(args.local), tree(args.slurm)
    if a != b:
        fail(f"different files: only local {sorted(a - b)[:10]}, only Slurm {sorted(b - a)[:10]}")
    problems, n_csv = [], 0
    for rel in sorted(f for f in a if f.endswith(".csv")):
        x, y = pd.read_csv(os.path.join(args.local, rel)), pd.read_csv(os.path.join(args.slurm, rel))
        n_csv += 1
        if list(x.columns) != list(y.columns) or len(x) != len(y):
            problems.append(f"{rel}: columns/rows {list(x.columns)}/{len(x)} locally, {list(y.columns)}/{len(y)} Slurm")
    paths = [os.path.join(d, "results", "runs.csv") for d in (args.local, args.slurm)]
    if not all(os.path.exists(p) for p in paths):
        fail(f"results/runs.csv missing: {[p for p in paths if not os.path.exists(p)]}")
    runs = [pd.read_csv(p) for p in paths]
    ids = [set(r["run_id"]) for r in runs]
    if ids[0] != ids[1]:
        problems.append(f"runs differ: only local {sorted(ids[0] - ids[1])}, only Slurm {sorted(ids[1] - ids[0])}")
    merged = runs[0].merge(runs[1], on=["run_id", "metric"], suffixes=("_local", "_slurm"))
    same_values = int((merged["value_local"] == merged["value_slurm"]).sum())
    if problems:
        fail("\n".join(problems))
    print(f"same outputs: {len(a)} files, {n_csv} CSVs with the same columns and rows, {len(ids[0])} runs; "
          f"{same_values}/{len(merged)} run metrics bit-identical to the local run")


def run_job_id(folder: str) -> str | None:
    """The Slurm job of the process training into `folder` (its --out), from /proc: no rule knowledge needed."""
    target = os.path.realpath(folder)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            if b"--out" not in argv:
                continue
            out = argv[argv.index(b"--out") + 1].decode()
            cwd = os.readlink(f"/proc/{pid}/cwd")
            if os.path.realpath(os.path.join(cwd, out)) != target:
                continue
            env = dict(kv.split(b"=", 1) for kv in open(f"/proc/{pid}/environ", "rb").read().split(b"\0") if b"=" in kv)
            if b"SLURM_JOB_ID" in env:
                return env[b"SLURM_JOB_ID"].decode()
        except (OSError, IndexError, ValueError):
            continue
    return None


def run_log(snakemake_log: str, folder: str) -> str | None:
    """The rule log of the job writing folder/metrics.json, from Snakemake's job block."""
    blocks = job_blocks(open(snakemake_log).read())
    metrics = os.path.join(folder, "metrics.json")
    logs = [b["log"].split(", ")[0] for b in blocks.values() if b.get("output", "").split(", ")[0] == metrics
            and "log" in b]
    return logs[-1] if logs else None


def eval_steps(log: str | None) -> list[int]:
    """The steps of the evaluations a training log reports ("[task stage] step N epoch ...")."""
    if not log or not os.path.exists(log):
        return []
    return [int(m) for m in re.findall(r"\] step (\d+) ", open(log).read())]


def cmd_cancel(args) -> None:
    """Wait for a training run with a checkpoint (.xtc_state/state.json) and no metrics.json yet, scancel its
    Slurm job, then time how long Snakemake takes to report it. Writes OUT.json."""
    t_start = time.time()
    deadline = t_start + args.timeout
    done = json.load(open(args.out)) if os.path.exists(args.out) else []
    cancelled = {d["slurm_jobid"] for d in done}
    while time.time() < deadline:
        for state in glob.glob(os.path.join(args.runs_dir, "**", STATE_FILE), recursive=True):
            folder = os.path.dirname(os.path.dirname(state))
            try:  # a checkpoint written by this run (not one left by an earlier run), training not finished
                if os.path.getmtime(state) < t_start or os.path.exists(os.path.join(folder, "metrics.json")):
                    continue
            except OSError:
                continue
            if args.kind and f"/{args.kind}/" not in f"/{os.path.relpath(folder, args.runs_dir)}/":
                continue
            job = run_job_id(folder)
            if job is None or job in cancelled:
                continue
            subprocess.run(["scancel", job], check=True)
            t_cancel = time.time()
            print(f"slurm-checks: scancel {job} (training into {folder}, checkpoint present)", flush=True)
            snapshot = os.path.join(os.path.dirname(args.out) or ".", f"attempt-{job}.log")
            rule_log = run_log(args.log, folder)
            if rule_log and os.path.exists(rule_log):  # the next attempt overwrites it
                with open(rule_log) as src, open(snapshot, "w") as dst:
                    dst.write(src.read())
            t_report = None
            while time.time() < t_cancel + args.report_timeout:
                if FAILED.format(job) in open(args.log).read():
                    t_report = time.time()
                    break
                time.sleep(0.5)
            entry = {"folder": folder, "slurm_jobid": job, "t_cancel": t_cancel, "log": snapshot,
                     "report_delay_s": None if t_report is None else round(t_report - t_cancel, 1)}
            print(f"slurm-checks: Snakemake reported job {job} failed after {entry['report_delay_s']} s", flush=True)
            json.dump(done + [entry], open(args.out, "w"), indent=1)
            return
        time.sleep(0.2)
    fail(f"no training job with a checkpoint to cancel within {args.timeout} s")


def cmd_resumed(args) -> None:
    """Each cancelled run: sacct says CANCELLED, Snakemake reported it within one status-check interval, the
    next attempt went on from the checkpoint (its first evaluation is the step after the cancelled attempt's
    last one, not step 1), and the final metrics equal those of the uninterrupted reference run bit for bit."""
    entries = json.load(open(args.cancelled))
    problems = []
    for i, e in enumerate(entries):
        state = sacct([e["slurm_jobid"]]).get(e["slurm_jobid"], {}).get("State", "?")
        if not state.startswith("CANCELLED"):
            problems.append(f"job {e['slurm_jobid']}: sacct state {state}, expected CANCELLED")
        if e["report_delay_s"] is None or e["report_delay_s"] > args.max_report_s:
            problems.append(f"job {e['slurm_jobid']}: cancel reported after {e['report_delay_s']} s "
                            f"(one status check is at most {args.max_report_s} s)")
        # the attempt after the cancel: the log a later cancel of the same run saved, else the final log
        later = [f for f in entries[i + 1:] if f["folder"] == e["folder"]]
        next_log = later[0]["log"] if later else run_log(args.logs[-1], e["folder"])
        done, resumed = eval_steps(e["log"]), eval_steps(next_log)
        if not done or not resumed or not (1 < resumed[0] <= done[-1] + 1):
            problems.append(f"{e['folder']}: cancelled after evaluations at steps {done}, the next attempt "
                            f"({next_log}) evaluated at steps {resumed}: not a resume from the checkpoint")
        e["steps"] = (done[-1] if done else None, resumed[0] if resumed else None)
        rel = os.path.relpath(e["folder"], args.runs_dir)
        metrics = os.path.join(e["folder"], "metrics.json")
        ref = os.path.join(args.reference, rel, "metrics.json")
        if not os.path.exists(metrics) or not os.path.exists(ref):
            problems.append(f"{rel}: metrics.json missing (resumed {os.path.exists(metrics)}, "
                            f"reference {os.path.exists(ref)})")
            continue
        got, want = json.load(open(metrics)), json.load(open(ref))
        diff = [k for k in DETERMINISTIC if got.get(k) != want.get(k)]
        if diff:
            problems.append(f"{rel}: resumed run differs from the uninterrupted one in {diff}")
        else:
            print(f"resumed {rel}: cancelled (job {e['slurm_jobid']}, reported after {e['report_delay_s']} s), "
                  f"checkpoint at step {e['steps'][0]}, the next attempt went on at step {e['steps'][1]}; "
                  f"{got['metrics']} == uninterrupted, "
                  f"{len(got['history'])} evaluations identical")
    if problems:
        fail("\n".join(problems))


def cmd_mini_config(args) -> None:
    """The smoke config cut to one task and two students with several checkpoints each (an evaluation and a
    checkpoint at every step), so a cancel lands mid-run."""
    cfg = yaml.safe_load(open(args.smoke))
    cfg["tasks"] = cfg["tasks"][-1:]
    cfg["train"]["eval_every"] = 1
    cfg["budgets"] = {**cfg["budgets"], "long": 6.0}
    cfg["anchor"] = {**cfg["anchor"], "epochs": "long", "kd": "one-stage", "da": "off", "depth": "full"}
    cfg["axes"] = [{"name": "bits", "title": "Weight bits (Slurm resume check)", "vary": {"wbits": [2, 1]}}]
    cfg["paths"] = {**cfg["paths"], **{k: f"{args.prefix}/{k}" for k in ("runs", "results", "figures")}}
    yaml.safe_dump(cfg, open(args.out, "w"), sort_keys=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("jobs")
    s.add_argument("log")
    s.add_argument("--allow-cancelled", action="store_true", help="an attempt that was retried may be CANCELLED")
    s = sub.add_parser("same-outputs")
    s.add_argument("local")
    s.add_argument("slurm")
    s = sub.add_parser("cancel")
    s.add_argument("runs_dir")
    s.add_argument("log")
    s.add_argument("out")
    s.add_argument("--kind", default="student", help="only runs under this folder of the runs dir ('' = any)")
    s.add_argument("--timeout", type=float, default=900)
    s.add_argument("--report-timeout", type=float, default=300)
    s = sub.add_parser("resumed")
    s.add_argument("cancelled")
    s.add_argument("runs_dir")
    s.add_argument("reference")
    s.add_argument("logs", nargs="+")
    s.add_argument("--max-report-s", type=float, default=190, help="the plugin's longest status-check interval")
    s = sub.add_parser("mini-config")
    s.add_argument("smoke")
    s.add_argument("out")
    s.add_argument("prefix")
    args = p.parse_args()
    {"jobs": cmd_jobs, "same-outputs": cmd_same_outputs, "cancel": cmd_cancel, "resumed": cmd_resumed,
     "mini-config": cmd_mini_config}[args.cmd](args)


if __name__ == "__main__":
    main()
