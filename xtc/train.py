"""One training loop for every run (teacher fine-tuning, KD students, QAT): AdamW with the recipe's
weight-decay exclusions, linear warm-up and decay, clipping, evaluation every N steps and at each epoch
end (or at K equal fractions of the run), best-checkpoint selection on the validation split (on dev when there
is none), and exact resume from the last evaluation point."""
from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass, field, fields
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from xtc.arch import inputs_for
from xtc.compile_step import CompiledLoss, resolve_compile
from xtc.config import TrainConfig
from xtc.data import Encoded, collate, eval_batches, train_batches
from xtc.metrics import task_metrics
from xtc.precision import autocast, resolve_precision
from xtc.run_folder import Checkpoints
from xtc.tasks import Task

LossFn = Callable[[torch.nn.Module, dict], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class Stage:
    """A phase of training with its own optimizer and schedule (two-stage KD has two)."""
    name: str
    epochs: float
    lr_factor: float
    loss_fn: LossFn


@dataclass
class LoopState:
    """Everything the training loop carries from step to step; saved at every evaluation for exact resume."""
    stage: int = 0  # index of the running stage
    stage_step: int = 0
    global_step: int = 0
    best_metric: float = -math.inf
    best_step: int = -1
    best_model: dict | None = None  # state_dict (on CPU) of the best evaluation so far
    history: list = field(default_factory=list)  # one entry per evaluation
    wall_seconds: float = 0.0
    train_seconds: float = 0.0
    train_tokens: int = 0
    train_examples: int = 0
    last_terms: dict = field(default_factory=dict)  # mean loss terms over the last evaluation window

    def as_dict(self) -> dict:  # shallow: the best weights are not copied
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "LoopState":
        return cls(**{f.name: d[f.name] for f in fields(cls)})


class NonFiniteLossError(ValueError):
    """The training loss became NaN or inf: the run stops and keeps nothing that looks finished."""


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                   eps: float = TrainConfig.adam_epsilon) -> torch.optim.AdamW:
    # Recipe: no weight decay on biases and LayerNorm weights.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    # fused: one kernel for the whole update (CPU and CUDA); 5.6x faster than the per-tensor loop on this CPU,
    # the same update to float rounding (bench/results/ab_step_mrpc.json)
    fused = all(p.device.type in ("cpu", "cuda") for p in decay + no_decay)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, eps=eps, fused=fused)


def linear_schedule(opt, warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def predict(model, data: Encoded, batch_size: int, device) -> np.ndarray:
    """Logits for every example, in the data's order."""
    model.eval()
    out = [None] * len(data)
    for idx in eval_batches(data, batch_size):
        batch = to_device(collate(data, idx), device)
        logits = model(**inputs_for(model, batch)).logits.float().cpu().numpy()
        for row, i in enumerate(idx):
            out[i] = logits[row]
    return np.stack(out) if out else np.zeros((0, 1))


def evaluate(model, task: Task, eval_sets: dict[str, Encoded], batch_size: int, device,
             predictions: dict | None = None) -> dict[str, float]:
    """The task's metrics on every split; `predictions`, when given, receives each split's predictions (class
    ids, or scores for regression)."""
    per_split = {}
    for split, data in eval_sets.items():
        logits = predict(model, data, batch_size, device)
        preds = logits[:, 0] if task.is_regression else logits.argmax(-1)
        per_split[split] = (preds, data.labels)
        if predictions is not None:
            predictions[split] = preds
    return task_metrics(task, per_split)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train_step(model, batch: dict, loss_fn: LossFn, opt, max_grad_norm: float, sched=None,
               precision: str = "fp32") -> tuple[torch.Tensor, dict[str, float]]:
    """One optimizer step on one batch: forward and loss (under bf16 autocast for precision "bf16"), backward,
    clipping, update (and schedule step). Used by the training loop and by the benchmarks in bench/."""
    model.train()
    with autocast(precision, batch["attention_mask"].device):  # backward and the optimizer step stay outside
        loss, terms = loss_fn(model, batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    opt.step()
    if sched is not None:
        sched.step()
    return loss, terms


def step_timer(model, loss_fn: LossFn, train_data: Encoded, cfg: TrainConfig, device) -> Callable[[str], None]:
    """`step(precision)`: one real training step of the run about to start (its student, loss, batches of its
    first epoch, in turn) on a copy of the student with its own optimizer, for `--precision auto` to time. The
    run itself is untouched: the copy is thrown away and every random generator is restored after each step."""
    import copy

    trial = copy.deepcopy(model).to(device)
    opt = make_optimizer(trial, cfg.lr, cfg.weight_decay, cfg.adam_epsilon)
    order = train_batches(train_data, cfg.batch_size, cfg.seed, 0, cfg.group_by_length)
    calls = [0]

    def step(precision: str) -> None:
        idx = order[(calls[0] // 2) % len(order)]  # each fp32/bf16 pair of calls gets the same batch
        calls[0] += 1
        batch = to_device(collate(train_data, idx), device)
        batch["index"] = torch.tensor(idx)
        rng = _rng_state()
        try:
            train_step(trial, batch, loss_fn, opt, cfg.max_grad_norm, precision=precision)
        finally:
            _set_rng_state(rng)

    return step


def resolve_training_precision(cfg: TrainConfig, device, model, loss_fn: LossFn, train_data: Encoded,
                               resume_state: dict | None, what: str):
    """The run's precision (xtc.precision.PrecisionChoice): a resumed `auto` run keeps what it chose; a new one
    measures its own step (or reuses this machine's cached measurement)."""
    from xtc.precision import PrecisionChoice

    if cfg.precision == "auto" and resume_state is not None:
        saved = resume_state["run_config"]["precision"]
        return PrecisionChoice(saved, f"auto: {saved}, kept from the interrupted run this one resumes",
                               {"source": "resumed", "from_cache": False})
    return resolve_precision(cfg.precision, device, lambda: step_timer(model, loss_fn, train_data, cfg, device),
                             measured_with=what)


def evaluation_steps(total_steps: int, eval_points: int) -> set[int]:
    """The global steps of `eval_points` evaluations at equal fractions k/K of `total_steps` (rounded)."""
    return {max(1, int(k * total_steps / eval_points + 0.5)) for k in range(1, eval_points + 1)}


def train(model, stages: list[Stage], train_data: Encoded, eval_sets: dict[str, Encoded], task: Task,
          cfg: TrainConfig, out_dir: str, run_config: dict, device, resume_state: dict | None = None,
          quiet: bool = False, diagnostics=None, validation: Encoded | None = None) -> dict:
    """Run every stage; return a summary (selected and final metrics, history, throughput). The checkpoint
    with the best `validation` score (dev's when there is no validation split) is left loaded in `model`; dev
    is evaluated and reported at every evaluation. A checkpoint is written at every evaluation so an
    interrupted run resumes exactly. `diagnostics` (an xtc.diagnostics.RunDiagnostics) adds its records to
    every evaluation."""
    model.to(device)
    precision = resolve_precision(cfg.precision, device).precision  # callers pass it resolved; "auto" also works
    steps_per_epoch = math.ceil(len(train_data) / cfg.batch_size)
    stage_steps = [max(1, math.ceil(s.epochs * steps_per_epoch)) for s in stages]
    total_steps = sum(stage_steps)  # one budget, however many stages
    eval_at = evaluation_steps(total_steps, cfg.eval_points) if cfg.eval_points else None
    use_compile, compile_reason = resolve_compile(cfg.compile, device, sum(stage_steps))
    loss_fns = [CompiledLoss(s.loss_fn, model, device) if use_compile else s.loss_fn for s in stages]
    checkpoints = Checkpoints(out_dir, resumed=resume_state is not None)  # the run folder: xtc/run_folder.py
    loop = LoopState()
    if resume_state is not None:
        loop = LoopState.from_dict(resume_state)
        model.load_state_dict(resume_state["model"])
    bar = tqdm(total=sum(stage_steps), initial=loop.global_step, disable=quiet or not sys.stderr.isatty(),
               desc=task.name, unit="step")
    log = bar.write if not bar.disable else lambda msg: print(msg, file=sys.stderr, flush=True)
    t_start = time.perf_counter() - loop.wall_seconds

    while loop.stage < len(stages):
        stage, total = stages[loop.stage], stage_steps[loop.stage]
        opt = make_optimizer(model, cfg.lr * stage.lr_factor, cfg.weight_decay, cfg.adam_epsilon)
        sched = linear_schedule(opt, min(total, round(cfg.warmup_epochs * steps_per_epoch)), total)
        if resume_state is not None and resume_state["stage"] == loop.stage and resume_state.get("optimizer"):
            opt.load_state_dict(resume_state["optimizer"])
            sched.load_state_dict(resume_state["scheduler"])
            _set_rng_state(resume_state["rng"])
        resume_state = None
        bar.set_description(f"{task.name} {stage.name}")
        window: dict[str, list[float]] = {}  # loss terms since the last evaluation
        epoch_batches, cached_epoch = None, -1
        while loop.stage_step < total:
            epoch, pos = divmod(loop.stage_step, steps_per_epoch)
            if epoch != cached_epoch:  # batch order is a pure function of (seed, stage, epoch)
                epoch_batches = train_batches(train_data, cfg.batch_size, cfg.seed + 7919 * loop.stage, epoch,
                                              cfg.group_by_length)
                cached_epoch = epoch
            t0 = time.perf_counter()
            batch = to_device(collate(train_data, epoch_batches[pos]), device)
            batch["index"] = torch.tensor(epoch_batches[pos])  # which examples: for a teacher-output cache
            if diagnostics is not None and loop.global_step == 0:  # the KD terms' gradients, before any update
                diagnostics.first_batch(model, batch, precision)
            loss, terms = train_step(model, batch, loss_fns[loop.stage], opt, cfg.max_grad_norm, sched, precision)
            if not math.isfinite(float(loss.detach())):  # a diverged run cannot recover: stop, keep nothing
                checkpoints.discard()
                raise NonFiniteLossError(f"the training loss became {float(loss.detach())} at step "
                                         f"{loop.global_step + 1} ({stage.name}); nothing was kept. Lower --lr "
                                         f"(now {cfg.lr * stage.lr_factor:g}) or check the data and the model")
            loop.train_seconds += time.perf_counter() - t0
            loop.train_tokens += int(batch["attention_mask"].sum())
            loop.train_examples += len(epoch_batches[pos])
            for k, v in {"loss": float(loss.detach()), **terms}.items():
                window.setdefault(k, []).append(float(v))
            loop.stage_step += 1
            loop.global_step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{window['loss'][-1]:.4f}")
            if _evaluation_due(loop, eval_at, total, steps_per_epoch, cfg.eval_every):
                loop.last_terms = {k: float(np.mean(v)) for k, v in window.items()}
                window = {}
                entry = _evaluation(model, task, eval_sets, validation, cfg, device, loop, stage, steps_per_epoch,
                                    total_steps, sched, diagnostics)
                if not quiet:  # one line per evaluation: readable in a terminal and in workflow logs
                    log(_evaluation_line(task, stage, loop, entry))
                loop.wall_seconds = time.perf_counter() - t_start
                _checkpoint(checkpoints, loop, model, opt, sched, run_config)
        loop.stage += 1
        loop.stage_step = 0
    bar.close()
    # keep the selected checkpoint in `model`; report it and the final one
    selection = _keep_selected(model, loop, task, eval_sets, cfg, device, validation)
    return {
        **selection, "history": loop.history, "final_loss_terms": loop.last_terms,
        "wall_seconds": time.perf_counter() - t_start,
        "train_seconds": loop.train_seconds, "train_tokens": loop.train_tokens,
        "train_samples_per_second": loop.train_examples / max(loop.train_seconds, 1e-9),
        "train_tokens_per_second": loop.train_tokens / max(loop.train_seconds, 1e-9),
        "steps": loop.global_step, "steps_per_epoch": steps_per_epoch,
        "compile": {"used": use_compile and not any(getattr(f, "failed", None) for f in loss_fns),
                    "reason": compile_reason, "mode": getattr(loss_fns[0], "mode", None),
                    "failed": next((f.failed for f in loss_fns if getattr(f, "failed", None)), None)},
    }


def _evaluation_due(loop: LoopState, eval_at: set[int] | None, stage_total: int, steps_per_epoch: int,
                    eval_every: int) -> bool:
    """With eval_points: at K equal fractions of the whole run, nowhere else; else every eval_every steps and at
    each epoch end."""
    if eval_at is not None:
        return loop.global_step in eval_at
    end_of_epoch = loop.stage_step % steps_per_epoch == 0 or loop.stage_step == stage_total
    return end_of_epoch or bool(eval_every and loop.stage_step % eval_every == 0)


def _evaluation_line(task: Task, stage: Stage, loop: LoopState, entry: dict) -> str:
    return (f"[{task.name} {stage.name}] step {loop.global_step} epoch {entry['epoch']:.2f} "
            f"loss {loop.last_terms['loss']:.4f} " + " ".join(f"{k} {v:.4f}" for k, v in entry["metrics"].items())
            + "".join(f" validation {k} {v:.4f}" for k, v in entry.get("validation", {}).items()))


def _keep_selected(model, loop: LoopState, task: Task, eval_sets: dict[str, Encoded], cfg: TrainConfig, device,
                   validation: Encoded | None) -> dict:
    """Load the selected checkpoint into `model` (which holds the final one: the last step is always evaluated)
    and return both checkpoints' dev metrics and predictions."""
    final = loop.history[-1]
    final_predictions = dev_predictions(model, task, eval_sets, cfg.eval_batch_size, device)
    model.load_state_dict(loop.best_model)
    best = next(h for h in loop.history if h["step"] == loop.best_step)
    selected_predictions = (final_predictions if loop.best_step == final["step"] else
                            dev_predictions(model, task, eval_sets, cfg.eval_batch_size, device))
    return {"metrics": best["metrics"], "selected_by": "dev" if validation is None else "validation",
            "validation_metrics": best.get("validation"), "best_step": loop.best_step,
            "final_metrics": final["metrics"], "final_step": final["step"],
            "predictions": {"selected": selected_predictions, "final": final_predictions}}


def dev_predictions(model, task: Task, eval_sets: dict[str, Encoded], batch_size: int, device) -> dict:
    """Every dev split's predictions as JSON lists: class ids, or scores for regression."""
    out = {}
    for split, data in eval_sets.items():
        logits = predict(model, data, batch_size, device)
        out[split] = [float(x) for x in logits[:, 0]] if task.is_regression else [int(x) for x in logits.argmax(-1)]
    return out


def _evaluation(model, task: Task, eval_sets, validation: Encoded | None, cfg: TrainConfig, device,
                loop: LoopState, stage: Stage, steps_per_epoch: int, total_steps: int, sched,
                diagnostics=None) -> dict:
    """Evaluate (dev, and the validation split that selects), append the history entry and keep the weights
    when they are the best so far."""
    predictions: dict = {}  # filled for the diagnostics only (the dev predictions' class counts)
    metrics = (evaluate(model, task, eval_sets, cfg.eval_batch_size, device) if diagnostics is None else
               evaluate(model, task, eval_sets, cfg.eval_batch_size, device, predictions=predictions))
    entry = {"stage": stage.name, "step": loop.global_step, "fraction": round(loop.global_step / total_steps, 4),
             "epoch": round(loop.stage_step / steps_per_epoch, 4), "lr": sched.get_last_lr()[0],
             "train": loop.last_terms, "metrics": metrics}
    if validation is not None:
        entry["validation"] = evaluate(model, task, {"validation": validation}, cfg.eval_batch_size, device)
    if diagnostics is not None:
        entry["diagnostics"] = diagnostics.at_evaluation(
            model, task, metrics, predictions,
            lambda m, sets: evaluate(m, task, sets, cfg.eval_batch_size, device))
    loop.history.append(entry)
    score = entry.get("validation", metrics)[task.selection_metric]
    if score > loop.best_metric:
        loop.best_metric, loop.best_step = score, loop.global_step
        loop.best_model = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return entry


def _checkpoint(checkpoints: Checkpoints, loop: LoopState, model, opt, sched, run_config: dict) -> None:
    """Save everything an exact resume needs (no pickle: xtc/checkpoint.py)."""
    state = dict(loop.as_dict(), run_config=run_config, model=model.state_dict(), optimizer=opt.state_dict(),
                 scheduler=sched.state_dict(), rng=_rng_state())
    checkpoints.save(state, loop.global_step)  # atomic: a kill mid-write leaves the previous checkpoint intact
