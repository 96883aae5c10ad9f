"""Does bf16 training change the science? fp32 vs bf16 students on one task, several seeds each.

Arms (the issue's fidelity check): the 6-layer W1A8 student with one-stage KD, and the 3-layer fp32 KD student,
each trained with `--precision fp32` and `--precision bf16` for every seed. Runs go `--jobs` at a time with one
thread each (OMP_NUM_THREADS=1, OMP_WAIT_POLICY=PASSIVE); a finished run folder is reused and an unfinished one
resumes, so the script can be re-run after an interruption. The summary gives mean +- std (sample std) of every
dev metric per arm and the issue's rule: bf16's mean must lie within max(std_fp32, std_bf16) of fp32's mean on
the selection metric, else bf16 must not be the default.

    python bench/fidelity.py --teacher /work/teachers/mrpc --glue-dir /work/shared/glue \
        --runs scratch/fidelity --out bench/results/fidelity_mrpc.json
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from common import emit

ARMS = {  # name -> extra `xtc compress` flags
    "W1A8_6L": ["--wbits", "1", "--abits", "8", "--kd", "one-stage"],
    "fp32_KD_3L": ["--layers", "3", "--kd", "one-stage"],
}


def command(a, arm: str, precision: str, seed: int) -> tuple[list[str], str]:
    out = os.path.join(a.runs, f"{arm}_{precision}_seed{seed}")
    cmd = [sys.executable, "-m", "xtc.cli", "compress", "--task", a.task, "--teacher", a.teacher,
           *ARMS[arm], "--epochs", str(a.epochs), "--seed", str(seed), "--precision", precision, "--out", out,
           "--quiet"]
    if a.glue_dir:
        cmd += ["--glue-dir", a.glue_dir]
    return cmd, out


def run_one(cmd: list[str], out: str) -> dict:
    if not os.path.exists(os.path.join(out, "metrics.json")):
        env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", MKL_NUM_THREADS="1")
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        t0 = time.time()
        with open(out + ".log", "a") as log:
            log.write("$ " + shlex.join(cmd) + "\n")
            log.flush()
            rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        print(f"{os.path.basename(out)}: rc {rc}, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        if rc:
            return {}
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


def summarize(records: dict, seeds: list[int]) -> dict:
    out = {}
    for arm in ARMS:
        arm_out = {}
        for precision in ("fp32", "bf16"):
            recs = [records.get((arm, precision, s)) for s in seeds]
            recs = [r for r in recs if r]
            if not recs:
                continue
            names = list(recs[0]["metrics"])
            arm_out[precision] = {
                "seeds": len(recs),
                "metrics": {m: {"mean": statistics.mean(r["metrics"][m] for r in recs),
                                "std": statistics.stdev(r["metrics"][m] for r in recs) if len(recs) > 1 else None,
                                "values": [r["metrics"][m] for r in recs]} for m in names},
                "selection_metric": recs[0]["selection_metric"],
                "train_seconds_mean": statistics.mean(r["train_seconds"] for r in recs),
                "wall_seconds_mean": statistics.mean(r["wall_seconds"] for r in recs),
                "precision_reason": recs[0].get("precision", {}).get("reason"),
            }
        if {"fp32", "bf16"} <= set(arm_out) and arm_out["fp32"]["seeds"] > 1 and arm_out["bf16"]["seeds"] > 1:
            verdicts = {}
            for m in arm_out["fp32"]["metrics"]:
                f, b = arm_out["fp32"]["metrics"][m], arm_out["bf16"]["metrics"][m]
                tol = max(f["std"], b["std"])
                verdicts[m] = {"diff_bf16_minus_fp32": b["mean"] - f["mean"], "tolerance": tol,
                               "within": abs(b["mean"] - f["mean"]) <= tol}
            arm_out["rule"] = verdicts
            arm_out["bf16_ok"] = verdicts[arm_out["fp32"]["selection_metric"]]["within"]
            arm_out["train_time_ratio_bf16_over_fp32"] = (arm_out["bf16"]["train_seconds_mean"]
                                                          / arm_out["fp32"]["train_seconds_mean"])
        out[arm] = arm_out
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True)
    p.add_argument("--task", default="mrpc")
    p.add_argument("--glue-dir")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, in the order to run ({', '.join(ARMS)})")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--jobs", type=int, default=2, help="runs side by side, one thread each")
    p.add_argument("--runs", default="scratch/fidelity", help="folder for the run folders and their logs")
    p.add_argument("--out", help="write the summary JSON here")
    p.add_argument("--summarize-only", action="store_true", help="do not train; summarize finished runs")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    # arm by arm, seed-major, fp32 and bf16 side by side: partial results stay balanced, both precisions share
    # the load, and two 6-layer runs with their teacher caches (~7.5 GB each on MRPC) come up together only then
    arms = a.arms.split(",")
    unknown = set(arms) - set(ARMS)
    if unknown:
        p.error(f"unknown arm(s) {sorted(unknown)}; choose from {', '.join(ARMS)}")
    jobs = [(arm, precision, s) for arm in arms for s in seeds for precision in ("fp32", "bf16")]
    records = {}
    if a.summarize_only:
        for key in jobs:
            _, out = command(a, *key)
            if os.path.exists(os.path.join(out, "metrics.json")):
                with open(os.path.join(out, "metrics.json")) as f:
                    records[key] = json.load(f)
    else:
        with ThreadPoolExecutor(a.jobs) as pool:
            futures = {key: pool.submit(run_one, *command(a, *key)) for key in jobs}
            records = {key: f.result() for key, f in futures.items()}
    summary = {"task": a.task, "teacher": a.teacher, "epochs": a.epochs, "seeds": seeds,
               "threads_per_run": 1, "runs_side_by_side": a.jobs,
               "commands": {f"{arm}_{precision}_seed{s}": shlex.join(command(a, arm, precision, s)[0][1:])
                            for arm, precision, s in jobs},
               "arms": summarize(records, seeds)}
    emit(summary, a.out)


if __name__ == "__main__":
    main()
