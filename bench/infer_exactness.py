"""Exactness of the integer path: the same .xtc students run on the integer path (xtc.infer) and as the
fake-quant model they were exported from (xtc.pack.load_packed), on a task's full dev set.

    python bench/infer_exactness.py --out bench/results/infer_exactness.json \
        mrpc=runs/mrpc-6L-w1a8.xtc mrpc=runs/mrpc-3L-w2a8.xtc sst2=runs/sst2-6L-w1a8.xtc sst2=runs/sst2-3L-w2a8.xtc

Per student, first how xtc itself evaluates the fake-quant model (its quantized layers on integers,
QuantLinear.integer_eval: the maths of the integer path, so the reported dev metrics are the deployed ones)
against the integer path; then the fp32 fake-quant maths against the integer path: label agreement, every
disagreeing example (dev index, both paths' logits and their margins),
the largest absolute logit difference, and the task metrics from both paths. A third pass runs the fake-quant
model with its quantized GEMMs summed in float64 (rounded once to fp32): how far each fp32 path is from the
same maths with (almost) exact sums.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import types  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from xtc.data import encode, load_split  # noqa: E402
from xtc.infer import load_int_model  # noqa: E402
from xtc.metrics import split_metrics  # noqa: E402
from xtc.pack import load_packed, size_report  # noqa: E402
from xtc.quant import QuantLinear, quantize_activation  # noqa: E402
from xtc.tasks import get_task  # noqa: E402
from xtc.train import predict  # noqa: E402


def margin(logits: np.ndarray) -> np.ndarray:
    """Top logit minus the runner-up: how far an example is from a label flip."""
    s = np.sort(logits, axis=-1)
    return s[:, -1] - s[:, -2]


def _exact_gemm_forward(self, x):
    """QuantLinear forward with the product summed in float64 and rounded once to fp32: the fake-quant
    maths with (almost) correctly rounded GEMMs, a reference neither fp32 path is closer to by construction."""
    if self.abits < 32:
        x = quantize_activation(x, self.abits, self.act_per_token)
    b = None if self.bias is None else self.bias.double()
    return F.linear(x.double(), self.weight.double(), b).to(x.dtype)


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    d = np.nonzero(a.argmax(-1) != b.argmax(-1))[0]
    return {"label_agreement": float((a.argmax(-1) == b.argmax(-1)).mean()), "disagreements": len(d),
            "dev_indices": [int(i) for i in d], "max_abs_logit_diff": float(np.abs(a - b).max())}


def compare(task_name: str, path: str, glue_dir: str | None, batch_size: int = 64, reference: bool = True,
            device: str = "cpu") -> dict:
    task = get_task(task_name)
    dev = torch.device(device)
    fake, tok = load_packed(path)
    fake.to(dev)
    intm, _ = load_int_model(path, device=dev)
    split = load_split(task, "dev", glue_dir)
    data = encode(split, tok, 128, task.is_regression)
    le = predict(fake, data, batch_size, dev)  # how xtc evaluates the fake-quant model: its layers on integers
    for m in fake.modules():
        if isinstance(m, QuantLinear):
            m.integer_eval = False  # from here on: the fp32 fake-quant maths
    t0 = time.perf_counter()
    lf = predict(fake, data, batch_size, dev)
    t1 = time.perf_counter()
    li = predict(intm, data, batch_size, dev)
    t2 = time.perf_counter()
    ref = {}
    if reference:
        for m in fake.modules():
            if isinstance(m, QuantLinear):
                m.forward = types.MethodType(_exact_gemm_forward, m)
        lr = predict(fake, data, batch_size, dev)
        ref = {"reference_exact_gemm_fake_quant": {"fake_quant_vs_reference": agreement(lf, lr),
                                                   "integer_vs_reference": agreement(li, lr)}}
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
        "seconds_fake_quant": t1 - t0, "seconds_integer": t2 - t1, "device": str(dev), **ref,
        "evaluation_vs_integer": {**agreement(le, li), "identical_logits": bool(np.array_equal(le, li)),
                                  "metrics_evaluation": split_metrics(task, le.argmax(-1), split.labels)},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("students", nargs="+", help="TASK=PATH.xtc")
    p.add_argument("--out", default="bench/results/infer_exactness.json")
    p.add_argument("--glue-dir", default=os.environ.get("XTC_GLUE_DIR"))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-reference", dest="reference", action="store_false",
                   help="skip the third pass (fake-quant with float64-summed GEMMs) that both paths are compared to")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the integer path on int8 tensor cores)")
    a = p.parse_args(argv)
    rows = []
    for s in a.students:
        task, _, path = s.partition("=")
        print(f"{task}: {path} ...", file=sys.stderr, flush=True)
        rows.append(compare(task, path, a.glue_dir, a.batch_size, a.reference, a.device))
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__, "results": rows}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print("| task | student | dev examples | xtc evaluation vs integer path: labels, logits | fp32 fake-quant maths "
          "vs integer: label agreement | disagreements (dev index: fake margin) | max abs logit diff | metric "
          "fp32 fake-quant | metric integer | vs exact-GEMM reference: fake / integer disagreements |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        names = ", ".join(f"{d['dev_index']}: {d['fake_margin']:.2e}" for d in r["disagreeing_examples"]) or "none"
        mf = ", ".join(f"{k} {v:.4f}" for k, v in r["metrics_fake_quant"].items())
        mi = ", ".join(f"{k} {v:.4f}" for k, v in r["metrics_integer"].items())
        rr = r.get("reference_exact_gemm_fake_quant")
        refs = (f"{rr['fake_quant_vs_reference']['disagreements']} / {rr['integer_vs_reference']['disagreements']}"
                if rr else "-")
        ev = r["evaluation_vs_integer"]
        same = "identical" if ev["identical_logits"] else f"max diff {ev['max_abs_logit_diff']:.1e}"
        print(f"| {r['task']} | {r['layers']}L W{r['wbits']}A{r['abits']} | {r['examples']} | "
              f"{ev['label_agreement'] * r['examples']:.0f}/{r['examples']}, {same} | {r['label_agreement']:.4f} | {names} | {r['max_abs_logit_diff']:.2e} | {mf} | {mi} | {refs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
