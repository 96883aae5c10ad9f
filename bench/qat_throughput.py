"""Training-step cost of a QAT+KD student, in fp32 and bf16, against plain fp32 fine-tuning of the same student.

Set-ups, all on the same student (a copy of the teacher, or k of its layers) and the same real batches:
  fp32_finetune            plain cross-entropy fine-tuning in fp32: the reference
  bf16_finetune            the same under bf16 autocast
  qat_kd_{fp32,bf16}       W-bit weights / A-bit activations, one-stage KD, a live teacher forward every step
  qat_kd_cached_{fp32,bf16}  the same with the teacher's outputs from the teacher-output cache (what
                           `xtc compress` does when the cache fits)
Every round takes one step of each set-up on the same batch (a random sample of the length-grouped epoch), in
turn, so machine load hits all alike; the result gives each set-up's median step time, the median of the
per-round ratios to the reference (robust on a loaded machine), the cache's build time and size, and the thread
count. Run it with OMP_WAIT_POLICY=PASSIVE and a fixed thread count:

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python bench/qat_throughput.py --teacher /work/teachers/mrpc \
        --glue-dir /work/shared/glue --rounds 40 --out bench/results/qat_throughput_mrpc_6L_bf16.json
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import random
import time

import numpy as np
import torch
from common import emit, frozen_teacher, task_data, timed_step

from xtc.data import train_batches
from xtc.distill import KDConfig, evenly_spaced_layers, label_objective, layer_maps, make_kd_loss, reduce_layers
from xtc.precision import device_bf16_support
from xtc.quant import QuantSpec, apply_quantization
from xtc.teacher_cache import TeacherCache
from xtc.train import make_optimizer, set_seed

REFERENCE = "fp32_finetune"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True)
    p.add_argument("--task", default="mrpc")
    p.add_argument("--glue-dir")
    p.add_argument("--layers", type=int, help="student depth (default: the teacher's)")
    p.add_argument("--wbits", type=int, default=1)
    p.add_argument("--abits", type=int, default=8)
    p.add_argument("--kd-terms", default="logit,hidden,attention")
    p.add_argument("--rounds", type=int, default=30, help="timed steps per set-up (interleaved rounds)")
    p.add_argument("--setups", help="comma-separated subset of the set-ups (default: all)")
    p.add_argument("--max-train-samples", type=int,
                   help="draw the batches from (and cache the teacher's outputs of) the first N examples only")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda (default: cuda where available)")
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args()
    dev = torch.device(a.device)
    task, data = task_data(a.task, a.teacher, a.glue_dir, max_train_samples=a.max_train_samples)
    set_seed(0)
    teacher = frozen_teacher(a.teacher, dev)
    n = teacher.config.num_hidden_layers
    layers = evenly_spaced_layers(n, a.layers or n)
    lmap = layer_maps(len(layers), n, None if a.layers in (None, n) else layers)
    terms = tuple(a.kd_terms.split(","))
    plain = reduce_layers(teacher, layers).to(dev)
    for q in plain.parameters():
        q.requires_grad_(True)
    quantized = copy.deepcopy(plain)
    apply_quantization(quantized, QuantSpec(wbits=a.wbits, abits=a.abits))
    t0 = time.perf_counter()
    cache = TeacherCache(teacher, data, lmap, set(terms), dev, batch_size=128, quiet=False)
    build_seconds = time.perf_counter() - t0
    live_loss = make_kd_loss(teacher, task.is_regression, KDConfig(), lmap)(terms)
    cached_loss = make_kd_loss(teacher, task.is_regression, KDConfig(), lmap, cache)(terms)
    recipes = {"fp32_finetune": (plain, label_objective, "fp32"), "bf16_finetune": (plain, label_objective, "bf16"),
               "qat_kd_fp32": (quantized, live_loss, "fp32"), "qat_kd_bf16": (quantized, live_loss, "bf16"),
               "qat_kd_cached_fp32": (quantized, cached_loss, "fp32"),
               "qat_kd_cached_bf16": (quantized, cached_loss, "bf16")}
    wanted = a.setups.split(",") if a.setups else list(recipes)
    if REFERENCE not in wanted:
        wanted.insert(0, REFERENCE)
    # one optimizer per model: the fp32 and bf16 set-ups of a recipe step the same weights (timing only; this
    # keeps the memory to two students, which matters on a shared 24 GiB machine)
    optimizers = {id(plain): make_optimizer(plain, 5e-5, 0.01), id(quantized): make_optimizer(quantized, 5e-5, 0.01)}
    setups = {k: (recipes[k][0], optimizers[id(recipes[k][0])], recipes[k][1], recipes[k][2]) for k in wanted}
    batches = train_batches(data, 32, 0, 0)
    picks = random.Random(0).sample(range(len(batches)), min(a.rounds, len(batches)))
    for model, opt, fn, precision in setups.values():  # warm-up (allocator, oneDNN kernels)
        for _ in range(2):
            timed_step(model, opt, fn, data, batches[picks[0]], precision=precision, device=dev)
    seconds = {k: [] for k in setups}
    tokens = {k: 0 for k in setups}
    for r, i in enumerate(picks):
        order = list(setups) if r % 2 == 0 else list(setups)[::-1]  # alternate who goes first
        for k in order:
            model, opt, fn, precision = setups[k]
            sec, tok, _ = timed_step(model, opt, fn, data, batches[i], precision=precision, device=dev)
            seconds[k].append(sec)
            tokens[k] += tok
    ref = np.array(seconds[REFERENCE])
    out = {"task": task.name, "student_layers": layers, "wbits": a.wbits, "abits": a.abits,
           "kd_terms": a.kd_terms, "rounds": len(picks), "batch_size": 32, "train_examples": len(data),
           "max_train_samples": a.max_train_samples,
           "torch_threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
           "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor(),
           "cpu_bf16": device_bf16_support("cpu")[1], "torch": torch.__version__,
           "load_average_1min_at_end": os.getloadavg()[0], "cpu_count": os.cpu_count(), "setups": {}}
    for k, s in seconds.items():
        s = np.array(s)
        out["setups"][k] = {"step_seconds_median": float(np.median(s)), "step_seconds_mean": float(s.mean()),
                            "step_seconds_p10_p90": [float(np.percentile(s, 10)), float(np.percentile(s, 90))],
                            "tokens_per_second": tokens[k] / float(s.sum()),
                            "ratio_to_fp32_finetune_median": float(np.median(s / ref)),
                            "ratio_of_medians": float(np.median(s) / np.median(ref))}
    out["cache"] = {"build_seconds": build_seconds, "bytes": cache.nbytes}
    emit(out, a.out)


if __name__ == "__main__":
    main()
