"""Tests of xtc/arch.py: every supported BERT-family architecture (tiny random models built from their configs),
through fine-tune -> compress -> export -> reload -> integer evaluation, with no network. (Tasks defined by their
data: tests/test_tasks.py.)"""
from __future__ import annotations

import csv
import json
import os

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertTokenizerFast, GPT2Config

from conftest import _vocab, make_tiny_arch_dir, tiny_arch_config
from test_tasks import LABELS, custom_spec  # noqa: F401 (custom_spec: a fixture)
from xtc.arch import architecture_of, uses_token_types
from xtc.cli import main
from xtc.distill import forward_with_internals, reduce_layers
from xtc.infer import IntLinear, load_int_model
from xtc.pack import export_packed, load_packed
from xtc.quant import QuantSpec, apply_quantization, model_size

ARCHS = ("bert", "roberta", "electra", "distilbert", "deberta-v2")


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


# ----------------------------------------------------------------------------- a task defined by its data, per family


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


def test_deberta_refuses_attention_only_kd_before_writing(tmp_path, capsys, custom_spec):
    teacher = make_tiny_arch_dir(str(tmp_path / "deberta"), "deberta-v2")
    capsys.readouterr()
    out = tmp_path / "student"
    assert main(["compress", "--task", custom_spec, "--teacher", teacher, "--kd-terms", "attention",
                 "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no pre-softmax attention scores" in err[0] and "--kd-terms logit,hidden" in err[0]
    assert not out.exists()
