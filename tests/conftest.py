"""Shared fixtures: a tiny random BERT and a tiny WordPiece tokenizer, built in seconds on CPU."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

WORDS = (
    "the a an is was and or not good bad movie film great awful plot actor man woman dog cat "
    "runs ran sat on mat it this that very really quite boring fun funny sad happy he she they "
    "said says company shares rose fell percent market year today yes no"
).split()


def _vocab() -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789.,'!?-")
    pieces = ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"] + ["##s", "##ing", "##ed"]
    return specials + letters + WORDS + pieces


def tiny_config(num_labels: int = 2, layers: int = 4) -> BertConfig:
    return BertConfig(
        vocab_size=len(_vocab()),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def make_tiny_model_dir(path: str, num_labels: int = 2, layers: int = 4, seed: int = 0) -> str:
    """Save a random tiny BertForSequenceClassification plus tokenizer into `path`."""
    os.makedirs(path, exist_ok=True)
    # transformers 5: the tokenizer takes the vocabulary itself (`vocab=`), not a vocab file path
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(_vocab())}, do_lower_case=True)
    torch.manual_seed(seed)
    model = BertForSequenceClassification(tiny_config(num_labels, layers))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_config()).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    return make_tiny_model_dir(str(tmp_path_factory.mktemp("tiny_bert")))


@pytest.fixture(scope="session")
def tiny_regression_model_dir(tmp_path_factory) -> str:
    return make_tiny_model_dir(str(tmp_path_factory.mktemp("tiny_bert_reg")), num_labels=1)


@pytest.fixture(scope="session")
def glue_dir(tmp_path_factory) -> str:
    from glue_fixtures import write_glue

    return write_glue(str(tmp_path_factory.mktemp("glue")))


REAL_GLUE = os.environ.get("XTC_GLUE_DIR")
requires_real_glue = pytest.mark.skipif(
    not (REAL_GLUE and os.path.isdir(os.path.join(REAL_GLUE, "MRPC"))),
    reason="set XTC_GLUE_DIR to a real GLUE folder (CI points it at ../shared/glue)")


def interrupt_after_checkpoints(monkeypatch, n: int, run):
    """Call `run()` with the training loop killed (KeyboardInterrupt) right after its n-th checkpoint, as a crash
    would; afterwards checkpoints are real again, so the same command can resume."""
    import xtc.train as train_mod

    real, calls = train_mod._checkpoint, {"n": 0}

    def checkpoint_then_crash(*args, **kwargs):
        real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_checkpoint", checkpoint_then_crash)
    try:
        with pytest.raises(KeyboardInterrupt):
            run()
    finally:
        monkeypatch.setattr(train_mod, "_checkpoint", real)


@pytest.fixture(autouse=True, scope="session")
def _precision_cache(tmp_path_factory):
    """`--precision auto` caches its per-machine measurement: in a file of the test session, never the user's."""
    old = os.environ.get("XTC_PRECISION_CACHE")
    os.environ["XTC_PRECISION_CACHE"] = str(tmp_path_factory.mktemp("xtc_cache") / "precision.json")
    yield
    if old is None:
        os.environ.pop("XTC_PRECISION_CACHE", None)
    else:
        os.environ["XTC_PRECISION_CACHE"] = old
