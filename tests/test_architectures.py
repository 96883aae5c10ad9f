"""Every supported BERT-family architecture (tiny random models built from their configs) and tasks defined
by their data, through fine-tune -> compress -> export -> reload -> integer evaluation, with no network."""
from __future__ import annotations

import csv
import json
import os
import random

import pytest
import torch
from conftest import _vocab
from glue_fixtures import _sentence
from transformers import (AutoModelForSequenceClassification, BertConfig, BertTokenizerFast, DebertaV2Config,
                          DistilBertConfig, ElectraConfig, GPT2Config, RobertaConfig)

from xtc.arch import architecture_of, uses_token_types
from xtc.cli import main
from xtc.distill import forward_with_internals, reduce_layers
from xtc.infer import IntLinear, load_int_model
from xtc.pack import export_packed, load_packed
from xtc.quant import QuantSpec, apply_quantization, model_size

ARCHS = ("bert", "roberta", "electra", "distilbert", "deberta-v2")
LABELS = ("pos", "neg", "mixed")


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


def _batch():
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(_vocab())}, do_lower_case=True)
    enc = tok(["the movie was good very good", "bad"], ["a film", "it is fun really"], padding=True,
              return_tensors="pt", return_token_type_ids=True)
    return dict(enc)


@pytest.mark.parametrize("family", ARCHS)
def test_roles_layers_and_kd_terms_found_from_the_modules(family):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_arch_config(family)).eval()
    arch = architecture_of(model)
    assert arch.family == family
    roles = apply_quantization(model, QuantSpec(wbits=1, abits=8))
    assert {r: len(v) for r, v in roles.items()} == {"query": 2, "key": 2, "value": 2, "attn_out": 2, "ffn_in": 2,
                                                      "ffn_out": 2, "word_embeddings": 1}
    assert uses_token_types(model) == (family in ("bert", "electra"))
    out = forward_with_internals(model, _batch(), attentions=arch.attention_scores, hidden=True)
    assert len(out.hidden_states) == 3
    if arch.attention_scores:  # pre-softmax scores with the additive mask: padded keys are ~dtype min
        assert len(out.attention_scores) == 2
        assert out.attention_scores[0][1].min() < -1e30 and out.attention_scores[0][0].min() > -1e3
    else:
        with pytest.raises(ValueError, match="pre-softmax"):
            forward_with_internals(model, _batch(), attentions=True, hidden=False)
    student = reduce_layers(model, [1])
    assert student.config.num_hidden_layers == 1
    assert len(forward_with_internals(student, _batch(), attentions=False, hidden=True).hidden_states) == 2


@pytest.mark.parametrize("family", ARCHS)
def test_packed_reload_and_integer_path_match_the_student(family, tmp_path):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_arch_config(family)).eval()
    apply_quantization(model, QuantSpec(wbits=1, abits=8))
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(_vocab())}, do_lower_case=True)
    path = str(tmp_path / "m.xtc")
    export_packed(model, tok, path)
    fake, _ = load_packed(path)
    intm, _ = load_int_model(path)
    batch = {k: v for k, v in _batch().items() if k != "token_type_ids" or uses_token_types(model)}
    with torch.no_grad():
        want, a, b = model(**batch).logits, fake(**batch).logits, intm(**batch).logits
    assert torch.equal(want, a) and torch.equal(a, b)  # the same integer maths on all three
    assert sum(isinstance(m, IntLinear) for m in intm.modules()) == 12
    size = model_size(model)
    assert os.path.getsize(path) < size["fp32_bytes"] / 2


def test_unmappable_model_is_refused_in_one_line(tmp_path, capsys, custom_spec):
    gpt = str(tmp_path / "gpt2")
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(GPT2Config(vocab_size=len(_vocab()), n_embd=32, n_layer=2,
                                                              n_head=4, n_positions=64, num_labels=3,
                                                              pad_token_id=0)).save_pretrained(gpt)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(_vocab())}).save_pretrained(gpt)
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["finetune", "--task", custom_spec, "--model", gpt, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot be mapped" in err and "lacks" in err and "gpt2" in err
    assert not out.exists()


# ----------------------------------------------------------------------------- a task defined by its data
def write_custom_task(root: str, fmt: str = "csv", n_train: int = 48, n_dev: int = 24) -> str:
    """A GLUE-like pair task reshaped: other column names, string labels, three classes; returns its spec."""
    rng = random.Random(0)
    os.makedirs(root, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = []
        for i in range(n):
            y = rng.randint(0, 2)
            rows.append({"id": i, "premise": _sentence(rng, y % 2) + ', "quoted"', "claim": _sentence(rng, y // 2),
                         "verdict": LABELS[y]})
        path = os.path.join(root, f"{split}.{fmt}")
        if fmt == "jsonl":
            with open(path, "w") as f:
                f.write("".join(json.dumps(r) + "\n" for r in rows))
        elif fmt == "parquet":
            import pandas as pd

            pd.DataFrame(rows).to_parquet(path)
        elif fmt == "tsv":  # GLUE-style: tab-separated, bare quotes inside the text
            with open(path, "w") as f:
                f.write("".join("\t".join(str(v) for v in r) + "\n" for r in [list(rows[0]), *map(dict.values, rows)]))
        else:
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
    spec = os.path.join(root, "verdicts.yaml")
    with open(spec, "w") as f:
        f.write(f"name: verdicts\ntrain_data: train.{fmt}\ndev_data: dev.{fmt}\ntext_columns: [premise, claim]\n"
                f"label_column: verdict\nlabels: [pos, neg, mixed]\nmetrics: [accuracy, f1, mcc]\n")
    return spec


@pytest.fixture(scope="module")
def custom_spec(tmp_path_factory) -> str:
    return write_custom_task(str(tmp_path_factory.mktemp("custom")))


@pytest.mark.parametrize("fmt", ["tsv", "jsonl", "parquet"])
def test_every_file_format_reads_the_same_task(fmt, tmp_path, custom_spec):
    from xtc.data import load_split
    from xtc.tasks import get_task

    want = load_split(get_task(custom_spec), "train")
    got = load_split(get_task(write_custom_task(str(tmp_path), fmt)), "train")
    assert got.texts == want.texts and got.labels == want.labels
    assert sorted(set(want.labels)) == [0, 1, 2] and '"quoted"' in want.texts[0][0]


@pytest.mark.parametrize("family", ARCHS)
def test_custom_task_through_the_pipeline(family, tmp_path, capsys, custom_spec):
    """fine-tune -> layer reduction + 1-bit QAT with KD -> export -> integer evaluation equals the run's."""
    model = make_tiny_arch_dir(str(tmp_path / "init"), family, num_labels=2)  # a head for another task
    t, s, x = str(tmp_path / "teacher"), str(tmp_path / "student"), str(tmp_path / "student.xtc")
    train = ["--epochs", "2", "--batch-size", "8", "--quiet"]
    assert main(["finetune", "--task", custom_spec, "--model", model, "--out", t, "--lr", "1e-3", *train]) == 0
    assert main(["compress", "--task", custom_spec, "--teacher", t, "--layers", "1", "--wbits", "1", "--abits", "8",
                 "--out", s, *train]) == 0
    capsys.readouterr()
    rec = json.load(open(os.path.join(s, "metrics.json")))
    assert rec["architecture"] == family and rec["task"] == "verdicts"
    assert set(rec["loss_terms"]) - {"loss"} == ({"logit", "hidden"} if family == "deberta-v2" else {"logit", "hidden",
                                                                                          "attention"})
    assert (rec["kd_note"] is not None) == (family == "deberta-v2")
    assert main(["export", "--model", s, "--out", x]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", x, "--task", custom_spec, "--predictions"]) == 0
    packed = json.loads(capsys.readouterr().out)
    assert packed["path"] == "integer" and packed["metrics"] == rec["metrics"]
    assert set(packed["metrics"]) == {"accuracy", "f1", "mcc"}
    assert main(["evaluate", "--model", s, "--task", custom_spec, "--predictions"]) == 0
    folder = json.loads(capsys.readouterr().out)
    assert folder["predictions"] == packed["predictions"]  # identical logits after reload
    preds = tmp_path / "preds.csv"
    assert main(["predict", "--model", x, "--task", custom_spec, "--out", str(preds)]) == 0
    rows = list(csv.DictReader(open(preds)))
    assert len(rows) == 24 and {r["prediction"] for r in rows} <= set(LABELS)
    assert {r["label"] for r in rows} == set(LABELS)


def test_custom_task_from_flags_and_augment(tmp_path, capsys, custom_spec, tiny_model_dir):
    root = os.path.dirname(custom_spec)
    flags = ["--task", "verdicts", "--train-data", f"{root}/train.csv", "--dev-data", f"{root}/dev.csv",
             "--text-columns", "premise,claim", "--label-column", "verdict", "--labels", "pos,neg,mixed"]
    t = str(tmp_path / "teacher")
    assert main(["finetune", *flags, "--model", tiny_model_dir, "--out", t, "--epochs", "1", "--quiet"]) == 0
    rec = json.load(open(os.path.join(t, "metrics.json")))
    assert rec["task"] == "verdicts" and rec["config"]["task_spec"]["labels"] == ["pos", "neg", "mixed"]
    aug = tmp_path / "aug.jsonl"
    assert main(["augment", *flags, "--teacher", t, "--out", str(aug), "--copies", "1", "--quiet"]) == 0
    lines = [json.loads(x) for x in open(aug)]
    # the students' rows: 48 less the 9 (a fifth) held out for validation, as the teacher's (issue 23)
    assert rec["data"]["validation"]["n"] == 9 and set(rec["data"]["train"]["strata"]) == {"0", "1", "2"}
    assert len(lines) == (48 - 9) * 2 and set(lines[0]) >= {"text_a", "text_b"}
    s = str(tmp_path / "student")
    assert main(["compress", *flags, "--teacher", t, "--train-file", str(aug), "--wbits", "2", "--abits", "8",
                 "--out", s, "--epochs", "1", "--quiet"]) == 0


def _bad(tmp_path, name, body, rows=None):
    root = tmp_path / name
    root.mkdir()
    (root / "train.csv").write_text(rows or "a,b,y\nthe movie,a film,pos\nbad plot,it is fun,neg\n")
    (root / "dev.csv").write_text(rows or "a,b,y\nthe movie,a film,pos\nbad plot,it is fun,neg\n")
    (root / "spec.yaml").write_text("train_data: train.csv\ndev_data: dev.csv\n" + body)
    return str(root / "spec.yaml")


BAD_SPECS = [
    ("missing column", "text_columns: [a, c]\nlabel_column: y\nlabels: [pos, neg]\n", None, "missing column(s) ['c']"),
    ("unknown label", "text_columns: [a, b]\nlabel_column: y\nlabels: [pos, other]\n", None,
     "label 'neg' is not one of ['pos', 'other']"),
    ("regression non-numeric", "text_columns: [a, b]\nlabel_column: y\nproblem: regression\n", None,
     "label 'pos' is not a number"),
    ("empty split", "text_columns: [a, b]\nlabel_column: y\nlabels: [pos, neg]\n", "a,b,y\n", "holds no examples"),
    ("no labels declared", "text_columns: [a, b]\nlabel_column: y\n", None, "declares its labels"),
    ("three text columns", "text_columns: [a, b, y]\nlabel_column: y\nlabels: [pos, neg]\n", None, "one or two"),
    ("metric of the other problem", "text_columns: [a]\nlabel_column: y\nproblem: regression\nmetrics: [f1]\n",
     None, "do not fit regression"),
    ("unknown key", "text_column: [a]\nlabel_column: y\nlabels: [pos, neg]\n", None, "unknown key(s) ['text_column']"),
]


@pytest.mark.parametrize("case", BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
@pytest.mark.parametrize("command", ["finetune", "evaluate"])
def test_bad_specs_one_line_exit_2_nothing_written(case, command, tmp_path, capsys, tiny_model_dir,
                                                   tiny_regression_model_dir):
    name, body, rows, message = case
    if "regression" in body:
        tiny_model_dir = tiny_regression_model_dir
    spec = _bad(tmp_path, "d", body, rows)
    out = tmp_path / "out"
    args = (["finetune", "--model", tiny_model_dir, "--out", str(out)] if command == "finetune"
            else ["evaluate", "--model", tiny_model_dir])
    assert main([*args, "--task", spec, "--quiet"] if command == "finetune" else [*args, "--task", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()
    assert sorted(os.listdir(tmp_path / "d")) == ["dev.csv", "spec.yaml", "train.csv"]


def test_task_flag_conflicts(tmp_path, capsys, custom_spec, tiny_model_dir):
    assert main(["finetune", "--task", "mrpc", "--train-data", "x.csv", "--model", tiny_model_dir,
                 "--out", str(tmp_path / "o")]) == 2
    assert "is a GLUE task" in capsys.readouterr().err
    assert main(["finetune", "--task", "nosuch", "--model", tiny_model_dir, "--out", str(tmp_path / "o")]) == 2
    assert "unknown GLUE task" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_augment_with_a_byte_level_bpe_teacher_proposes_words_not_pieces(tmp_path, capsys, custom_spec):
    """RoBERTa-style vocabularies ("Ġgood"): candidates are the words the pieces decode to."""
    from conftest import WORDS
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([" ".join(WORDS)] * 20, trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok = RobertaTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                               cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    assert tok.tokenize(" good")[0].startswith("Ġ")
    cfg = tiny_arch_config("roberta")
    cfg.vocab_size, cfg.pad_token_id = len(tok), tok.pad_token_id
    torch.manual_seed(0)
    teacher = str(tmp_path / "roberta")
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(teacher)
    tok.save_pretrained(teacher)
    out = tmp_path / "aug.jsonl"
    assert main(["augment", "--task", custom_spec, "--teacher", teacher, "--out", str(out), "--copies", "2",
                 "--candidates", "3", "--quiet"]) == 0
    rows = [json.loads(x) for x in open(out)]
    originals = {r["source"]: (r["text_a"], r["text_b"]) for r in rows if r["copy"] == 0}
    changed = [r for r in rows if r["copy"] > 0 and (r["text_a"], r["text_b"]) != originals[r["source"]]]
    assert len(rows) == (48 - 9) * 3 and changed  # replacements happen ...
    assert not any(c in r["text_a"] + r["text_b"] for r in rows for c in ("Ġ", "<s>", "<pad>"))  # ... as words
    # and the same teacher fine-tunes (padding with its own pad id 1, no token types)
    assert main(["finetune", "--task", custom_spec, "--model", teacher, "--out", str(tmp_path / "ft"),
                 "--epochs", "1", "--quiet"]) == 0


def test_test_split_without_labels_and_hub_data_offline(tmp_path, capsys, monkeypatch, tiny_model_dir):
    root = os.path.dirname(write_custom_task(str(tmp_path / "d")))
    with open(os.path.join(root, "test.csv"), "w") as f:
        f.write("premise,claim\nthe movie was good,a film\nbad plot,it is fun\n")
    spec = os.path.join(root, "verdicts.yaml")
    with open(spec, "a") as f:
        f.write("test_data: test.csv\n")
    model = make_tiny_arch_dir(str(tmp_path / "m"), "bert", num_labels=3)
    capsys.readouterr()
    assert main(["predict", "--model", model, "--task", spec, "--split", "test", "--out", str(tmp_path / "p.csv")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["examples"] == 2 and "metrics" not in summary
    assert list(csv.DictReader(open(tmp_path / "p.csv")))[0].keys() >= {"index", "prediction"}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    hub = ["--task", "reviews", "--hub-dataset", "nobody/no-such-dataset", "--train-data", "train",
           "--dev-data", "validation", "--text-columns", "text", "--label-column", "label", "--labels", "a,b"]
    assert main(["finetune", *hub, "--model", tiny_model_dir, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "could not load nobody/no-such-dataset split 'train'" in err
    assert not (tmp_path / "o").exists()


def test_deberta_refuses_attention_only_kd_before_writing(tmp_path, capsys, custom_spec):
    teacher = make_tiny_arch_dir(str(tmp_path / "deberta"), "deberta-v2")
    capsys.readouterr()
    out = tmp_path / "student"
    assert main(["compress", "--task", custom_spec, "--teacher", teacher, "--kd-terms", "attention",
                 "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no pre-softmax attention scores" in err[0] and "--kd-terms logit,hidden" in err[0]
    assert not out.exists()
