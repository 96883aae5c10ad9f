"""Teacher outputs computed once per run instead of once per training step.

The teacher is frozen, so its logits, hidden states and attention scores for a training example never change.
Over E epochs a live teacher runs E forward passes per example; the cache runs one, in a fixed order (length-
sorted, fixed batch size), before training starts. A resumed run rebuilds exactly the same cache, so resume
stays exact. Only what the KD terms and the layer map use is kept, unpadded, in fp32 on the CPU; a batch's
targets are gathered and padded on demand. Values match the live teacher to float rounding (the teacher sees
each example beside other examples and other padding widths than in training).

`plan_cache` decides whether caching pays (at least one epoch over the set) and fits the memory budget.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from xtc.data import Encoded, collate, eval_batches
from xtc.distill import LayerMap, ModelInternals, forward_with_internals

BYTES = 4  # fp32: the cached targets are the teacher's exact outputs


@dataclass
class CachePlan:
    use: bool
    reason: str
    bytes: int  # estimated size of the cache


def plan_cache(data: Encoded, teacher_config, layer_map: LayerMap, terms: set[str], teacher_epochs: float,
               budget_gb: float) -> CachePlan:
    """Cache when the teacher would otherwise see each example at least once more and the cache fits."""
    n_tokens = sum(data.lengths)
    size = len(data) * teacher_config.num_labels * BYTES
    if "hidden" in terms:
        size += len({j for _, j in layer_map.hidden}) * n_tokens * teacher_config.hidden_size * BYTES
    if "attention" in terms:
        size += (len({j for _, j in layer_map.attention}) * teacher_config.num_attention_heads
                 * sum(n * n for n in data.lengths) * BYTES)
    if budget_gb <= 0:
        return CachePlan(False, "disabled (--teacher-cache-gb 0)", size)
    if teacher_epochs < 1:
        return CachePlan(False, f"under one epoch of KD ({teacher_epochs:.3g}): a live teacher costs less", size)
    if size > budget_gb * 2**30:
        return CachePlan(False, f"needs {size / 2**30:.2f} GiB, over --teacher-cache-gb {budget_gb:g}", size)
    return CachePlan(True, f"{size / 2**30:.2f} GiB", size)


class TeacherCache:
    """Unpadded teacher outputs for every example of `data`; `lookup` returns a batch's as ModelInternals."""

    def __init__(self, teacher, data: Encoded, layer_map: LayerMap, terms: set[str], device, batch_size: int,
                 quiet: bool):
        self.hidden_ids = sorted({j for _, j in layer_map.hidden}) if "hidden" in terms else []
        self.attention_ids = sorted({j for _, j in layer_map.attention}) if "attention" in terms else []
        self.n_layers = teacher.config.num_hidden_layers  # the live forward returns n + 1 hidden states, n attentions
        n, d = len(data), teacher.config.hidden_size
        lengths = torch.tensor(data.lengths)
        self.starts = torch.cumsum(lengths, 0) - lengths  # example i's first token in the flat token store
        self.lengths = lengths
        total = int(lengths.sum())
        self.logits = torch.empty(n, teacher.config.num_labels)
        # one zero row at the end: padding positions gather it
        self.hidden = torch.zeros(len(self.hidden_ids), total + 1, d) if self.hidden_ids else None
        self.attention: list[torch.Tensor | None] = [None] * n if self.attention_ids else []
        teacher.eval()
        batches = eval_batches(data, batch_size)
        bar = tqdm(batches, desc="teacher cache", unit="batch", disable=quiet or not sys.stderr.isatty())
        with torch.inference_mode():
            for idx in bar:
                batch = {k: v.to(device) for k, v in collate(data, idx).items() if k != "labels"}
                out = forward_with_internals(teacher, batch, attentions=bool(self.attention_ids),
                                             hidden=bool(self.hidden_ids))
                self.logits[idx] = out.logits.float().cpu()
                hs = [out.hidden_states[j].float().cpu() for j in self.hidden_ids]
                att = [out.attention_scores[j].float().cpu() for j in self.attention_ids]
                for row, i in enumerate(idx):
                    L, s = data.lengths[i], int(self.starts[i])
                    for h, t in enumerate(hs):
                        self.hidden[h, s:s + L] = t[row, :L]
                    if att:
                        self.attention[i] = torch.stack([a[row, :, :L, :L] for a in att])
        self.pad_row = total

    @property
    def nbytes(self) -> int:
        """Bytes held (what `plan_cache` estimates; the one zero padding row not counted)."""
        hidden = self.hidden[:, :-1].numel() if self.hidden is not None else 0
        return (self.logits.numel() + hidden + sum(a.numel() for a in self.attention)) * BYTES

    def lookup(self, index: torch.Tensor, width: int, device, need_hidden: bool = True,
               need_attention: bool = True) -> ModelInternals:
        """The teacher's outputs for examples `index`, padded to `width` (pads are zeros; KD masks them).
        `need_*` False skips gathering what a stage does not use (e.g. the logit stage of two-stage KD)."""
        index = index.cpu()
        logits = self.logits[index].to(device)
        hidden = None
        if need_hidden and self.hidden is not None:
            pos = torch.arange(width)
            flat = self.starts[index, None] + pos  # (B, width)
            flat = torch.where(pos < self.lengths[index, None], flat, torch.full_like(flat, self.pad_row))
            got = self.hidden[:, flat.view(-1)].view(len(self.hidden_ids), len(index), width, -1).to(device)
            hidden = [None] * (self.n_layers + 1)
            for h, j in enumerate(self.hidden_ids):
                hidden[j] = got[h]
            hidden = tuple(hidden)
        attention = None
        if need_attention and self.attention_ids:
            heads = self.attention[int(index[0])].shape[1]
            got = torch.zeros(len(self.attention_ids), len(index), heads, width, width)
            for row, i in enumerate(index.tolist()):
                L = int(self.lengths[i])
                got[:, row, :, :L, :L] = self.attention[i]
            got = got.to(device)
            attention = [None] * self.n_layers
            for a, j in enumerate(self.attention_ids):
                attention[j] = got[a]
            attention = tuple(attention)
        return ModelInternals(logits, hidden, attention)
