"""Shared set-up for the benchmarks: a task's tokenized training set and a timed training step."""
from __future__ import annotations

import time

import torch

from xtc.config import TrainConfig
from xtc.data import collate, load_task_data
from xtc.distill import layer_maps
from xtc.models import load_classifier, load_tokenizer, resolve_model_path
from xtc.teacher_cache import TeacherCache
from xtc.tasks import get_task
from xtc.train import train_step


def task_data(task_name: str, model: str, glue_dir: str | None, max_length: int = TrainConfig.max_seq_length,
              max_train_samples: int | None = None):
    task = get_task(task_name)
    tok = load_tokenizer(resolve_model_path(model))
    train, _ = load_task_data(task, tok, glue_dir, max_length, max_train_samples)
    return task, train


def frozen_teacher(path: str, device="cpu"):
    """The fine-tuned teacher, on `device`, with no gradients (as `xtc compress` holds it)."""
    teacher = load_classifier(path).to(device)
    for q in teacher.parameters():
        q.requires_grad_(False)
    return teacher


def full_depth_cache(teacher, data, terms, device="cpu"):
    """(layer map, teacher-output cache) for a student of the teacher's depth and these KD terms."""
    n = teacher.config.num_hidden_layers
    lmap = layer_maps(n, n)
    return lmap, TeacherCache(teacher, data, lmap, set(terms), device, batch_size=128, quiet=False)


def sync(device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; a wall clock needs it finished)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed_step(model, opt, loss_fn, data, indices, pad_to=None, precision="fp32",
               device="cpu") -> tuple[float, int, int]:
    """One optimizer step of the training loop (xtc.train.train_step: forward+loss in the precision's autocast
    region, recipe clipping, no schedule), the batch already on `device` as the loop has it;
    returns (seconds, real tokens, computed tokens incl. padding)."""
    batch = collate(data, indices, pad_to=pad_to)
    batch["index"] = torch.tensor(indices)  # as the training loop passes it (teacher-output cache lookups)
    batch = {k: v.to(device) for k, v in batch.items()}
    sync(device)
    t0 = time.perf_counter()
    train_step(model, batch, loss_fn, opt, TrainConfig.max_grad_norm, precision=precision)
    sync(device)
    return time.perf_counter() - t0, int(batch["attention_mask"].sum()), batch["input_ids"].numel()


def time_interleaved(fns: dict, inputs: list, rounds: int, warmup: int = 2, device="cpu",
                     alternate: bool = False) -> dict[str, dict[str, list[float]]]:
    """Time variants against each other on a shared machine: every round runs each variant once over `inputs`
    (one sample: its mean seconds per input), so a slow phase of the machine hits all variants alike; with
    `alternate`, every other round in reverse order (no variant always first). `warmup` untimed rounds first; the
    device is synchronised around each pass. Per variant: {"wall": [seconds], "cpu": [thread CPU seconds]}."""
    for _ in range(warmup):
        for fn in fns.values():
            for x in inputs:
                fn(*x)
    samples = {k: {"wall": [], "cpu": []} for k in fns}
    for r in range(rounds):
        for k in (list(fns)[::-1] if alternate and r % 2 else list(fns)):
            sync(device)
            t0, c0 = time.perf_counter(), time.thread_time()
            for x in inputs:
                fns[k](*x)
            sync(device)
            samples[k]["wall"].append((time.perf_counter() - t0) / len(inputs))
            samples[k]["cpu"].append((time.thread_time() - c0) / len(inputs))
    return samples


def emit(result: dict, out_path: str | None) -> None:
    """Print a benchmark's JSON result and, with --out, write it there too."""
    import json

    text = json.dumps(result, indent=2)
    print(text)
    if out_path:
        with open(out_path, "w") as f:
            f.write(text + "\n")
