import os

import pytest
from transformers import BertTokenizerFast

from conftest import REAL_GLUE, requires_real_glue
from xtc.data import DataError, collate, encode, load_split, read_input_tsv, split_stats, train_batches
from xtc.tasks import TASKS, get_task


def test_registry_has_all_nine_tasks():
    assert set(TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}
    assert get_task("SST-2").name == "sst2"
    assert get_task("mnli").eval_splits == ("dev_matched", "dev_mismatched")
    assert get_task("stsb").is_regression and get_task("stsb").num_labels == 1
    with pytest.raises(ValueError, match="unknown GLUE task 'glue9'"):
        get_task("glue9")


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
