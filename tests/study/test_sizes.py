"""Tests of xtc/study/sizes.py: a model's bytes from its architecture, the paper's size threshold, the teacher's
architecture."""
import json

import pytest

from xtc.study import sizes

MINILM = {"vocab_size": 30522, "hidden_size": 384, "num_layers": 6, "intermediate_size": 1536,
          "max_position_embeddings": 512, "type_vocab_size": 2}


def test_architecture_bytes_match_real_models():
    # the fp32 teachers of the committed quick study (results/runs.csv): SST-2 (2 labels), STS-B (1 label)
    assert sizes.architecture_bytes(MINILM, 6, 32, num_labels=2) == 90_855_944
    assert sizes.architecture_bytes(MINILM, 6, 32, num_labels=1) == 90_854_404
    # a tiny BERT, quantized by xtc itself at 1 and 2 bits: the same theoretical size
    import torch  # noqa: F401
    from transformers import BertConfig, BertForSequenceClassification

    from xtc.quant import QuantSpec, apply_quantization, model_size

    arch = {"vocab_size": 50, "hidden_size": 16, "num_layers": 3, "intermediate_size": 40,
            "max_position_embeddings": 20, "type_vocab_size": 2}
    for bits in (1, 2):
        model = BertForSequenceClassification(BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=40,
            max_position_embeddings=20, num_labels=3))
        assert 4 * sum(p.numel() for p in model.parameters()) == sizes.architecture_bytes(arch, 3, 32, 3)
        apply_quantization(model, QuantSpec(wbits=bits, abits=8))
        assert model_size(model)["quantized_bytes"] == sizes.architecture_bytes(arch, 3, bits, 3)


def test_size_threshold_comes_from_the_paper_and_the_architecture():
    # the paper counts quantized weights only: BERT-base at 6 of 12 layers, 1 bit -> 53.2x; "~50x" is 94%
    assert sizes.one_bit_ceiling(sizes.BERT_BASE, 6, 3, quantized_only=True) == pytest.approx(53.16, abs=0.01)
    assert sizes.paper_size_share() == pytest.approx(50 / 53.157, abs=1e-4)
    # counting the fp32 parts the recipe keeps, BERT-base's real ceiling is ~35x, MiniLM's at 3 layers ~25x
    assert sizes.one_bit_ceiling(sizes.BERT_BASE, 6, 3) == pytest.approx(34.9, abs=0.1)
    assert sizes.one_bit_ceiling(MINILM, 3, 2) == pytest.approx(24.6, abs=0.1)
    assert sizes.half_depth(12) == 6 and sizes.half_depth(6) == 3 and sizes.half_depth(3) == 2


def test_teacher_architecture_is_read_from_the_teachers_config(tmp_path):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "vocab_size": 100, "hidden_size": 8, "num_hidden_layers": 2, "intermediate_size": 16,
        "max_position_embeddings": 32, "type_vocab_size": 2}))
    arch = sizes.teacher_architecture({"teacher": {"model": str(folder)}})
    assert arch == {"vocab_size": 100, "hidden_size": 8, "num_layers": 2, "intermediate_size": 16,
                    "max_position_embeddings": 32, "type_vocab_size": 2}
    assert sizes.teacher_architecture({"teacher": {"model": str(tmp_path / "nothing-here")}}) is None


def test_architecture_bytes_defaults_groups_and_a_config_without_token_types(tmp_path):
    arch = {"vocab_size": 100, "hidden_size": 8, "num_layers": 2, "intermediate_size": 16,
            "max_position_embeddings": 32, "type_vocab_size": 2}
    base = sizes.architecture_bytes(arch, 2, 1)
    assert base == sizes.architecture_bytes(arch, 2, 1, num_labels=2, groups=1, quantized_only=False)
    assert sizes.architecture_bytes(arch, 2, 1, groups=4) - base == 4 * 2 * 6 * 3  # 3 more fp32 scales per matrix
    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"vocab_size": 100, "hidden_size": 8, "num_hidden_layers": 2,
                                                    "intermediate_size": 16, "max_position_embeddings": 32}))
    got = sizes.teacher_architecture({"teacher": {"model": str(folder)}})
    assert got["type_vocab_size"] == 2 and got["num_layers"] == 2
    (folder / "config.json").write_text(json.dumps({"vocab_size": 100, "hidden_size": 8, "num_hidden_layers": 2,
                                                    "intermediate_size": 16, "max_position_embeddings": 32,
                                                    "type_vocab_size": 1}))
    assert sizes.teacher_architecture({"teacher": {"model": str(folder)}})["type_vocab_size"] == 1


def test_a_hub_teacher_is_read_from_the_local_cache_only(monkeypatch):
    import transformers

    calls = []

    class Cfg:
        def to_dict(self):
            return {"vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 2, "intermediate_size": 8,
                    "max_position_embeddings": 16}

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained",
                        lambda path, **kw: calls.append((path, kw)) or Cfg())
    got = sizes.teacher_architecture({"teacher": {"model": "some-org/some-bert"}})
    assert calls == [("some-org/some-bert", {"local_files_only": True})] and got["num_layers"] == 2
