"""Shared fixtures: a tiny random BERT and a tiny WordPiece tokenizer, built in seconds on CPU."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
# the helpers of tests/study/ (study_fixtures, test_claims' synthetic studies) import by name too
sys.path.insert(1, os.path.join(os.path.dirname(__file__), "study"))

import pytest
import torch
from transformers import (AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification,
                          BertTokenizerFast, DebertaV2Config, DistilBertConfig, ElectraConfig, RobertaConfig)

from xtc.config import TrainConfig

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


# the SST-2 teacher of the finetune, compress and run-folder tests: fine-tuned once per test session
TEACHER_CFG = TrainConfig(epochs=8, lr=1e-2, batch_size=16, eval_every=5, warmup_epochs=0.5, seed=3)


@pytest.fixture(scope="session")
def teacher(tmp_path_factory, tiny_model_dir, glue_dir):
    from xtc.config import RunOptions
    from xtc.finetune import finetune

    out = str(tmp_path_factory.mktemp("runs") / "teacher")
    finetune("sst2", tiny_model_dir, out, TEACHER_CFG, run=RunOptions(glue_dir=glue_dir, quiet=True))
    return out


DEAD_PID = 999_999_999  # no process has it (beyond any pid_max)

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


# ---------------------------------------------------------------- tiny random models of other BERT-family architectures


def tiny_arch_config(family: str, num_labels: int = 3):
    common = dict(vocab_size=len(_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=130, num_labels=num_labels, pad_token_id=0,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if family == "distilbert":
        return DistilBertConfig(vocab_size=len(_vocab()), dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                max_position_embeddings=130, num_labels=num_labels, pad_token_id=0, dropout=0.0,
                                attention_dropout=0.0)
    return {"bert": lambda: BertConfig(**common),
            "roberta": lambda: RobertaConfig(type_vocab_size=1, **common),  # as roberta-base
            "electra": lambda: ElectraConfig(embedding_size=32, **common),
            "deberta-v2": lambda: DebertaV2Config(**common, relative_attention=True, position_buckets=16,
                                                  pos_att_type=["p2c", "c2p"])}[family]()


def make_tiny_arch_dir(path: str, family: str, num_labels: int = 3) -> str:
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(tiny_arch_config(family, num_labels)).save_pretrained(path)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(_vocab())}, do_lower_case=True).save_pretrained(path)
    return path


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> (folder, fill, free): a small tmpfs for full-disk tests (needs root: CI runs as root);
    fill() writes a filler file to the last byte, free() deletes it. Unmounted after the test."""
    import subprocess

    mounted = []

    def mount(size: str):
        if os.geteuid() != 0:
            pytest.skip("a full disk is a small tmpfs, which needs root (CI runs as root)")
        fs = tmp_path / f"fs{len(mounted)}"
        fs.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(fs)],
                          capture_output=True).returncode:
            pytest.skip("cannot mount a tmpfs here (no mount permission in this container)")
        mounted.append(fs)
        filler = fs / "filler"

        def fill():
            with open(filler, "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 4096)
                except OSError:
                    pass

        return str(fs), fill, filler.unlink

    yield mount
    for fs in mounted:
        subprocess.run(["umount", "-l", str(fs)])
