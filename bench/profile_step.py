"""Where a QAT+KD training step spends its time: torch.profiler over real steps, grouped by what the time is for.

One student (W-bit weights / A-bit activations, one-stage KD, the teacher's outputs from the teacher-output cache,
as `xtc compress` runs it) takes `--steps` profiled optimizer steps on real batches in the given precision.
Printed and written as JSON: the top operators by self CPU time, and the step split into forward/backward/
optimizer and into the fake-quant, KD-loss and cache-lookup regions (record_function labels added here).

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python bench/profile_step.py --teacher /work/teachers/mrpc \
        --glue-dir /work/shared/glue --precision bf16 --out bench/results/profile_qat_kd_bf16.json
"""
from __future__ import annotations

import argparse
import random

import torch
from common import emit, frozen_teacher, full_depth_cache, task_data
from torch.profiler import ProfilerActivity, profile, record_function

import xtc.distill as distill_mod
import xtc.quant as quant
from xtc.distill import make_kd_loss
from xtc.data import collate, train_batches
from xtc.distill import KDConfig
from xtc.precision import autocast
from xtc.quant import QuantSpec, apply_quantization
from xtc.train import make_optimizer, set_seed


def _labelled(fn, label):
    def wrapped(*args, **kwargs):
        with record_function(label):
            return fn(*args, **kwargs)
    return wrapped


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True)
    p.add_argument("--task", default="mrpc")
    p.add_argument("--glue-dir")
    p.add_argument("--wbits", type=int, default=1)
    p.add_argument("--abits", type=int, default=8)
    p.add_argument("--kd-terms", default="logit,hidden,attention")
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--max-train-samples", type=int, default=640,
                   help="examples to draw batches from (and to cache the teacher's outputs for)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out")
    a = p.parse_args()
    task, data = task_data(a.task, a.teacher, a.glue_dir, max_train_samples=a.max_train_samples)
    set_seed(0)
    teacher = frozen_teacher(a.teacher)
    terms = tuple(a.kd_terms.split(","))
    lmap, cache = full_depth_cache(teacher, data, terms)
    import copy

    student = copy.deepcopy(teacher)
    for q in student.parameters():
        q.requires_grad_(True)
    apply_quantization(student, QuantSpec(wbits=a.wbits, abits=a.abits))
    # label the regions we want to cost
    quant.quantize_activation = _labelled(quant.quantize_activation, "xtc:fake_quant_activation")
    quant.quantize_weight = _labelled(quant.quantize_weight, "xtc:fake_quant_weight")
    distill_mod.kd_loss = _labelled(distill_mod.kd_loss, "xtc:kd_loss")
    cache.lookup = _labelled(cache.lookup, "xtc:cache_lookup")
    loss_fn = make_kd_loss(teacher, task.is_regression, KDConfig(), lmap, cache)(terms)
    opt = make_optimizer(student, 5e-5, 0.01)
    batches = train_batches(data, 32, 0, 0)
    picks = random.Random(0).sample(range(len(batches)), a.steps + 2)

    def step(idx):
        with record_function("xtc:collate"):
            batch = collate(data, batches[idx])
            batch["index"] = torch.tensor(batches[idx])
        student.train()
        with record_function("xtc:forward_and_loss"), autocast(a.precision, "cpu"):
            loss, _ = loss_fn(student, batch)
        opt.zero_grad(set_to_none=True)
        with record_function("xtc:backward"):
            loss.backward()
        with record_function("xtc:clip_and_optimizer"):
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()

    for i in picks[:2]:  # warm-up
        step(i)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in picks[2:]:
            step(i)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    regions = {e.key: e.cpu_time_total / a.steps / 1e3 for e in events if e.key.startswith("xtc:")}
    top = sorted((e for e in events if not e.key.startswith("xtc:")), key=lambda e: -e.self_cpu_time_total)
    out = {"task": task.name, "precision": a.precision, "wbits": a.wbits, "abits": a.abits,
           "kd_terms": a.kd_terms, "profiled_steps": a.steps, "torch_threads": torch.get_num_threads(),
           "step_ms": total / a.steps / 1e3,
           "regions_ms_per_step": dict(sorted(regions.items(), key=lambda kv: -kv[1])),
           "top_ops_self_ms_per_step": {e.key: round(e.self_cpu_time_total / a.steps / 1e3, 2)
                                        for e in top[:a.top]}}
    emit(out, a.out)


if __name__ == "__main__":
    main()
