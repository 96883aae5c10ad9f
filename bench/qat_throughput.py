"""Training throughput of a QAT+KD student against plain fp32 fine-tuning of the same student.

The same student (a copy of the teacher, or k of its layers) is trained on the same batches with
(a) plain fp32 cross-entropy fine-tuning, (b) 1-bit weights / 8-bit activations with one-stage KD and a live
teacher forward every step, and (c) the same with the teacher's outputs taken from the teacher-output cache
(what `xtc compress` does when the cache fits). Steps alternate between the set-ups so machine load affects
all alike. Prints tokens/s of each, the per-step slowdown, the cache's one-off build time and size, and the
slowdown with the build amortised over `--epochs` epochs.

    python bench/qat_throughput.py --teacher runs/teachers/mrpc --task mrpc --glue-dir ../shared/glue \
        --kd-terms logit,hidden
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time

import numpy as np
import torch
from common import task_data, timed_step

from xtc.data import train_batches
from xtc.distill import KDConfig, evenly_spaced_layers, label_objective, layer_maps, make_kd_loss, reduce_layers
from xtc.models import load_classifier
from xtc.quant import QuantSpec, apply_quantization
from xtc.teacher_cache import TeacherCache
from xtc.train import make_optimizer, set_seed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True)
    p.add_argument("--task", default="mrpc")
    p.add_argument("--glue-dir")
    p.add_argument("--layers", type=int, help="student depth (default: the teacher's)")
    p.add_argument("--wbits", type=int, default=1)
    p.add_argument("--abits", type=int, default=8)
    p.add_argument("--kd-terms", default="logit,hidden,attention")
    p.add_argument("--steps", type=int, default=12, help="timed steps per set-up")
    p.add_argument("--epochs", type=float, default=18, help="run length over which the cache build is amortised")
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args()
    task, data = task_data(a.task, a.teacher, a.glue_dir)
    set_seed(0)
    teacher = load_classifier(a.teacher)
    for q in teacher.parameters():
        q.requires_grad_(False)
    n = teacher.config.num_hidden_layers
    layers = evenly_spaced_layers(n, a.layers or n)
    plain = reduce_layers(teacher, layers)
    student = copy.deepcopy(plain)
    for m in (plain, student):
        for q in m.parameters():
            q.requires_grad_(True)
    apply_quantization(student, QuantSpec(wbits=a.wbits, abits=a.abits))
    cached_student = copy.deepcopy(student)
    lmap = layer_maps(len(layers), n, None if a.layers in (None, n) else layers)
    terms = tuple(a.kd_terms.split(","))
    t0 = time.perf_counter()
    cache = TeacherCache(teacher, data, lmap, set(terms), "cpu", batch_size=128)
    build_seconds = time.perf_counter() - t0
    live_loss = make_kd_loss(teacher, task.is_regression, KDConfig(), lmap)(terms)
    cached_loss = make_kd_loss(teacher, task.is_regression, KDConfig(), lmap, cache)(terms)
    setups = {"fp32_finetune": (plain, make_optimizer(plain, 5e-5, 0.01), label_objective),
              "qat_kd": (student, make_optimizer(student, 5e-5, 0.01), live_loss),
              "qat_kd_cached": (cached_student, make_optimizer(cached_student, 5e-5, 0.01), cached_loss)}
    batches = train_batches(data, 32, 0, 0)
    stats = {k: {"seconds": [], "tokens": 0} for k in setups}
    for model, opt, fn in setups.values():  # warm-up
        timed_step(model, opt, fn, data, batches[-1])
    for i in range(a.steps):
        for k, (model, opt, fn) in setups.items():
            sec, tok, _ = timed_step(model, opt, fn, data, batches[i])
            stats[k]["seconds"].append(sec)
            stats[k]["tokens"] += tok
    out = {"task": task.name, "student_layers": layers, "wbits": a.wbits, "abits": a.abits,
           "kd_terms": a.kd_terms, "timed_steps": a.steps, "train_examples": len(data),
           "torch_threads": torch.get_num_threads()}
    for k, s in stats.items():
        out[k] = {"tokens_per_second": s["tokens"] / sum(s["seconds"]), "step_seconds_mean": float(np.mean(s["seconds"]))}
    fp32 = out["fp32_finetune"]["tokens_per_second"]
    out["slowdown"] = fp32 / out["qat_kd"]["tokens_per_second"]
    out["slowdown_cached"] = fp32 / out["qat_kd_cached"]["tokens_per_second"]
    steps = math.ceil(len(data) / 32) * a.epochs
    out["cache"] = {"build_seconds": build_seconds, "bytes": cache.nbytes, "amortised_over_epochs": a.epochs,
                    "slowdown_amortised": (out["qat_kd_cached"]["step_seconds_mean"] * steps + build_seconds)
                    / (out["fp32_finetune"]["step_seconds_mean"] * steps)}
    text = json.dumps(out, indent=2)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
