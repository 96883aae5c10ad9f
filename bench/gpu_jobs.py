"""Many small jobs on one GPU: the total training throughput of 1, 2, 4 and 8 concurrent MiniLM QAT+KD jobs.

Each job is a separate process (as the workflow runs them: `gpu_slots` in workflow/profiles/default) that trains
the packaged 6-layer MiniLM as a W1A8 student with one-stage KD from a live teacher (`xtc.train.train_step`, the
real step) on fixed random batches for --steps steps after --warmup steps, and reports its steps/s. All jobs of
a level start together (a barrier file); the result is the summed examples/s per level (all jobs' examples over
the slowest job's timed span) and its ratio to one job.

    python bench/gpu_jobs.py --device cuda --jobs 1,2,4,8 --out bench/results/gpu_jobs_cuda.json
    python bench/gpu_jobs.py --device cpu --jobs 1,2 --steps 2 --warmup 1 --batch-size 4 --seq-len 16   # dry run
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def job(a) -> None:
    import copy

    import torch

    from xtc.distill import KDConfig, layer_maps, make_kd_loss
    from xtc.models import load_classifier, resolve_model_path
    from xtc.quant import QuantSpec, apply_quantization
    from xtc.train import make_optimizer, train_step

    dev = torch.device(a.device)
    torch.manual_seed(a.job_index)
    teacher = load_classifier(resolve_model_path(a.model), 2).to(dev).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = copy.deepcopy(teacher).train()
    for p in student.parameters():
        p.requires_grad_(True)
    apply_quantization(student, QuantSpec(wbits=1, abits=8))
    n = teacher.config.num_hidden_layers
    loss_fn = make_kd_loss(teacher, False, KDConfig(), layer_maps(n, n))(("logit", "hidden", "attention"))
    opt = make_optimizer(student, 5e-5, 0.01)
    batch = {"input_ids": torch.randint(1000, 20000, (a.batch_size, a.seq_len), device=dev),
             "attention_mask": torch.ones(a.batch_size, a.seq_len, dtype=torch.long, device=dev),
             "token_type_ids": torch.zeros(a.batch_size, a.seq_len, dtype=torch.long, device=dev),
             "labels": torch.randint(0, 2, (a.batch_size,), device=dev)}
    for _ in range(a.warmup):
        train_step(student, batch, loss_fn, opt, 1.0, precision=a.precision)
    open(os.path.join(a.barrier, f"ready{a.job_index}"), "w").close()
    while not os.path.exists(os.path.join(a.barrier, "go")):
        time.sleep(0.01)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        train_step(student, batch, loss_fn, opt, 1.0, precision=a.precision)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    mem = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
    print("@@" + json.dumps({"seconds": sec, "steps": a.steps, "max_memory_allocated": mem}), flush=True)


def level(a, n: int) -> dict:
    barrier = tempfile.mkdtemp(prefix="gpu_jobs_")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads_per_job), OMP_WAIT_POLICY="PASSIVE")
    args = [sys.executable, __file__, "--job-index", "0", "--barrier", barrier, "--device", a.device, "--model",
            a.model, "--steps", str(a.steps), "--warmup", str(a.warmup), "--batch-size", str(a.batch_size),
            "--seq-len", str(a.seq_len), "--precision", a.precision]
    procs = []
    for i in range(n):
        args[3] = str(i)
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env))
    while sum(f.startswith("ready") for f in os.listdir(barrier)) < n:
        if any(p.poll() not in (None, 0) for p in procs):
            raise RuntimeError(f"a job of level {n} failed")
        time.sleep(0.05)
    t0 = time.perf_counter()
    open(os.path.join(barrier, "go"), "w").close()
    results = []
    for p in procs:
        out, _ = p.communicate()
        results.append(json.loads(next(line[2:] for line in out.splitlines() if line.startswith("@@"))))
    wall = time.perf_counter() - t0
    examples = sum(r["steps"] for r in results) * a.batch_size
    span = max(r["seconds"] for r in results)  # all started at "go": the slowest job's timed steps
    return {"jobs": n, "wall_seconds_incl_exit": wall, "examples_per_second": examples / span,
            "per_job_step_seconds": [r["seconds"] / r["steps"] for r in results],
            "max_memory_allocated_bytes": [r["max_memory_allocated"] for r in results]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="default")
    p.add_argument("--jobs", default="1,2,4,8", help="concurrency levels")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--threads-per-job", type=int, default=1)
    p.add_argument("--out")
    p.add_argument("--job-index", type=int, help=argparse.SUPPRESS)
    p.add_argument("--barrier", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.job_index is not None:
        return job(a)
    import torch

    levels = [level(a, int(n)) for n in a.jobs.split(",")]
    one = levels[0]["examples_per_second"] / levels[0]["jobs"]
    for lv in levels:
        lv["throughput_over_one_job"] = lv["examples_per_second"] / one
    out = {"device": a.device, "device_name": torch.cuda.get_device_name(0) if a.device == "cuda" else None,
           "mps": os.path.exists("/tmp/nvidia-mps") or bool(os.environ.get("CUDA_MPS_PIPE_DIRECTORY")),
           "torch": torch.__version__, "model": a.model, "batch": [a.batch_size, a.seq_len], "steps": a.steps,
           "precision": a.precision, "threads_per_job": a.threads_per_job, "levels": levels}
    from common import emit

    emit(out, a.out)


if __name__ == "__main__":
    main()
