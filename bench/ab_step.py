"""A/B of the step optimisations kept in xtc: each against the code it replaced, interleaved on one machine.

The cached QAT+KD step (W1A8, one-stage KD with logit+hidden+attention terms, teacher outputs from the cache,
as `xtc compress` runs it) in four variants, each training its own copy of the student on the same batches:
  before        the replaced code: fake quantization through int8 codes (weights dequantized in fp32, then
                cast by autocast), the 6-pass activation quantizer, the per-tensor AdamW loop
  fused_quant   today's fake quantization (select +-a straight in the matmul dtype; in-place activation maths)
  fused_adamw   today's fused AdamW kernel
  after         both (what xtc runs now)
Prints and writes median step times and the median per-round ratio to `before`.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python bench/ab_step.py --teacher /work/teachers/mrpc \
        --glue-dir /work/shared/glue --precision bf16 --out bench/results/ab_step_mrpc_bf16.json
"""
from __future__ import annotations

import argparse
import copy
import os
import random

import numpy as np
import torch
from common import emit, frozen_teacher, full_depth_cache, task_data, timed_step

from xtc.data import train_batches
from xtc.distill import KDConfig, make_kd_loss
from xtc.quant import (QuantLinear, QuantSpec, activation_scale, apply_quantization, dequantize_codes,
                       quantize_weight_codes, quantized_modules)
from xtc.train import make_optimizer, set_seed


class _ReplacedWeightSTE(torch.autograd.Function):
    """The replaced weight path: int8 codes, dequantized in w's dtype (autocast then casts for the matmul)."""
    @staticmethod
    def forward(ctx, w, bits, groups, method):
        codes, scales = quantize_weight_codes(w, bits, groups, method)
        return dequantize_codes(codes, scales, bits, groups, method, dtype=w.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None, None


class _ReplacedActSTE(torch.autograd.Function):
    """The replaced activation quantizer (an fp32 copy of x for the scale, 6 passes for the values)."""
    @staticmethod
    def forward(ctx, x, bits, per_token):
        s = activation_scale(x.to(torch.float32), bits, per_token)
        q = torch.round(x.to(torch.float32) / s).clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        return (q * s).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


class ReplacedQuantLinear(QuantLinear):
    """QuantLinear with the two training-forward quantizers it had before the fused ones (its public
    override points, fake_quant_input and fake_quant_weight)."""

    def fake_quant_input(self, x):
        return x if self.abits == 32 else _ReplacedActSTE.apply(x, self.abits, self.act_per_token)

    def fake_quant_weight(self, w):
        return _ReplacedWeightSTE.apply(w, self.wbits, self.groups, self.method)


def use_replaced_quantizers(model) -> None:
    for _, m in quantized_modules(model):
        if type(m) is QuantLinear:
            m.__class__ = ReplacedQuantLinear


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True)
    p.add_argument("--task", default="mrpc")
    p.add_argument("--glue-dir")
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--max-train-samples", type=int, default=960, help="examples the batches are drawn from")
    p.add_argument("--out")
    a = p.parse_args()
    task, data = task_data(a.task, a.teacher, a.glue_dir, max_train_samples=a.max_train_samples)
    set_seed(0)
    teacher = frozen_teacher(a.teacher)
    terms = ("logit", "hidden", "attention")
    lmap, cache = full_depth_cache(teacher, data, terms)
    loss_fn = make_kd_loss(teacher, task.is_regression, KDConfig(), lmap, cache)(terms)
    base = copy.deepcopy(teacher)
    for q in base.parameters():
        q.requires_grad_(True)
    apply_quantization(base, QuantSpec(wbits=1, abits=8))
    variants = {}
    for name, fq, fa in (("before", False, False), ("fused_quant", True, False), ("fused_adamw", False, True),
                         ("after", True, True)):
        m = copy.deepcopy(base)
        if not fq:
            use_replaced_quantizers(m)
        opt = make_optimizer(m, 5e-5, 0.01)
        if not fa:
            groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in opt.param_groups]
            opt = torch.optim.AdamW(groups, lr=5e-5, fused=False, foreach=False)  # same groups, per-tensor loop
        variants[name] = (m, opt)
    batches = train_batches(data, 32, 0, 0)
    picks = random.Random(1).sample(range(len(batches)), min(a.rounds + 1, len(batches)))
    for m, opt in variants.values():  # warm-up
        timed_step(m, opt, loss_fn, data, batches[picks[0]], precision=a.precision)
    secs = {k: [] for k in variants}
    for r, i in enumerate(picks[1:]):
        for k in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
            m, opt = variants[k]
            secs[k].append(timed_step(m, opt, loss_fn, data, batches[i], precision=a.precision)[0])
    before = np.array(secs["before"])
    out = {"task": task.name, "precision": a.precision, "rounds": len(picks) - 1, "torch_threads": torch.get_num_threads(),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "load_average_1min_at_end": os.getloadavg()[0],
           "variants": {k: {"step_seconds_median": float(np.median(v)),
                            "ratio_to_before_median": float(np.median(np.array(v) / before))}
                        for k, v in secs.items()}}
    emit(out, a.out)


if __name__ == "__main__":
    main()
