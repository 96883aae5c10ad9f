"""Compare the two quick-study runs of bench/quick_before_after.sh -> JSON: wall times, job seconds by kind, and the
training throughput of the student configurations both runs trained (the same task, depth, bits, KD, budget, lr,
DA and seed), which separates step speed from what the profile asks each run to do.

    python bench/quick_before_after.py /work/qs --out bench/results/quick_before_after.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics

import pandas as pd

KEY = ["kind", "task", "depth", "wbits", "abits", "kd", "epochs", "lr", "da", "seed"]


def runs_table(clone: str) -> pd.DataFrame:
    for sub in ("runs/quick/results", "results/quick"):  # a fresh run's outputs; older commits wrote results/quick
        path = os.path.join(clone, sub, "runs.csv")
        if os.path.exists(path):
            df = pd.read_csv(path).drop_duplicates("run_id")
            df["lr"] = df["lr"].astype(float).round(10)
            return df
    raise FileNotFoundError(f"no runs.csv under {clone}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="OUT_DIR of bench/quick_before_after.sh")
    p.add_argument("--out", default="bench/results/quick_before_after.json")
    a = p.parse_args(argv)
    arms = {r["arm"]: r for r in map(json.loads, open(os.path.join(a.folder, "summary.jsonl")))}
    load = [tuple(map(float, line.split()[:2])) for line in open(os.path.join(a.folder, "load.log"))]
    out = {"cpu": next((line.split(":", 1)[1].strip() for line in open(os.path.join(a.folder, "lscpu.txt"))
                        if line.startswith("Model name")), None), "arms": {}}
    tables = {}
    for name, arm in arms.items():
        df = tables[name] = runs_table(os.path.join(a.folder, f"clone-{name}"))
        span = [l1 for t, l1 in load if arm["start"] <= t <= arm["start"] + arm["run_s"]]
        students = df[df["kind"] == "student"]
        out["arms"][name] = {**arm, "run_min": round(arm["run_s"] / 60, 1), "runs": int(len(df)),
                             "job_seconds_by_kind": df.groupby("kind")["wall_s"].sum().round(1).to_dict(),
                             "student_train_seconds": round(float(students["train_wall_s"].sum()), 1),
                             "loadavg_1min_mean": round(statistics.mean(span), 2) if span else None}
    m = tables["before"].merge(tables["after"], on=KEY, suffixes=("_before", "_after"))
    m = m[m["kind"] == "student"]
    ratio = m["train_tokens_per_s_after"] / m["train_tokens_per_s_before"]
    medians = {arm: round(float(m[f"train_tokens_per_s_{arm}"].median()), 1) for arm in ("before", "after")}
    out["matched_students"] = {"count": int(len(m)), "train_tokens_per_s_median": medians,
                               "after_over_before_median": round(float(ratio.median()), 3),
                               "after_over_before_q1_q3": [round(float(q), 3) for q in ratio.quantile([0.25, 0.75])]}
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
