"""The run diagnostics (xtc/diagnostics.py): changed weight codes per role, the train-vs-dev gap on a fixed
training sample, predicted class counts, and the KD terms' gradient shares; and that recording them changes
neither the training numbers nor exact resume."""
import json
import os

import numpy as np
import pytest
import torch
from transformers import BertForSequenceClassification

import xtc.compress as compress_mod
from conftest import interrupt_after_checkpoints, tiny_config
from xtc.compress import CompressConfig, compress
from xtc.config import RunOptions, TrainConfig
from xtc.data import Encoded
from xtc.diagnostics import (changed_code_shares, kd_gradient_norms, predicted_counts, train_sample,
                             weight_codes)
from xtc.finetune import finetune
from xtc.quant import QuantSpec, apply_quantization

CFG = TrainConfig(epochs=3, lr=1e-2, batch_size=16, eval_every=5, warmup_epochs=0.5, seed=3,
                  train_eval_examples=24)


def _quantized_tiny(wbits: int, dropout: float = 0.0):
    torch.manual_seed(0)
    config = tiny_config()
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = dropout
    model = BertForSequenceClassification(config)
    apply_quantization(model, QuantSpec(wbits=wbits, abits=8))
    return model


def test_sign_flips_set_by_hand_are_counted_per_role():
    model = _quantized_tiny(1)
    start = weight_codes(model)
    assert {role for role, _ in start.values()} == {"query", "key", "value", "attn_out", "ffn_in", "ffn_out",
                                                     "word_embeddings"}
    assert all(v == 0.0 for v in changed_code_shares(start, model).values())
    q = model.bert.encoder.layer[0].attention.self.query.weight  # 32 x 32, 4 layers of queries: 4096 signs
    with torch.no_grad():
        flat = q.view(-1)
        flat[:10] = -flat[:10]  # 10 sign flips (random init: no exact zeros)
        flat[10:20] *= 3.0  # larger, same sign: binary codes unchanged
    shares = changed_code_shares(start, model)
    assert shares["query"] == pytest.approx(10 / (4 * 32 * 32))
    assert all(v == 0.0 for role, v in shares.items() if role != "query")
    emb = model.bert.embeddings.word_embeddings.weight
    with torch.no_grad():
        emb[3] = -emb[3]  # one whole row of 32 signs
    assert changed_code_shares(start, model)["word_embeddings"] == pytest.approx(32 / emb.numel())


def test_ternary_codes_change_only_across_the_threshold():
    model = _quantized_tiny(2)
    ffn_out = model.bert.encoder.layer[1].output.dense.weight  # 32 x 64, one scale group
    with torch.no_grad():
        ffn_out.zero_()
        ffn_out[:, :32] = 1.0  # mean|W| = 0.5, threshold 0.35: codes +1 (half) and 0 (half)
    start = weight_codes(model)
    with torch.no_grad():
        ffn_out[0, 0] = -1.0  # +1 -> -1: mean|W| unchanged
        ffn_out[0, 40] = 0.2  # 0 -> still 0 (0.2 < the new threshold)
        ffn_out[1, 1] = 0.0  # +1 -> 0
    shares = changed_code_shares(start, model)
    assert shares["ffn_out"] == pytest.approx(2 / (4 * 32 * 64))
    assert shares["ffn_in"] == 0.0


def _encoded(n: int) -> Encoded:
    return Encoded([[2, 5 + i % 7, 3] for i in range(n)], [[0, 0, 0]] * n, [i % 2 for i in range(n)])


def test_train_sample_is_fixed_whatever_the_global_seed_and_capped_at_the_data():
    data = _encoded(50)
    torch.manual_seed(1), np.random.seed(1)
    a = train_sample(data, 20)
    torch.manual_seed(2), np.random.seed(2)
    b = train_sample(data, 20)
    assert a.input_ids == b.input_ids and a.labels == b.labels and len(a) == 20
    assert a.input_ids != data.input_ids[:20]  # a random sample, not the first examples
    assert len(train_sample(data, 500)) == 50
    assert train_sample(data, 0) is None


def test_predicted_counts_name_the_classes():
    assert predicted_counts({"dev": np.array([1, 1, 0, 1])}, ("no", "yes")) == {"dev": {"no": 1, "yes": 3}}


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 60, (4, 9), generator=g)
    return {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": torch.ones_like(ids),
            "labels": torch.tensor([0, 1, 0, 1])}


def test_kd_gradient_norms_scale_with_the_term_and_leave_rng_and_grads_alone():
    model = _quantized_tiny(1, dropout=0.1)  # dropout: every forward draws random numbers

    def logits_term(m, batch):
        return m(**{k: v for k, v in batch.items() if k != "labels"}).logits.pow(2).mean(), {}

    def head_only(m, batch):  # touches the classifier, not the encoder
        return m.classifier.weight.pow(2).sum(), {}

    terms = {"one": logits_term, "two": lambda m, b: (2 * logits_term(m, b)[0], {}), "head": head_only}
    before = torch.get_rng_state()
    out = kd_gradient_norms(model, _batch(), terms)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(p.grad is None for p in model.parameters())
    # each term sees the same dropout masks, so a term twice as large has exactly twice the gradient
    assert out["norms"]["two"] == pytest.approx(2 * out["norms"]["one"], rel=1e-5)
    assert out["norms"]["one"] > 0 and out["norms"]["head"] == 0.0
    assert out["shares"]["one"] == pytest.approx(1 / 3, rel=1e-5)
    assert sum(out["shares"].values()) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_model_dir, glue_dir):
    out = str(tmp_path_factory.mktemp("diag") / "teacher")
    finetune("sst2", tiny_model_dir, out, TrainConfig(epochs=4, lr=1e-2, batch_size=16, seed=3),
             run=RunOptions(glue_dir=glue_dir, quiet=True))
    return out


def _compress(teacher, out, glue_dir):
    return compress("sst2", teacher, out, CFG, QuantSpec(wbits=1, abits=8), CompressConfig(layers=2),
                    run=RunOptions(glue_dir=glue_dir, quiet=True))


def test_every_evaluation_records_the_diagnostics(tmp_path, teacher, glue_dir):
    rec = _compress(teacher, str(tmp_path / "s"), glue_dir)
    first = rec["history"][0]["diagnostics"]
    assert set(first["kd_gradient"]["shares"]) == {"logit", "hidden", "attention"}
    assert sum(first["kd_gradient"]["shares"].values()) == pytest.approx(1.0)
    assert rec["kd_gradient"] == first["kd_gradient"]
    for h in rec["history"]:
        d = h["diagnostics"]
        assert set(d["changed_codes"]) == {"query", "key", "value", "attn_out", "ffn_in", "ffn_out",
                                           "word_embeddings"}
        assert all(0.0 <= v <= 1.0 for v in d["changed_codes"].values())
        assert d["train_sample"] == 24
        assert d["gap"] == pytest.approx(d["train_metrics"]["accuracy"] - h["metrics"]["accuracy"])
        assert sum(d["predicted_counts"]["dev"].values()) == rec["config"]["eval_sizes"]["dev"]
    assert "kd_gradient" not in rec["history"][1]["diagnostics"]
    # lr 1e-2 moves weights well past zero: some signs flip
    assert max(rec["history"][-1]["diagnostics"]["changed_codes"].values()) > 0


def test_diagnostics_change_no_training_number_and_resume_exactly(tmp_path, teacher, glue_dir, monkeypatch):
    full = _compress(teacher, str(tmp_path / "full"), glue_dir)
    with monkeypatch.context() as m:  # the same run without any diagnostic
        m.setattr(compress_mod, "RunDiagnostics", lambda *a, **k: None)
        bare = _compress(teacher, str(tmp_path / "bare"), glue_dir)
    assert "diagnostics" not in bare["history"][0]
    assert [h["train"] for h in bare["history"]] == [h["train"] for h in full["history"]]
    assert [h["metrics"] for h in bare["history"]] == [h["metrics"] for h in full["history"]]
    out = str(tmp_path / "resumed")
    interrupt_after_checkpoints(monkeypatch, 2, lambda: _compress(teacher, out, glue_dir))
    assert not os.path.exists(os.path.join(out, "metrics.json"))
    monkeypatch.undo()
    resumed = _compress(teacher, out, glue_dir)
    assert [h["train"] for h in resumed["history"]] == [h["train"] for h in full["history"]]
    assert [h["diagnostics"] for h in resumed["history"]] == [h["diagnostics"] for h in full["history"]]
    assert json.load(open(os.path.join(out, "metrics.json")))["kd_gradient"] == full["kd_gradient"]


def test_a_train_file_run_scores_its_gap_on_the_labelled_training_set(tmp_path, teacher, glue_dir):
    path = tmp_path / "aug.jsonl"
    path.write_text("".join(json.dumps({"text_a": t}) + "\n" for t in ["a good film", "bad", "fine one"] * 20))
    rec = compress("sst2", teacher, str(tmp_path / "da"), CFG, QuantSpec(wbits=2, abits=8),
                   CompressConfig(layers=2, train_file=str(path)), run=RunOptions(glue_dir=glue_dir, quiet=True))
    from xtc.data import load_split
    from xtc.tasks import get_task

    n_train = len(load_split(get_task("sst2"), "train", glue_dir))
    assert rec["history"][0]["diagnostics"]["train_sample"] == min(24, n_train)
