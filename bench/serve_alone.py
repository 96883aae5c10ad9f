"""Serving latency of each engine alone in its own process, with its threads' own default way of waiting.

bench/infer_speed.py interleaves every variant in one process, so every runtime's threads must sleep between
calls (OMP_WAIT_POLICY=PASSIVE, ONNX Runtime's allow_spinning=0): a thread that spins would take the CPU from the
next variant. A service runs one engine, and ONNX Runtime spins by default. This runs each engine in a fresh
process (one at a time, same inputs as infer_speed.py) and times batch 1 x 128, batch 32 x 128 and batch 1 over
MRPC dev pairs at their own length:

- ort_int8_spinning: ONNX Runtime int8 as a user gets it (allow_spinning=1, its default);
- ort_int8: ONNX Runtime int8 with allow_spinning=0 (as in infer_speed.py);
- w1a8_native: what `xtc predict` runs (its team of threads spins inside a forward only, sleeps between calls);
  under OMP_WAIT_POLICY=PASSIVE unless --omp-wait-policy says otherwise.

    OMP_WAIT_POLICY=PASSIVE python bench/serve_alone.py --workdir /tmp/xtc27 --glue-dir ../shared/glue \
        --threads 2 --out bench/results/serve_alone.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("ort_int8_spinning", "ort_int8", "w1a8_native")


def child(variant: str, workdir: str, glue_dir: str | None, threads: int, rounds: int, dev_n: int) -> dict:
    """Runs in a fresh process: load one engine, time it -> per shape infer_speed.latency's medians (ms)."""
    import torch

    import infer_speed as bench

    torch.set_num_threads(threads)
    paths = bench.build_artifacts(workdir, with_ort=True)
    if variant == "ort_int8_spinning":
        fn = bench.OrtModel(paths["ort_int8"], threads, spinning=True)
    else:
        fn = bench.load_variant(variant, paths, threads)
    shapes = {"b1_s128": [bench.random_batch(1, 128)], "b32_s128": [bench.random_batch(32, 128)]}
    if glue_dir:
        shapes[f"b1_dev_mrpc_{dev_n}"] = bench.dev_examples("mrpc", paths["fp32"], dev_n, glue_dir)
    # infer_speed's timing with one variant: medians of wall and thread-CPU ms per input over rounds
    out = {}
    for shape, inputs in shapes.items():
        n = rounds if shape != "b32_s128" else max(3, rounds // 6)
        out[shape] = bench.latency({variant: fn}, inputs, n)[variant]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="where infer_speed.py built (or builds) the models")
    p.add_argument("--glue-dir", help="GLUE folder (for the MRPC dev shape)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=30, help="rounds at batch 1 (batch 32: a sixth, at least 3)")
    p.add_argument("--dev-examples", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2, help="processes per engine, alternating engines")
    p.add_argument("--out", default="bench/results/serve_alone.json")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child, a.workdir, a.glue_dir, a.threads, a.rounds, a.dev_examples)))
        return 0
    from xtc.precision import cpu_model_name

    result = {"cpu": cpu_model_name(), "threads": a.threads, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
              "loadavg_start": list(os.getloadavg()), "runs": []}
    for rep in range(a.repeats):
        for v in VARIANTS:
            print(f"{v} (process {rep + 1}/{a.repeats}) ...", file=sys.stderr, flush=True)
            cmd = [sys.executable, __file__, "--child", v, "--workdir", a.workdir, "--threads", str(a.threads),
                   "--rounds", str(a.rounds), "--dev-examples", str(a.dev_examples)]
            if a.glue_dir:
                cmd += ["--glue-dir", a.glue_dir]
            r = subprocess.run(cmd, capture_output=True, text=True, check=True)
            result["runs"].append({"variant": v, "process": rep, **json.loads(r.stdout.strip().splitlines()[-1])})
    result["loadavg_end"] = list(os.getloadavg())
    # per engine and shape: the median over its processes' wall-time medians
    result["summary"] = {}
    for v in VARIANTS:
        runs = [r for r in result["runs"] if r["variant"] == v]
        result["summary"][v] = {s: round(statistics.median(r[s]["wall_ms_median"] for r in runs), 3)
                                for s in runs[0] if s not in ("variant", "process")}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
