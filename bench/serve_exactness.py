"""The served path (xtc.infer.ServedModel: by default its native engine, the encoder in C++; --engine compiled:
Inductor, dynamic shapes) predicts what the eager integer path predicts, and so what the run reported, on a task's
full dev set.

    python bench/serve_exactness.py --out bench/results/serve_exactness.json \
        mrpc=/tmp/mrpc-6L-w1a8.xtc=/work/runs-shared/mrpc/recipe-6L-W1A8 sst2=/tmp/sst2-6L-w1a8.xtc=RUN_DIR

Per student (TASK=PATH.xtc[=RUN_FOLDER]): labels of both paths, disagreements, largest logit difference, the
task metrics from both, the run's own dev metrics (its metrics.json) when a run folder is given, and the served
path's set-up (build or compile) and predict seconds. Batches as `xtc predict` makes them (sorted by length, batch
size 32).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np  # noqa: E402
import torch  # noqa: E402

from xtc.data import encode, load_split  # noqa: E402
from xtc.infer import ServedModel, load_for_serving, load_int_model  # noqa: E402
from xtc.metrics import split_metrics  # noqa: E402
from xtc.predict import predict_logits  # noqa: E402
from xtc.tasks import get_task  # noqa: E402


def compare(task_name: str, path: str, run_dir: str | None, glue_dir: str | None, batch_size: int,
            engine: str) -> dict:
    task = get_task(task_name)
    model, tok = load_int_model(path)
    split = load_split(task, "dev", glue_dir)
    data = encode(split, tok, 128, task.is_regression)
    t0 = time.perf_counter()
    eager, _ = predict_logits(ServedModel(model, engine="eager"), data, batch_size, "cpu")
    t1 = time.perf_counter()
    served_model = load_for_serving(path, engine, with_tokenizer=False)[0]  # loaded as xtc predict loads it
    served_model = ServedModel(served_model, engine=engine)
    served, first = predict_logits(served_model, data, batch_size, "cpu")
    t2 = time.perf_counter()
    pe, ps = eager.argmax(-1), served.argmax(-1)
    out = {"task": task.name, "model": path, "examples": len(data), "engine": served_model.engine,
           "label_agreement": float((pe == ps).mean()), "disagreements": [int(i) for i in np.nonzero(pe != ps)[0]],
           "max_abs_logit_diff": float(np.abs(eager - served).max()),
           "metrics_eager_integer": split_metrics(task, pe, split.labels),
           "metrics_served": split_metrics(task, ps, split.labels),
           "logits_identical": bool(np.array_equal(eager, served)),
           "seconds_eager": t1 - t0, "seconds_served_incl_setup": t2 - t1, "served_first_batch_seconds": first}
    if run_dir:
        with open(os.path.join(run_dir, "metrics.json")) as f:
            run = json.load(f)
        out["run"] = run_dir
        out["metrics_run"] = run.get("metrics")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("students", nargs="+", help="TASK=PATH.xtc[=RUN_FOLDER]")
    p.add_argument("--out", default="bench/results/serve_exactness.json")
    p.add_argument("--glue-dir", default=os.environ.get("XTC_GLUE_DIR"))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--engine", choices=("native", "compiled"), default="native")
    a = p.parse_args(argv)
    rows = []
    for s in a.students:
        task, path, *run = s.split("=")
        print(f"{task}: {path} ...", file=sys.stderr, flush=True)
        rows.append(compare(task, path, run[0] if run else None, a.glue_dir, a.batch_size, a.engine))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "disagreements"}), file=sys.stderr, flush=True)
    from xtc.precision import cpu_model_name

    result = {"cpu": cpu_model_name(), "engine": a.engine, "torch": torch.__version__,
              "threads": torch.get_num_threads(),
              "loadavg": list(os.getloadavg()), "students": rows}
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
