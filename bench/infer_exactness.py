"""Exactness of the integer path: the same .xtc students run on the integer path (xtc.infer) and as the
fake-quant model they were exported from (xtc.pack.load_packed), on a task's full dev set.

    python bench/infer_exactness.py --out bench/results/infer_exactness.json \
        mrpc=runs/mrpc-6L-w1a8.xtc mrpc=runs/mrpc-3L-w2a8.xtc sst2=runs/sst2-6L-w1a8.xtc sst2=runs/sst2-3L-w2a8.xtc

Per student: label agreement, every disagreeing example (dev index, both paths' logits and their margins),
the largest absolute logit difference, and the task metrics from both paths.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from xtc.data import encode, load_split  # noqa: E402
from xtc.infer import load_int_model  # noqa: E402
from xtc.metrics import split_metrics  # noqa: E402
from xtc.pack import load_packed, size_report  # noqa: E402
from xtc.tasks import get_task  # noqa: E402
from xtc.train import predict  # noqa: E402


def margin(logits: np.ndarray) -> np.ndarray:
    """Top logit minus the runner-up: how far an example is from a label flip."""
    s = np.sort(logits, axis=-1)
    return s[:, -1] - s[:, -2]


def compare(task_name: str, path: str, glue_dir: str | None, batch_size: int = 64) -> dict:
    task = get_task(task_name)
    fake, tok = load_packed(path)
    intm, _ = load_int_model(path)
    split = load_split(task, "dev", glue_dir)
    data = encode(split, tok, 128, task.is_regression)
    t0 = time.perf_counter()
    lf = predict(fake, data, batch_size, torch.device("cpu"))
    t1 = time.perf_counter()
    li = predict(intm, data, batch_size, torch.device("cpu"))
    t2 = time.perf_counter()
    pf, pi = lf.argmax(-1), li.argmax(-1)
    diff = np.abs(lf - li)
    dis = np.nonzero(pf != pi)[0]
    spec = size_report(path)["quant_spec"]
    return {
        "task": task.name, "model": path, "layers": fake.config.num_hidden_layers,
        "wbits": spec["wbits"], "abits": spec["abits"], "examples": len(data),
        "label_agreement": float((pf == pi).mean()), "disagreements": len(dis),
        "disagreeing_examples": [{"dev_index": int(i), "fake_logits": lf[i].tolist(), "int_logits": li[i].tolist(),
                                  "fake_margin": float(margin(lf[i:i + 1])[0]),
                                  "int_margin": float(margin(li[i:i + 1])[0])} for i in dis],
        "max_abs_logit_diff": float(diff.max()), "mean_abs_logit_diff": float(diff.mean()),
        "smallest_fake_margin": float(margin(lf).min()),
        "metrics_fake_quant": split_metrics(task, pf, split.labels),
        "metrics_integer": split_metrics(task, pi, split.labels),
        "seconds_fake_quant": t1 - t0, "seconds_integer": t2 - t1,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("students", nargs="+", help="TASK=PATH.xtc")
    p.add_argument("--out", default="bench/results/infer_exactness.json")
    p.add_argument("--glue-dir", default=os.environ.get("XTC_GLUE_DIR"))
    p.add_argument("--batch-size", type=int, default=64)
    a = p.parse_args(argv)
    rows = []
    for s in a.students:
        task, _, path = s.partition("=")
        print(f"{task}: {path} ...", file=sys.stderr, flush=True)
        rows.append(compare(task, path, a.glue_dir, a.batch_size))
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__, "results": rows}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print("| task | student | dev examples | label agreement | disagreements (dev index: fake margin) | "
          "max abs logit diff | metric fake-quant | metric integer |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        names = ", ".join(f"{d['dev_index']}: {d['fake_margin']:.2e}" for d in r["disagreeing_examples"]) or "none"
        mf = ", ".join(f"{k} {v:.4f}" for k, v in r["metrics_fake_quant"].items())
        mi = ", ".join(f"{k} {v:.4f}" for k, v in r["metrics_integer"].items())
        print(f"| {r['task']} | {r['layers']}L W{r['wbits']}A{r['abits']} | {r['examples']} | "
              f"{r['label_agreement']:.4f} | {names} | {r['max_abs_logit_diff']:.2e} | {mf} | {mi} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
