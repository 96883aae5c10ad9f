"""Why a student stalls: the diagnostics every run records at each evaluation (metrics.json, `history[i]
["diagnostics"]`), none of which changes what is trained.

- changed codes: per quantized role (query, key, value, attn_out, ffn_in, ffn_out, word_embeddings), the share of
  weight codes that differ from the codes of the weights the run started from: sign flips for 1-bit weights,
  ternary or k-bit code changes for 2+ bits. The starting codes are recomputed from the student as built
  (a deterministic copy of the teacher or of --init), so a resumed run compares against the same codes.
- train-vs-dev gap: the selection metric on a fixed sample of training examples (TrainConfig.train_eval_examples,
  drawn with a fixed seed, the same sample for every run of a task and training set) minus the dev score.
- predicted class counts on each dev split (classification): a student that predicts one class shows it here.
- KD gradient shares: once, on the first training batch, one backward per KD term of the first stage: the L2 norm
  of that (weighted) term's gradient on the encoder's parameters, and its share of the sum of those norms. It
  runs on a copy of the RNG state (the same dropout masks the first step then uses) and leaves no gradient
  behind, so the training numbers are those of a run without it.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from xtc.arch import layer_list
from xtc.data import Encoded, collate
from xtc.precision import autocast
from xtc.quant import quantize_weight_codes, quantized_modules, role_of

TRAIN_SAMPLE_SEED = 0  # one sample per (task, training set), whatever the run's seed


def weight_codes(model: torch.nn.Module) -> dict[str, tuple[str, torch.Tensor]]:
    """{module name: (role, int8 codes of its latent weight, on CPU)} of every quantized weight (bits < 32)."""
    out = {}
    for name, m in quantized_modules(model):
        if m.wbits < 32 and not m.frozen:
            codes, _ = quantize_weight_codes(m.weight.detach(), m.wbits, m.groups, m.method)
            out[name] = (role_of(name), codes.cpu())
    return out


def changed_code_shares(initial: dict[str, tuple[str, torch.Tensor]], model: torch.nn.Module) -> dict[str, float]:
    """Per role, the share of the weight codes of `model` that differ from `initial` (weight_codes of the start)."""
    changed: dict[str, int] = {}
    total: dict[str, int] = {}
    now = weight_codes(model)
    for name, (role, codes) in initial.items():
        changed[role] = changed.get(role, 0) + int((now[name][1] != codes).sum())
        total[role] = total.get(role, 0) + codes.numel()
    return {role: changed[role] / total[role] for role in total}


def train_sample(data: Encoded, n: int, seed: int = TRAIN_SAMPLE_SEED) -> Encoded | None:
    """A fixed random sample of `n` training examples (all of them when there are fewer), or None for n = 0."""
    if n <= 0 or len(data) == 0:
        return None
    idx = sorted(np.random.default_rng(seed).permutation(len(data))[:n].tolist())
    return Encoded([data.input_ids[i] for i in idx], [data.token_type_ids[i] for i in idx],
                   [data.labels[i] for i in idx], data.regression)


def predicted_counts(predictions: dict[str, np.ndarray], labels: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """{split: {label name: how many examples were predicted as it}} from class-id predictions."""
    return {split: {name: int((np.asarray(p) == i).sum()) for i, name in enumerate(labels)}
            for split, p in predictions.items()}


def _encoder_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The trainable parameters of the encoder's layers (whatever the architecture calls its layer list)."""
    return [p for p in layer_list(model).parameters() if p.requires_grad]


def kd_gradient_norms(model: torch.nn.Module, batch: dict, term_losses: dict[str, Callable],
                      precision: str = "fp32") -> dict:
    """For each KD term (a loss function of that term alone, weighted as in training), the L2 norm of its gradient
    on the encoder's parameters for `batch`, and its share of the sum of the norms. Every forward starts from the
    RNG state of the call, which is restored at the end; no gradient is left on the model."""
    params = _encoder_params(model)
    devices = [batch["attention_mask"].device] if batch["attention_mask"].device.type == "cuda" else []
    norms = {}
    was_training = model.training
    with torch.random.fork_rng(devices=devices):
        cpu_state = torch.get_rng_state()
        cuda_states = [torch.cuda.get_rng_state(d) for d in devices]
        for term, loss_fn in term_losses.items():
            torch.set_rng_state(cpu_state)
            for d, s in zip(devices, cuda_states):
                torch.cuda.set_rng_state(s, d)
            model.train()
            with autocast(precision, batch["attention_mask"].device):
                loss, _ = loss_fn(model, batch)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            norms[term] = math.sqrt(sum(float(g.detach().float().pow(2).sum()) for g in grads if g is not None))
    model.train(was_training)
    total = sum(norms.values())
    return {"norms": norms, "shares": {t: (v / total if total > 0 else 0.0) for t, v in norms.items()},
            "parameters": "encoder"}


class RunDiagnostics:
    """What a run records beside its dev metrics. Built before training from the student as it starts
    (`initial_codes`); `train` calls `first_batch` once, before its first step, and `at_evaluation` at every
    evaluation."""

    def __init__(self, model: torch.nn.Module, train_data: Encoded, sample_size: int,
                 term_losses: dict[str, Callable] | None = None):
        self.initial_codes = weight_codes(model)
        self.sample = train_sample(train_data, sample_size)
        self.term_losses = term_losses or {}
        self.kd_gradient: dict | None = None  # from first_batch, recorded with the next evaluation

    def first_batch(self, model, batch: dict, precision: str) -> None:
        if self.term_losses:
            self.kd_gradient = kd_gradient_norms(model, batch, self.term_losses, precision)

    def at_evaluation(self, model, task, dev_metrics: dict[str, float], dev_predictions: dict[str, np.ndarray],
                      evaluate: Callable) -> dict:
        """The history entry's `diagnostics`; `evaluate(model, {name: Encoded})` scores a split as the run does."""
        out: dict = {}
        if self.initial_codes:
            out["changed_codes"] = changed_code_shares(self.initial_codes, model)
        if self.sample is not None:
            train_metrics = evaluate(model, {"train": self.sample})
            sel = task.selection_metric
            out["train_sample"] = len(self.sample)
            out["train_metrics"] = train_metrics
            out["gap"] = train_metrics[sel] - dev_metrics[sel]
        if not task.is_regression:
            out["predicted_counts"] = predicted_counts(dev_predictions, task.labels)
        if self.kd_gradient is not None:
            out["kd_gradient"], self.kd_gradient = self.kd_gradient, None
        return out
