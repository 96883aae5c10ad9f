"""The parts of a BERT-family encoder XTC works on, per architecture family: the encoder's layer list (layer
reduction), the Linear modules of each quantization role, the word embeddings, whether pre-softmax attention
scores can be captured for KD, and whether the model reads token-type ids.

A family is recognised from the model's own modules, not from its name alone: `architecture_of(model)`
takes the family of `config.model_type` when it is known, else the first family whose layer list and roles
are all present, and checks that every role resolves to a module of the right type. A model no family maps
is refused with one line naming what is missing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

# role -> pattern on a module name (relative to the whole model); the same roles as xtc.config.ROLES
_BERT_ROLES = {
    "query": r"(^|\.)attention\.self\.query$",
    "key": r"(^|\.)attention\.self\.key$",
    "value": r"(^|\.)attention\.self\.value$",
    "attn_out": r"(^|\.)attention\.output\.dense$",
    "ffn_in": r"(^|\.)intermediate\.dense$",
    "ffn_out": r"(^|\.)layer\.\d+\.output\.dense$",
    "word_embeddings": r"(^|\.)embeddings\.word_embeddings$",
}


@dataclass(frozen=True)
class Architecture:
    family: str
    model_types: tuple[str, ...]  # config.model_type values of this family
    layers: str  # the encoder's nn.ModuleList of layers, relative to the base model (model.base_model)
    roles: dict  # role -> regex on module names
    attention_scores: bool = True  # scores reach KD through xtc.distill's registered attention function
    note: str = ""  # what the family lacks, said when it is used

    def role_of(self, module_name: str) -> str | None:
        for role, pat in self.roles.items():
            if re.search(pat, module_name):
                return role
        return None


ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("bert", ("bert",), "encoder.layer", _BERT_ROLES),
    Architecture("roberta", ("roberta", "xlm-roberta", "camembert"), "encoder.layer", _BERT_ROLES),
    Architecture("electra", ("electra",), "encoder.layer", _BERT_ROLES),
    Architecture("distilbert", ("distilbert",), "transformer.layer", {
        "query": r"(^|\.)attention\.q_lin$",
        "key": r"(^|\.)attention\.k_lin$",
        "value": r"(^|\.)attention\.v_lin$",
        "attn_out": r"(^|\.)attention\.out_lin$",
        "ffn_in": r"(^|\.)ffn\.lin1$",
        "ffn_out": r"(^|\.)ffn\.lin2$",
        "word_embeddings": r"(^|\.)embeddings\.word_embeddings$",
    }),
    # DeBERTa-v2/v3 computes its disentangled attention in its own module (no attention-function interface),
    # and returns post-softmax probabilities: its pre-softmax scores cannot be captured without vendoring it
    Architecture("deberta-v2", ("deberta-v2",), "encoder.layer", {
        **_BERT_ROLES,
        "query": r"(^|\.)attention\.self\.query_proj$",
        "key": r"(^|\.)attention\.self\.key_proj$",
        "value": r"(^|\.)attention\.self\.value_proj$",
    }, attention_scores=False, note="DeBERTa-v2 exposes no pre-softmax attention scores: KD uses the logit and "
                                    "hidden-state terms only"),
)
SUPPORTED = ", ".join(a.family for a in ARCHITECTURES)
ROLE_NAMES = tuple(_BERT_ROLES)


def role_of(module_name: str) -> str | None:
    """XTC role of a module name in any supported family (their patterns never overlap), or None."""
    for arch in ARCHITECTURES:
        role = arch.role_of(module_name)
        if role is not None:
            return role
    return None


class UnsupportedModelError(ValueError):
    """A model whose layer list, roles or word embeddings cannot be found."""


def _missing(model: nn.Module, arch: Architecture) -> list[str]:
    """What `arch` needs and `model` lacks (empty: the model maps)."""
    base = getattr(model, "base_model", model)
    try:
        layers = base.get_submodule(arch.layers)
    except AttributeError:
        return [f"an encoder layer list ({type(base).__name__}.{arch.layers})"]
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return [f"an encoder layer list ({type(base).__name__}.{arch.layers} is not a non-empty ModuleList)"]
    found: dict[str, list[tuple[str, nn.Module]]] = {r: [] for r in arch.roles}
    for name, m in model.named_modules():
        role = arch.role_of(name)
        if role is not None:
            found[role].append((name, m))
    missing = []
    for role, hits in found.items():
        want = nn.Embedding if role == "word_embeddings" else nn.Linear
        count = 1 if role == "word_embeddings" else len(layers)
        if len(hits) != count or not all(isinstance(m, want) for _, m in hits):
            missing.append(f"{role} ({count} {want.__name__} matching {arch.roles[role]!r}, found {len(hits)})")
    return missing


def architecture_of(model: nn.Module) -> Architecture:
    """The family of `model` with every part checked; UnsupportedModelError (one line) when none maps."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    known = [a for a in ARCHITECTURES if model_type in a.model_types]
    candidates = known or list(ARCHITECTURES)
    best = None
    for arch in candidates:
        missing = _missing(model, arch)
        if not missing:
            return arch
        if best is None or len(missing) < len(best[1]):
            best = (arch, missing)
    arch, missing = best
    what = f"a {model_type!r} model ({type(model).__name__})"
    raise UnsupportedModelError(f"{what} cannot be mapped for XTC: it lacks {'; '.join(missing)} "
                                f"(closest family: {arch.family}). xtc maps BERT-family encoders: {SUPPORTED}")


def layer_list(model: nn.Module) -> nn.ModuleList:
    """The encoder's layers of `model` (its base model's)."""
    return model.base_model.get_submodule(architecture_of(model).layers)


def set_layer_list(model: nn.Module, layers: nn.ModuleList) -> None:
    parent, _, attr = architecture_of(model).layers.rpartition(".")
    setattr(model.base_model.get_submodule(parent), attr, layers)


def uses_token_types(model: nn.Module) -> bool:
    """Whether the model reads token-type ids: a token-type embedding with at least two rows (BERT, ELECTRA).
    RoBERTa (one row), DistilBERT and DeBERTa-v2 (none) get no token_type_ids, so a tokenizer that writes
    segment ids 1 for a sentence pair never indexes past their table."""
    emb = getattr(getattr(model, "base_model", model), "embeddings", None)
    table = getattr(emb, "token_type_embeddings", None)
    return isinstance(table, nn.Embedding) and table.num_embeddings > 1


def inputs_for(model: nn.Module, batch: dict) -> dict:
    """The keys of `batch` that `model` takes (token_type_ids only where it reads them; no labels, no index)."""
    keep = ("input_ids", "attention_mask", "token_type_ids") if uses_token_types(model) else (
        "input_ids", "attention_mask")
    return {k: v for k, v in batch.items() if k in keep}
