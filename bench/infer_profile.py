"""Where the time of the integer path goes: torch.profiler op table (self CPU time, summed over N calls) of
the fp32 student and the W1A8 integer student, eager and compiled, at batch 1 x 128 and 32 x 128, 1 thread.

    python bench/infer_profile.py --workdir /tmp/xtc-bench --out bench/results/infer_profile.json

Uses the models bench/infer_speed.py builds in --workdir (built here if missing).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch
from infer_speed import build_artifacts, load_variant, random_batch
from torch.profiler import ProfilerActivity, profile


def top_ops(fn, x, calls: int, rows: int = 15) -> dict:
    fn(*x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn(*x)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return {"total_ms_per_call": total / 1e3 / calls,
            "ops": [{"op": e.key, "self_ms_per_call": e.self_cpu_time_total / 1e3 / calls,
                     "share": e.self_cpu_time_total / total, "calls_per_forward": e.count / calls}
                    for e in events[:rows]]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", default="bench/results/infer_profile.json")
    p.add_argument("--variants", default="fp32,w1a8_int,w1a8_int_compiled")
    p.add_argument("--calls-b1", type=int, default=10)
    p.add_argument("--calls-b32", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    paths = build_artifacts(a.workdir)
    out = {"threads": 1, "loadavg": list(os.getloadavg()), "note": "profiler self times are wall-clock per op; "
           "on a shared machine they include time-slicing, so read shares, not absolute values", "profiles": {}}
    for v in a.variants.split(","):
        fn = load_variant(v, paths, 1)
        for name, (b, calls) in {"b1_s128": (1, a.calls_b1), "b32_s128": (32, a.calls_b32)}.items():
            print(f"{v} {name}", file=sys.stderr, flush=True)
            out["profiles"][f"{v}@{name}"] = top_ops(fn, random_batch(b, 128), calls)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    for k, r in out["profiles"].items():
        print(f"{k}: {r['total_ms_per_call']:.1f} ms/call; " + ", ".join(
            f"{o['op']} {100 * o['share']:.0f}%" for o in r["ops"][:6]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
