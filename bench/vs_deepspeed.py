"""Side by side with DeepSpeed 0.17.6 (its XTC implementation, DeepSpeed Compression): the 1-bit QAT+KD step
and plain fp32 fine-tuning, same model, same batches, same thread count, interleaved rounds.

Ours (this process, xtc's public functions, `xtc.train.train_step`):
  fp32_finetune          plain cross-entropy fine-tuning of the student in fp32 (the reference)
  qat_kd_live            W1A8, one-stage KD (logit + hidden + attention), a live teacher forward every step
  qat_kd_cached          the same with the teacher-output cache (what `xtc compress` does when it fits)
  qat_kd_cached_compiled the same, the loss function (student forward, quantizers, KD loss) torch.compile'd
  qat_kd_cached_bf16     the cached step under bf16 autocast (what `--precision auto` may pick)
Theirs (bench/ds_worker.py in a separate virtualenv, e.g. /work/ds-venv):
  ds_qat_kd_live         DeepSpeed Compression's W1A8 student, one-stage KD with a live teacher
  ds_fp32_finetune       plain fine-tuning of the same HF model in that process (checks that both processes
                         run the same torch equally fast)
Timing is each step's thread CPU time (time.thread_time), so the load of a shared machine does not count; one
thread (OMP_NUM_THREADS=1) in both processes. Each round runs every set-up once on the same batch, alternating
the order. The compiled set-up's first calls (compilation) are timed separately and reported.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python bench/vs_deepspeed.py --glue-dir /work/shared/glue \
        --ds-python /work/ds-venv/bin/python --rounds 10 --out bench/results/vs_deepspeed_mrpc.json
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from common import emit, task_data

from xtc.compile_step import CompiledLoss
from xtc.data import collate
from xtc.distill import KDConfig, label_objective, layer_maps, make_kd_loss
from xtc.models import load_classifier, resolve_model_path
from xtc.precision import cpu_model_name
from xtc.quant import QuantSpec, apply_quantization
from xtc.teacher_cache import TeacherCache
from xtc.train import make_optimizer, set_seed, train_step

REFERENCE = "fp32_finetune"


class DeepSpeedWorker:
    def __init__(self, python: str, model_dir: str, batches_file: str):
        env = dict(os.environ, DS_ACCELERATOR="cpu", DS_BUILD_OPS="0")
        self.proc = subprocess.Popen([python, os.path.join(os.path.dirname(__file__), "ds_worker.py"), model_dir,
                                      batches_file], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._reply()

    def _reply(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("@@"):
                return json.loads(line[2:])
        raise RuntimeError(f"the DeepSpeed worker ended (exit {self.proc.wait()})")

    def step(self, setup: str, i: int) -> dict:
        self.proc.stdin.write(f"step {setup} {i}\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="teacher = student architecture (default: packaged MiniLM)")
    p.add_argument("--task", default="mrpc")
    p.add_argument("--glue-dir")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64, help="every batch padded/truncated to this many tokens")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--max-train-samples", type=int, default=512, help="batches (and the cache) from these")
    p.add_argument("--ds-python", default="/work/ds-venv/bin/python", help="python of the DeepSpeed virtualenv "
                   "('' to skip DeepSpeed)")
    p.add_argument("--setups", help="comma-separated subset of our set-ups")
    p.add_argument("--out")
    a = p.parse_args()
    path = resolve_model_path(a.model)
    task, data = task_data(a.task, a.model, a.glue_dir, max_length=a.seq_len, max_train_samples=a.max_train_samples)
    order = random.Random(0).sample(range(len(data)), len(data))
    picks = [order[i * a.batch_size:(i + 1) * a.batch_size] for i in range(a.rounds + 2)]
    batches = []
    for idx in picks:
        b = collate(data, idx, pad_to=a.seq_len)
        b["index"] = torch.tensor(idx)
        batches.append(b)
    set_seed(0)
    teacher = load_classifier(path, task.num_labels)
    for q in teacher.parameters():
        q.requires_grad_(False)
    teacher.eval()
    plain = copy.deepcopy(teacher).train()
    for q in plain.parameters():
        q.requires_grad_(True)
    n = teacher.config.num_hidden_layers
    lmap = layer_maps(n, n)
    terms = ("logit", "hidden", "attention")
    t0 = time.thread_time()
    cache = TeacherCache(teacher, data, lmap, set(terms), "cpu", batch_size=128, quiet=True)
    cache_cpu = time.thread_time() - t0
    live = make_kd_loss(teacher, task.is_regression, KDConfig(), lmap)(terms)
    cached = make_kd_loss(teacher, task.is_regression, KDConfig(), lmap, cache)(terms)

    def student():
        s = copy.deepcopy(plain)
        apply_quantization(s, QuantSpec(wbits=1, abits=8))
        return s

    models = {k: (plain if k == REFERENCE else student()) for k in
              (REFERENCE, "qat_kd_live", "qat_kd_cached", "qat_kd_cached_compiled", "qat_kd_cached_bf16")}
    fns = {REFERENCE: label_objective, "qat_kd_live": live, "qat_kd_cached": cached,
           "qat_kd_cached_compiled": CompiledLoss(cached, models["qat_kd_cached_compiled"], "cpu"),
           "qat_kd_cached_bf16": cached}
    ours = list(models) if not a.setups else [REFERENCE] + [s for s in a.setups.split(",") if s != REFERENCE]
    opts = {k: make_optimizer(models[k], 5e-5, 0.01) for k in ours}

    def our_step(k, i):
        t0 = time.thread_time()
        loss, _ = train_step(models[k], batches[i], fns[k], opts[k], 1.0,
                             precision="bf16" if k.endswith("bf16") else "fp32")
        return {"cpu": time.thread_time() - t0, "loss": float(loss.detach())}

    compile_record = None
    if "qat_kd_cached_compiled" in ours:  # the first calls compile: timed apart (wall, own CPU, compiler children)
        w0, c0 = time.perf_counter(), time.process_time()
        ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        for i in (0, 1):
            our_step("qat_kd_cached_compiled", i)
        ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        compile_record = {"first_two_steps_wall_seconds": time.perf_counter() - w0,
                          "first_two_steps_process_cpu_seconds": time.process_time() - c0,
                          "compiler_subprocess_cpu_seconds": (ch1.ru_utime + ch1.ru_stime) - (ch0.ru_utime + ch0.ru_stime),
                          "failed": fns["qat_kd_cached_compiled"].failed}
    worker = None
    if a.ds_python:
        tmp = tempfile.mkdtemp(prefix="vs_ds_")
        arrays = {"count": np.array(len(batches))}
        for i, b in enumerate(batches):
            for k in ("input_ids", "token_type_ids", "attention_mask", "labels"):
                arrays[f"{k}_{i}"] = b[k].numpy()
        np.savez(os.path.join(tmp, "batches.npz"), **arrays)
        worker = DeepSpeedWorker(a.ds_python, path, os.path.join(tmp, "batches.npz"))
    setups = ours + (["ds_qat_kd_live", "ds_fp32_finetune"] if worker else [])

    def run(k, i):
        return worker.step(k, i) if k.startswith("ds_") else our_step(k, i)

    for k in setups:  # warm-up: batch 0 and 1 (allocator, oneDNN; the compiled set-up has compiled already)
        for i in (0, 1):
            run(k, i)
    cpu = {k: [] for k in setups}
    losses = {k: [] for k in setups}
    for r in range(a.rounds):
        for k in (setups if r % 2 == 0 else setups[::-1]):
            res = run(k, r + 2)
            cpu[k].append(res["cpu"])
            losses[k].append(res["loss"])
        print(f"round {r + 1}/{a.rounds}: " + " ".join(f"{k} {cpu[k][-1]:.2f}" for k in setups), file=sys.stderr,
              flush=True)
    if worker:
        worker.close()
    ref = np.array(cpu[REFERENCE])
    out = {"cpu": cpu_model_name(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "clock": "thread CPU time per step",
           "model": a.model, "task": task.name, "batch": [a.batch_size, a.seq_len], "rounds": a.rounds,
           "teacher_cache": {"examples": len(data), "bytes": cache.nbytes, "build_thread_cpu_seconds": cache_cpu},
           "compile": compile_record, "deepspeed_worker": worker.info if worker else None,
           "load_average_1min_at_end": os.getloadavg()[0], "setups": {}}
    for k in setups:
        s = np.array(cpu[k])
        out["setups"][k] = {"step_cpu_seconds_median": float(np.median(s)),
                            "step_cpu_seconds_p10_p90": [float(np.percentile(s, 10)), float(np.percentile(s, 90))],
                            "ratio_to_fp32_finetune_median": float(np.median(s / ref)),
                            "losses": losses[k]}
    if worker:
        ds = np.array(cpu["ds_qat_kd_live"])
        out["ratios"] = {f"{k}_over_ds_qat_kd_live": float(np.median(np.array(cpu[k]) / ds)) for k in ours}
        out["ratios"]["ds_qat_kd_live_over_ds_fp32_finetune"] = float(np.median(ds / np.array(cpu["ds_fp32_finetune"])))
        out["ratios"]["ds_fp32_finetune_over_ours"] = float(np.median(np.array(cpu["ds_fp32_finetune"]) / ref))
    emit(out, a.out)


if __name__ == "__main__":
    main()
