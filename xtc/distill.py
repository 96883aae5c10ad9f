"""Layer reduction and knowledge distillation for XTC (see shared/xtc-recipe.md).

- evenly_spaced_layers / parse_layer_list / reduce_layers: build a k-layer student by copying teacher layers.
- forward_with_internals: one forward pass returning logits, hidden states and pre-softmax attention scores.
- layer_maps: which student layer/hidden state is matched to which teacher one.
- kd_loss / soft_cross_entropy / label_loss: the distillation and "no KD" losses.
- make_kd_loss / label_objective: the training objectives built from them (a stage's loss function).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from xtc.arch import inputs_for, layer_list, set_layer_list
from xtc.config import TERMS, KDConfig
from xtc.precision import full_precision

# -----------------------------------------------------------------------------
# layer reduction


def evenly_spaced_layers(n_teacher: int, k: int) -> list[int]:
    """k evenly spaced 0-indexed teacher layers; 12->6 gives [1,3,5,7,9,11], 12->5 gives [2,4,6,8,10]."""
    if not 1 <= k <= n_teacher:
        raise ValueError(
            f"cannot pick {k} layers from a {n_teacher}-layer teacher: the student depth must be in 1..{n_teacher}"
        )
    # centre the evenly spaced picks; this reproduces the published 12->6 and 12->5 lists
    step = n_teacher // k
    start = (n_teacher - step * (k - 1)) // 2
    return [start + step * i for i in range(k)]


def parse_layer_list(text_or_list, n_teacher: int) -> list[int]:
    """Parse "1,3,5" (or a list of ints) into a validated, strictly increasing list of teacher layers."""
    if isinstance(text_or_list, str):
        parts = [p.strip() for p in text_or_list.split(",")]
        parts = [] if parts == [""] else parts
    else:
        parts = list(text_or_list)
    fix = f'give comma-separated, strictly increasing 0-indexed teacher layers in 0..{n_teacher - 1}, e.g. "1,3,5"'
    if not parts:
        raise ValueError(f"empty layer list: {fix}")
    layers = []
    for p in parts:
        # bool is an int subclass and floats like 1.0 would silently pass int(); reject both
        if isinstance(p, bool) or isinstance(p, float):
            raise ValueError(f"layer {p!r} is not an integer: {fix}")
        try:
            layers.append(int(p))
        except (TypeError, ValueError):
            raise ValueError(f"layer {p!r} is not an integer: {fix}") from None
    bad = [l for l in layers if not 0 <= l < n_teacher]
    if bad:
        raise ValueError(f"layer(s) {bad} out of range for a {n_teacher}-layer teacher: {fix}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"repeated layer(s) in {layers}: {fix}")
    if layers != sorted(layers):
        raise ValueError(f"layers {layers} are not strictly increasing: {fix}")
    return layers


def reduce_layers(teacher_model: nn.Module, layers) -> nn.Module:
    """Copy of a sequence classifier keeping only encoder layers `layers` (embeddings/pooler/head kept); the
    layer list is the architecture's (xtc.arch)."""
    layers = parse_layer_list(layers, teacher_model.config.num_hidden_layers)
    student = copy.deepcopy(teacher_model)
    kept = [layer_list(student)[t] for t in layers]
    set_layer_list(student, nn.ModuleList(kept))
    # one config object is shared by all submodules (deepcopy keeps the sharing), so this updates them all;
    # num_hidden_layers matters at runtime: output capture sizes the hidden-state tuple with it
    student.config.num_hidden_layers = len(layers)
    student.config.xtc_teacher_layers = list(layers)
    # layer_idx indexes caches (decoder use); keep it consistent with the new positions
    for i, layer in enumerate(kept):
        for m in layer.modules():
            if hasattr(m, "layer_idx"):
                m.layer_idx = i
    return student


# -----------------------------------------------------------------------------
# forward pass with internals (pre-softmax attention scores without vendoring the BERT file)

SCORES_IMPL = "xtc_scores"


def _scores_attention_forward(module, query, key, value, attention_mask, *, scaling, dropout, **kwargs):
    """Eager attention that returns the pre-softmax scores (scaled QK^T + additive mask) as its 'weights'.

    BertSelfAttention returns whatever the attention function gives as weights, and output_attentions=True
    records exactly that, so registering this function is all it takes to expose the scores. BERT always
    passes its scaling, and dropout 0 outside training; the mask is eager_mask's additive one (registered below).
    """
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = F.dropout(F.softmax(scores, dim=-1), p=dropout)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return out, scores


AttentionInterface.register(SCORES_IMPL, _scores_attention_forward)
# masks are only built for implementation names known to the mask interface (else None = no padding mask!);
# eager_mask gives the additive float mask (0 / dtype min) our function expects
AttentionMaskInterface.register(SCORES_IMPL, eager_mask)


@dataclass
class ModelInternals:
    logits: torch.Tensor
    hidden_states: tuple | None = None  # (embedding output, layer 1 out, ..., layer n out)
    attention_scores: tuple | None = None  # per layer (B, heads, T, T), pre-softmax, additive mask included


def forward_with_internals(model, batch: dict, attentions: bool, hidden: bool) -> ModelInternals:
    """Run `model` on `batch` (extra keys such as labels are ignored, token types where the model reads none),
    capturing what KD needs."""
    inputs = inputs_for(model, batch)
    prev = model.config._attn_implementation
    if not getattr(model, "_supports_attention_backend", False):  # e.g. DeBERTa-v2: its own attention module
        if attentions:
            raise ValueError(f"{type(model).__name__} computes attention in its own module: its pre-softmax "
                             f"scores cannot be captured; distil it with the logit and hidden terms only")
        out = model(**inputs, output_hidden_states=hidden, return_dict=True)
        return ModelInternals(out.logits, tuple(out.hidden_states) if hidden else None, None)
    # scores need our eager function; otherwise the fused sdpa kernel is faster
    impl = SCORES_IMPL if attentions else "sdpa"
    if impl != prev:
        model.set_attn_implementation(impl)
    try:
        out = model(**inputs, output_attentions=attentions, output_hidden_states=hidden, return_dict=True)
    finally:
        if impl != prev:
            model.set_attn_implementation(prev)
    return ModelInternals(
        logits=out.logits,
        hidden_states=tuple(out.hidden_states) if hidden else None,
        attention_scores=tuple(out.attentions) if attentions else None,
    )


# -----------------------------------------------------------------------------
# layer maps


@dataclass
class LayerMap:
    attention: list[tuple[int, int]]  # (student layer, teacher layer)
    hidden: list[tuple[int, int]]  # (student hidden index, teacher hidden index); index 0 = embedding output


def layer_maps(n_student: int, n_teacher: int, teacher_layers: list[int] | None = None) -> LayerMap:
    """The recipe's student->teacher matching, without (uniform k) or with (list L) layer reduction."""
    if teacher_layers is None:
        if n_student < 1 or n_teacher % n_student:
            raise ValueError(
                f"without a layer list the teacher depth ({n_teacher}) must be a multiple of the student depth "
                f"({n_student}); pass the student's teacher_layers (config.xtc_teacher_layers) instead"
            )
        k = n_teacher // n_student
        attention = [(i, i * k + k - 1) for i in range(n_student)]
        hidden = [(i, i * k) for i in range(n_student + 1)]
        return LayerMap(attention, hidden)
    L = parse_layer_list(teacher_layers, n_teacher)
    if len(L) != n_student:
        raise ValueError(f"teacher_layers {L} has {len(L)} entries but the student has {n_student} layers")
    attention = [(i, t) for i, t in enumerate(L)]
    # recipe: [L[0]-1] + [t+1 for t in L]; when L[0] == 0 that is -1, which would wrap to the last hidden
    # state in Python, so clamp to 0 (the embedding output, which is what the student copies anyway)
    teacher_hidden = [max(L[0] - 1, 0)] + [t + 1 for t in L]
    return LayerMap(attention, list(enumerate(teacher_hidden)))


# -----------------------------------------------------------------------------
# losses




def soft_cross_entropy(student_logits, teacher_logits, T: float = 1.0) -> torch.Tensor:
    """Mean over the batch of -softmax(t/T) . log_softmax(s/T).

    Note: TinyBERT's code uses .mean() over batch AND classes (1/num_classes smaller); we follow the recipe.
    """
    p = F.softmax(teacher_logits / T, dim=-1)
    return -(p * F.log_softmax(student_logits / T, dim=-1)).sum(-1).mean()


def _hidden_mse(s, t, mask):
    # padding positions are excluded: mean over real tokens (and features), so padded batches are not
    # diluted by positions that never influence the real tokens
    if mask is None:
        return F.mse_loss(s, t)
    m = mask.unsqueeze(-1)  # (B, T, 1); an integer or bool mask promotes to s's dtype
    return ((s - t).pow(2) * m).sum() / (m.sum() * s.size(-1)).clamp_min(1)


def _attention_mse(s, t, mask):
    if mask is None:
        # TinyBERT: masked keys carry ~dtype-min scores that would dominate the MSE; zero them in both
        s = torch.where(s <= -1e2, torch.zeros_like(s), s)
        t = torch.where(t <= -1e2, torch.zeros_like(t), t)
        return F.mse_loss(s, t)
    # with the padding mask we can be exact: average over (real query, real key) pairs only. Zero the masked
    # entries before subtracting/squaring so the ~dtype-min values never overflow into inf/NaN.
    m = mask.bool()
    pair = (m[:, None, :, None] & m[:, None, None, :]).expand_as(s)  # (B, heads, T, T)
    d = torch.where(pair, s, 0.0) - torch.where(pair, t, 0.0)
    return d.pow(2).sum() / pair.sum().clamp_min(1)


def kd_loss(
    student: ModelInternals,
    teacher: ModelInternals,
    layer_map: LayerMap,
    cfg: KDConfig,
    regression: bool,
    terms=TERMS,
    attention_mask=None,
):
    """Weighted sum of the requested KD terms; returns (loss, {term: unweighted value as float}).
    Computed in fp32 whatever the models ran in (bf16 would round the squared differences and their sums)."""
    unknown = set(terms) - set(TERMS)
    if unknown or not terms:
        raise ValueError(f"unknown or no KD terms {sorted(unknown) or list(terms)}; choose from {TERMS}")
    with full_precision(student.logits.device.type):
        return _kd_loss(student, teacher, layer_map, cfg, regression, terms, attention_mask)


def _kd_loss(student, teacher, layer_map, cfg, regression, terms, attention_mask):
    loss, logs = 0.0, {}
    if "logit" in terms:
        s_logits, t_logits = student.logits.float(), teacher.logits.float()
        if regression:
            v = F.mse_loss(s_logits, t_logits)
        else:
            # Soft CE minus the teacher's entropy (a constant), i.e. KL: the recipe's gradient exactly, but the
            # logged value is 0 when the student matches the teacher, so it reads as a distance.
            v = soft_cross_entropy(s_logits, t_logits, cfg.temperature) - soft_cross_entropy(
                t_logits, t_logits, cfg.temperature)
        loss = loss + cfg.logit_weight * v
        logs["logit"] = v.item()
    if "hidden" in terms:
        if student.hidden_states is None or teacher.hidden_states is None:
            raise ValueError("the hidden term needs forward_with_internals(..., hidden=True) for both models")
        v = sum(_hidden_mse(student.hidden_states[i].float(), teacher.hidden_states[j].float(), attention_mask)
                for i, j in layer_map.hidden)
        loss = loss + cfg.hidden_weight * v
        logs["hidden"] = v.item()
    if "attention" in terms:
        if student.attention_scores is None or teacher.attention_scores is None:
            raise ValueError("the attention term needs forward_with_internals(..., attentions=True) for both models")
        v = sum(
            _attention_mse(student.attention_scores[i].float(), teacher.attention_scores[j].float(), attention_mask)
            for i, j in layer_map.attention
        )
        loss = loss + cfg.attention_weight * v
        logs["attention"] = v.item()
    return loss, logs


def label_loss(logits, labels, regression: bool) -> torch.Tensor:
    """Plain supervised loss on the labels ("no KD"): cross entropy, or MSE for regression (STS-B); in fp32."""
    with full_precision(logits.device.type):
        logits = logits.float()
        if regression:
            return F.mse_loss(logits.view(-1), labels.to(logits.dtype).view(-1))
        return F.cross_entropy(logits, labels.view(-1))


# -----------------------------------------------------------------------------
# objectives: loss_fn(model, batch) -> (loss, {term: float}), one per training stage


def label_objective(model, batch):
    """Supervised loss on the labels: cross entropy, or MSE for a regression head (STS-B)."""
    out = model(**inputs_for(model, batch))
    loss = label_loss(out.logits, batch["labels"], regression=model.config.num_labels == 1)
    return loss, {"label": float(loss.detach())}


def make_kd_loss(teacher, regression: bool, kd_cfg: KDConfig, layer_map: LayerMap, cache=None):
    """`kd(terms)` gives a stage's loss function. The teacher's outputs come from `cache` (an
    xtc.teacher_cache.TeacherCache built once per run) or from a live forward without gradients, once per
    batch, computing only what the stage's terms need."""
    teacher.eval()

    def kd(terms):
        need_att, need_hidden = "attention" in terms, "hidden" in terms

        def loss_fn(model, batch):
            if cache is not None and "index" in batch:
                t = cache.lookup(batch["index"], batch["input_ids"].shape[1], batch["input_ids"].device,
                                 need_hidden=need_hidden, need_attention=need_att)
            else:
                with torch.no_grad():  # not inference_mode: its tensors could not be saved for backward
                    t = forward_with_internals(teacher, batch, attentions=need_att, hidden=need_hidden)
            s = forward_with_internals(model, batch, attentions=need_att, hidden=need_hidden)
            return kd_loss(s, t, layer_map, kd_cfg, regression, terms, batch["attention_mask"])

        return loss_fn

    return kd
