import os

import pytest
from transformers import BertTokenizerFast

from conftest import REAL_GLUE, requires_real_glue
from xtc.data import DataError, collate, encode, load_split, read_input_tsv, split_stats, train_batches
from xtc.tasks import get_task


def test_reads_every_local_format(glue_dir):
    cola = load_split(get_task("cola"), "train", glue_dir)  # header-less
    assert len(cola) == 64 and len(cola.texts[0]) == 1 and set(cola.labels) <= {0, 1}
    mrpc = load_split(get_task("mrpc"), "dev", glue_dir)  # BOM header, bare quote in text
    assert len(mrpc) == 32 and mrpc.texts[0][0].startswith('"')
    stsb = load_split(get_task("stsb"), "train", glue_dir)
    assert isinstance(stsb.labels[0], float)
    rte = load_split(get_task("rte"), "dev", glue_dir, max_samples=5)
    assert len(rte) == 5 and set(rte.labels) <= {0, 1}


def test_malformed_row_names_file_and_line(tmp_path, glue_dir):
    os.makedirs(tmp_path / "RTE")
    (tmp_path / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly two\n")
    with pytest.raises(DataError, match=r"RTE/train.tsv:3: malformed row"):
        load_split(get_task("rte"), "train", str(tmp_path))
    (tmp_path / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(DataError, match=r"dev.tsv:2: label 'maybe' is not one of"):
        load_split(get_task("rte"), "dev", str(tmp_path))


def test_predict_input_tsv_reads_like_the_glue_reader(tmp_path):
    """`xtc predict --input` reads through the same TSV reader: generic columns, a label, blank lines skipped,
    and a line that is not UTF-8 named in one DataError."""
    good = tmp_path / "in.tsv"
    good.write_bytes("\ufefftext_a\tlabel\nfine film\t1\n\nbad film\t0\n".encode())
    split, has_labels = read_input_tsv(str(good), get_task("sst2"))
    assert split.texts == [("fine film",), ("bad film",)] and split.labels == [1, 0] and has_labels
    bad = tmp_path / "latin1.tsv"
    bad.write_bytes("sentence\nok\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.tsv:3: not UTF-8 text"):
        read_input_tsv(str(bad), get_task("sst2"))


def test_missing_file_and_dir_errors(tmp_path):
    with pytest.raises(DataError, match="missing GLUE file .*QNLI/train.tsv"):
        load_split(get_task("qnli"), "train", str(tmp_path))
    with pytest.raises(DataError, match="does not exist; pass --glue-dir"):
        load_split(get_task("rte"), "train", str(tmp_path / "nope"))
    with pytest.raises(DataError, match="has no split 'test'"):
        load_split(get_task("rte"), "test", str(tmp_path))


def test_hub_error_says_how_to_use_local_copy(monkeypatch):
    monkeypatch.delenv("XTC_GLUE_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-xtc-cache")
    with pytest.raises(DataError, match="--glue-dir DIR or XTC_GLUE_DIR"):
        load_split(get_task("wnli"), "dev", None)


def test_dynamic_padding_and_length_grouping(glue_dir, tiny_model_dir):
    tok = BertTokenizerFast.from_pretrained(tiny_model_dir)
    enc = encode(load_split(get_task("mrpc"), "train", glue_dir), tok, max_length=12)
    assert max(enc.lengths) <= 12
    batch = collate(enc, [0, 1, 2])
    width = max(enc.lengths[i] for i in (0, 1, 2))
    assert batch["input_ids"].shape == (3, width)
    assert batch["attention_mask"].sum().item() == sum(enc.lengths[i] for i in (0, 1, 2))
    assert batch["token_type_ids"].max().item() == 1  # sentence pairs keep their segment ids
    # Epoch order is a pure function of (seed, epoch), covers every example once, and varies by epoch.
    a, b = train_batches(enc, 8, seed=1, epoch=0), train_batches(enc, 8, seed=1, epoch=0)
    assert a == b and sorted(i for bt in a for i in bt) == list(range(len(enc)))
    assert train_batches(enc, 8, seed=1, epoch=1) != a


@requires_real_glue
def test_real_glue_official_sizes():
    sizes = {"cola": (8551, 1043), "sst2": (67349, 872), "mrpc": (3668, 408), "stsb": (5749, 1500),
             "rte": (2490, 277), "wnli": (635, 71)}
    for name, (n_train, n_dev) in sizes.items():
        stats = split_stats(get_task(name), REAL_GLUE)["splits"]
        assert (stats["train"]["size"], stats["dev"]["size"]) == (n_train, n_dev), name
    qnli = split_stats(get_task("qnli"), REAL_GLUE)["splits"]
    assert qnli["dev"]["size"] == 5463 and qnli["train"] == {"available": False}


# ---------------------------------------------------------------- training subsets and the validation split (issue 23)
def _genre_split(n: int = 200):
    """STS-B-like rows: the first half one genre, the second another (as STS-B's train.tsv is ordered)."""
    from xtc.data import Split

    genres = ["main-captions"] * (n // 2) + ["main-news"] * (n - n // 2)
    return Split("stsb", "train", [(f"a{i}", f"b{i}") for i in range(n)], [(i * 7 % 50) / 10 for i in range(n)],
                 genres=genres)


def test_stratified_subset_is_reproducible_disjoint_and_keeps_each_genre():
    from collections import Counter

    from xtc.data import row_strata, select_training_rows

    task, full = get_task("stsb"), _genre_split()
    strata = row_strata(task, full)
    assert strata[0] == "main-captions|0" and strata[5] == "main-captions|3"  # genre | integer part of the score
    a = select_training_rows(task, full, 40, 20, "stratified", data_seed=0)
    assert a.train == select_training_rows(task, full, 40, 20, "stratified", data_seed=0).train  # a pure function
    assert not set(a.train) & set(a.validation) and len(a.train) == 40 and len(a.validation) == 20
    # the old first rows are all one genre; the stratified draw keeps each genre's (and each bin's) share
    assert Counter(full.genres[i] for i in range(40)) == {"main-captions": 40}
    assert Counter(full.genres[i] for i in a.train) == {"main-captions": 20, "main-news": 20}
    assert a.record["train"]["strata"] == dict(sorted(Counter(strata[i] for i in a.train).items()))
    assert sum(a.record["train"]["strata_available"].values()) == a.record["train"]["of"] == 180
    assert a.record["validation"]["n"] == 20 and a.record["validation"]["how"] == "stratified"
    other = select_training_rows(task, full, 40, 20, "stratified", data_seed=1)
    assert other.train != a.train and other.record["train"]["sha256"] != a.record["train"]["sha256"]
    # at most a fifth of the split is held out; none at all leaves every row to the subset
    assert len(select_training_rows(task, full, None, 500, "stratified", 0).validation) == 40
    assert select_training_rows(task, full, None, 0, "stratified", 0).record["validation"] is None


def test_first_subset_is_the_old_first_rows_and_strata_follow_the_task(glue_dir):
    from xtc.config import TaskSpec
    from xtc.data import Split, row_strata, select_training_rows
    from xtc.tasks import custom_task

    task = get_task("mrpc")
    full = load_split(task, "train", glue_dir)
    sel = select_training_rows(task, full, 10, 0, "first", data_seed=3)
    old = load_split(task, "train", glue_dir, 10)
    assert [full.texts[i] for i in sel.train] == old.texts and sel.record["train"]["how"] == "first"
    assert set(row_strata(task, full)) == {"0", "1"}  # classification: the label
    assert load_split(get_task("stsb"), "train", glue_dir).genres[0] == "main"  # the genre column is read
    # a regression task of your own has no genre: five equal-width bins over its scores
    spec = TaskSpec(train_data="t.csv", dev_data="d.csv", text_columns=("s",), label_column="y", problem="regression")
    own = custom_task("scores", spec)
    assert row_strata(own, Split("scores", "train", [("x",)] * 4, [-1.0, 0.0, 0.9, 1.0])) == ["0", "2", "4", "4"]
