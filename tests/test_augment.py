import json
import os
import random

import numpy as np
import pytest
import torch
from transformers import BertForMaskedLM, BertForSequenceClassification, BertModel, BertTokenizerFast

from conftest import DEAD_PID, WORDS, make_tiny_model_dir, tiny_config
from xtc.augment import augment, load_teacher, neighbour_candidates
from xtc.config import AugmentConfig, RunOptions
from xtc.data import load_split, load_training_split, read_train_file, select_training_rows, take_rows
from xtc.tasks import get_task


def _lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _write_sst2(root, sentences) -> str:
    os.makedirs(os.path.join(root, "SST-2"), exist_ok=True)
    with open(os.path.join(root, "SST-2", "train.tsv"), "w", encoding="utf-8") as f:
        f.write("sentence\tlabel\n" + "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(sentences)))
    return root


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory, tiny_model_dir) -> str:
    """A tiny BertForMaskedLM whose head always prefers "film", then "movie"."""
    path = str(tmp_path_factory.mktemp("tiny_mlm"))
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_config())
    tok = BertTokenizerFast.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.cls.predictions.bias[tok.convert_tokens_to_ids("film")] = 100.0
        model.cls.predictions.bias[tok.convert_tokens_to_ids("movie")] = 50.0
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hand_set_dir(tmp_path_factory) -> str:
    """A tiny model whose embedding table makes "cat" the nearest whole word to "dog" and "mat" the nearest
    to the mean of "dog" + "##s", with decoys ("##ing", "[MASK]", ".") identical to "dog"."""
    path = make_tiny_model_dir(str(tmp_path_factory.mktemp("hand_set")))
    model = BertForSequenceClassification.from_pretrained(path)
    tok = BertTokenizerFast.from_pretrained(path)
    ids = tok.convert_tokens_to_ids
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        E = model.bert.embeddings.word_embeddings.weight
        E.copy_(torch.randn(E.shape, generator=g))
        E[ids("cat")] = E[ids("dog")] + 0.05 * torch.randn(E.shape[1], generator=g)
        for decoy in ("##ing", "[MASK]", "."):
            E[ids(decoy)] = E[ids("dog")]
        E[ids("mat")] = (E[ids("dog")] + E[ids("##s")]) / 2
    model.save_pretrained(path)
    return path


# ----------------------------------------------------------------------------- output format
def test_line_count_originals_and_sources(tmp_path, tiny_model_dir, glue_dir):
    out = str(tmp_path / "sst2.jsonl")
    rep = augment("sst2", tiny_model_dir, out, AugmentConfig(copies=3), glue_dir=glue_dir, quiet=True)
    rows = _lines(out)
    # exactly the students' training rows (issue 23): the validation rows are held out first, the same draw
    full = load_split(get_task("sst2"), "train", glue_dir)
    chosen = select_training_rows(get_task("sst2"), full, None, 500, "stratified", 0).train
    train = take_rows(full, chosen)
    assert len(chosen) == len(full) - len(full) // 5 and rep["data"]["train"]["n"] == len(chosen)
    assert len(rows) == len(train) * 4 == rep["examples_out"] and rep["examples_in"] == len(train)
    assert [(r["source"], r["copy"]) for r in rows] == [(i, c) for i in chosen for c in range(4)]
    assert [r["text_a"] for r in rows if r["copy"] == 0] == [t[0] for t in train.texts]
    assert all("text_b" not in r for r in rows)
    assert rep["path"] == "neighbours" and not rep["mlm_head"] and rep["bytes"] == os.path.getsize(out)
    assert len(rep["examples"]) == 5 and rep["examples"][0]["original"] == list(train.texts[0])
    assert os.listdir(tmp_path) == ["sst2.jsonl"]  # no temp file left behind


def test_same_seed_same_bytes_other_seed_differs_and_prefix_stable(tmp_path, tiny_model_dir, glue_dir):
    paths = [str(tmp_path / f"{n}.jsonl") for n in ("a", "b", "c", "d")]
    for path, seed in zip(paths[:3], (7, 7, 8)):
        augment("rte", tiny_model_dir, path, AugmentConfig(copies=2, seed=seed), glue_dir=glue_dir, quiet=True)
    data = [open(p, "rb").read() for p in paths[:3]]
    assert data[0] == data[1] and data[0] != data[2]
    # each row of the split has its own generator: its copies do not depend on --max-train-samples
    augment("rte", tiny_model_dir, paths[3],
            AugmentConfig(copies=2, seed=7, max_train_samples=10), glue_dir=glue_dir, quiet=True)
    subset = open(paths[3], "rb").read().splitlines(keepends=True)
    assert len(subset) == 30 and set(subset) <= set(data[0].splitlines(keepends=True))


def test_round_trips_through_read_train_file(tmp_path, tiny_model_dir, glue_dir):
    out = str(tmp_path / "rte.jsonl")
    augment("rte", tiny_model_dir, out, AugmentConfig(copies=2, max_train_samples=8), glue_dir=glue_dir, quiet=True)
    back = read_train_file(out, get_task("rte"))
    orig = load_training_split(get_task("rte"), glue_dir, 8, 500, "stratified", 0)[0]  # what compress trains on
    assert len(back) == 8 * 3 and back.texts[::3] == orig.texts and all(len(t) == 2 for t in back.texts)


# ----------------------------------------------------------------------------- replacement statistics
def test_replaced_fraction_matches_p(tmp_path, tiny_model_dir):
    rng = random.Random(0)
    sents = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(200)]
    glue = _write_sst2(str(tmp_path / "glue"), sents)
    for p, copies in ((0.4, 5), (0.0, 1), (1.0, 1)):
        out = str(tmp_path / f"p{p}.jsonl")
        rep = augment("sst2", tiny_model_dir, out,
                      AugmentConfig(copies=copies, replace_prob=p, replace_stop_words=True), glue_dir=glue,
                      quiet=True, data=RunOptions(validation_samples=0))  # every sentence
        rows = _lines(out)
        changed = total = 0
        for r in rows:
            if r["copy"]:
                a, b = sents[r["source"]].split(), r["text_a"].split()
                assert len(a) == len(b)
                changed += sum(x != y for x, y in zip(a, b))
                total += len(a)
        assert total == 200 * 8 * copies and rep["eligible_word_slots"] == total
        assert abs(changed / total - p) < 0.05 and rep["replaced_fraction"] == pytest.approx(changed / total)


def test_specials_punctuation_case_and_whitespace(tmp_path, tiny_model_dir):
    sent = "[CLS] The dog, sat -- on  the mat... [SEP] ! \"good\""
    glue = _write_sst2(str(tmp_path / "glue"), [sent])
    out = str(tmp_path / "o.jsonl")
    augment("sst2", tiny_model_dir, out,
            AugmentConfig(copies=5, replace_prob=1.0, replace_stop_words=True), glue_dir=glue, quiet=True)
    for r in _lines(out)[1:]:
        t = r["text_a"].split(" ")
        o = sent.split(" ")
        assert len(t) == len(o) and "  " in r["text_a"]  # whitespace kept as is
        for i in (0, 4, 6, 9, 10):  # [CLS], --, "" (double space), [SEP], !
            assert t[i] == o[i]
        for i, word in ((1, "The"), (3, "sat"), (5, "on"), (7, "the")):
            assert t[i] != word and t[i].isalnum()
        assert t[1][0].isupper() and t[1][1:] == t[1][1:].lower()  # uncased vocab: capitalisation follows the text
        assert t[2].endswith(",") and t[2] != "dog," and t[8].endswith("...") and t[8] != "mat..."
        assert t[11].startswith('"') and t[11].endswith('"') and t[11] != '"good"'


def test_stop_words_kept_unless_asked(tmp_path, tiny_model_dir):
    sent = "The dog is not a good actor and she was very funny"
    glue = _write_sst2(str(tmp_path / "glue"), [sent])
    stop = {"The", "is", "not", "a", "and", "she", "was", "very"}
    for replace_stop in (False, True):
        out = str(tmp_path / f"{replace_stop}.jsonl")
        rep = augment("sst2", tiny_model_dir, out,
                      AugmentConfig(copies=4, replace_prob=1.0, replace_stop_words=replace_stop), glue_dir=glue,
                      quiet=True)
        for r in _lines(out)[1:]:
            for old, new in zip(sent.split(), r["text_a"].split()):
                assert (new == old) == (old in stop and not replace_stop), (old, new)
        assert rep["eligible_word_slots"] == 4 * (12 if replace_stop else 12 - len(stop))


def test_pairs_rewrite_one_sentence_per_copy(tmp_path, tiny_model_dir, glue_dir):
    """TinyBERT keeps one side of a pair intact, so paraphrase/entailment relations mostly survive."""
    out = str(tmp_path / "rte.jsonl")
    rep = augment("rte", tiny_model_dir, out,
                  AugmentConfig(copies=6, replace_prob=1.0, replace_stop_words=True), glue_dir=glue_dir,
                  quiet=True)
    train = load_split(get_task("rte"), "train", glue_dir)
    assert rep["pair_mode"] == "one"
    for r in _lines(out):
        a0, b0 = train.texts[r["source"]]
        if r["copy"]:
            kept, changed = ((r["text_b"], b0), (r["text_a"], a0)) if r["copy"] % 2 == 1 else \
                ((r["text_a"], a0), (r["text_b"], b0))
            assert kept[0] == kept[1]
            assert all(x != y for x, y in zip(changed[0].split(), changed[1].split()) if y.isalpha())


def test_pairs_both_mode_augmented_independently(tmp_path, tiny_model_dir, glue_dir):
    out = str(tmp_path / "rte.jsonl")
    augment("rte", tiny_model_dir, out,
            AugmentConfig(copies=10, pair_mode="both", replace_stop_words=True), glue_dir=glue_dir, quiet=True)
    rows = _lines(out)
    train = load_split(get_task("rte"), "train", glue_dir)
    assert all("text_b" in r for r in rows)
    same_mask = kept = n = 0
    for r in rows:
        if not r["copy"]:
            continue
        a0, b0 = (s.split() for s in train.texts[r["source"]])
        ma = [x != y for x, y in zip(a0, r["text_a"].split())]
        mb = [x != y for x, y in zip(b0, r["text_b"].split())]
        same_mask += ma == mb
        kept += ma.count(False) + mb.count(False)
        n += 1
    assert 0.5 < kept / (n * 10) < 0.7  # ~60% of the words stay, at their own source's positions
    assert same_mask / n < 0.2  # independent draws: equal 5-word masks have probability ~0.04


# ----------------------------------------------------------------------------- candidates
def test_neighbours_follow_the_embedding_table(hand_set_dir):
    t = load_teacher(hand_set_dir)
    assert t.mlm is None
    tok = t.tokenizer
    cands = neighbour_candidates(t, {"dog": [tok.convert_tokens_to_ids("dog")],
                                     "dogs": tok("dogs", add_special_tokens=False)["input_ids"]}, 10)
    assert tok.tokenize("dogs") == ["dog", "##s"]
    assert cands["dog"][0] == "cat" and cands["dogs"][0] == "mat"
    for c in cands["dog"] + cands["dogs"]:
        assert not c.startswith("##") and c not in tok.all_special_tokens and c.isalnum()
    assert len(cands["dog"]) == 10 and "dog" not in cands["dog"]  # never the word itself


def test_neighbour_path_end_to_end(tmp_path, hand_set_dir):
    glue = _write_sst2(str(tmp_path / "glue"), ["dog dogs Dog"])
    out = str(tmp_path / "o.jsonl")
    rep = augment("sst2", hand_set_dir, out,
                  AugmentConfig(copies=2, replace_prob=1.0, candidates=1), glue_dir=glue, quiet=True)
    assert [r["text_a"] for r in _lines(out)] == ["dog dogs Dog", "cat mat Cat", "cat mat Cat"]
    assert rep["distinct_words"] == 2  # "dog" and "Dog" share a key under the uncased tokenizer


def test_mlm_head_detection(tmp_path, tiny_model_dir, mlm_dir):
    assert load_teacher(mlm_dir).mlm is not None
    assert load_teacher(tiny_model_dir).mlm is None  # fine-tuned classifier: no head
    bare = str(tmp_path / "bare")  # a bare encoder, like the default all-MiniLM-L6-v2
    BertModel(tiny_config()).save_pretrained(bare)
    BertTokenizerFast.from_pretrained(tiny_model_dir).save_pretrained(bare)
    assert load_teacher(bare).mlm is None


def test_mlm_path_uses_the_head(tmp_path, mlm_dir, glue_dir):
    out = str(tmp_path / "o.jsonl")
    rep = augment("mrpc", mlm_dir, out,
                  AugmentConfig(copies=2, replace_prob=1.0, candidates=1, max_train_samples=16, pair_mode="both", replace_stop_words=True), glue_dir=glue_dir,
                  quiet=True)
    assert rep["path"] == "mlm" and rep["mlm_head"]
    for r in _lines(out):
        if r["copy"]:
            for s in (r["text_a"], r["text_b"]):
                words = s.lstrip('"').split()
                assert set(words) <= {"film", "movie"} and words  # "film" itself gets the runner-up


def test_mlm_candidates_in_vocab_and_window_fallback(tmp_path, mlm_dir):
    vocab = set(BertTokenizerFast.from_pretrained(mlm_dir).get_vocab())
    rng = random.Random(1)
    long = " ".join(rng.choice(WORDS) for _ in range(140))  # beyond the tiny model's 128 positions
    glue = _write_sst2(str(tmp_path / "glue"), ["the dog sat on the mat", long])
    out = str(tmp_path / "o.jsonl")
    rep = augment("sst2", mlm_dir, out,
                  AugmentConfig(copies=3, replace_prob=1.0, candidates=2, replace_stop_words=True), glue_dir=glue,
                  quiet=True)
    assert rep["path"] == "both"  # the tail of the long sentence falls back to neighbours
    for r in _lines(out):
        if r["copy"]:
            words = r["text_a"].split()
            assert all(w in vocab and not w.startswith("##") for w in words)
            if r["source"] == 0:
                assert set(words) <= {"film", "movie"}
    assert np.isclose(rep["replaced_fraction"], 1.0)


# ----------------------------------------------------------------------------- errors
def test_bad_arguments_and_existing_output(tmp_path, tiny_model_dir, glue_dir):
    out = str(tmp_path / "o.jsonl")
    for kwargs, flag in (({"replace_prob": 1.5}, "--replace-prob"), ({"replace_prob": -0.1}, "--replace-prob"),
                         ({"copies": -1}, "--copies"), ({"candidates": 0}, "--candidates"),
                         ({"pair_mode": "neither"}, "--pair-mode")):
        with pytest.raises(ValueError, match=flag):
            augment("sst2", tiny_model_dir, out, AugmentConfig(**kwargs), glue_dir=glue_dir, quiet=True)
    with pytest.raises(ValueError, match="unknown GLUE task 'glue9'"):
        augment("glue9", tiny_model_dir, out, glue_dir=glue_dir, quiet=True)
    assert not os.path.exists(out)
    augment("sst2", tiny_model_dir, out, AugmentConfig(copies=1, max_train_samples=2), glue_dir=glue_dir, quiet=True)
    with pytest.raises(FileExistsError, match="--overwrite"):
        augment("sst2", tiny_model_dir, out, AugmentConfig(copies=1), glue_dir=glue_dir, quiet=True)
    assert len(_lines(out)) == 4  # untouched
    augment("sst2", tiny_model_dir, out,
            AugmentConfig(copies=1, max_train_samples=3), glue_dir=glue_dir, overwrite=True, quiet=True)
    assert len(_lines(out)) == 6


# ---------------------------------------------------------------- a killed run's temp file


def test_killed_augment_temp_is_cleaned_by_the_next_run(tmp_path, tiny_model_dir, glue_dir):
    from xtc.augment import augment

    out = tmp_path / "aug.jsonl"
    stale, live = tmp_path / f".aug.jsonl.{DEAD_PID}.tmp", tmp_path / ".aug.jsonl.1.tmp"  # pid 1 is running
    stale.write_text("partial")
    live.write_text("partial")
    augment("sst2", tiny_model_dir, str(out), AugmentConfig(copies=1, max_train_samples=4), glue_dir=glue_dir, quiet=True)
    assert not stale.exists() and live.exists() and len(out.read_text().splitlines()) == 8
