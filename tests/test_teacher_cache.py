"""The teacher-output cache: same targets as the live teacher, planned within its budget, exact resume."""
import json
import os

import pytest
import torch

from conftest import interrupt_after_checkpoints, tiny_config
from xtc.compress import CompressConfig, compress
from xtc.config import RunOptions
from xtc.data import Encoded, collate, train_batches
from xtc.distill import KDConfig, forward_with_internals, layer_maps, make_kd_loss, reduce_layers
from xtc.finetune import finetune
from xtc.quant import QuantSpec
from xtc.teacher_cache import TeacherCache, plan_cache
from xtc.train import TrainConfig

# fp32: the live-vs-cached comparison needs the live teacher in fp32 too (under bf16 it runs in the autocast region)
CFG = TrainConfig(epochs=3, lr=1e-2, batch_size=8, eval_every=3, warmup_epochs=0.5, seed=5, precision="fp32")


def _data(n=21, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, 14, (n,), generator=g).tolist()
    ids = [[2] + torch.randint(5, 60, (L - 2,), generator=g).tolist() + [3] for L in lengths]
    types = [[0] * (L // 2) + [1] * (L - L // 2) for L in lengths]
    return Encoded(ids, types, [i % 2 for i in range(n)])


def _teacher():
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_config()).eval()


@pytest.mark.parametrize("reduced", [False, True])
def test_cached_targets_equal_the_live_teacher(reduced):
    teacher, data = _teacher(), _data()
    layers = [1, 3] if reduced else None
    lmap = layer_maps(2 if reduced else 4, 4, layers)
    terms = {"logit", "hidden", "attention"}
    cache = TeacherCache(teacher, data, lmap, terms, "cpu", batch_size=5, quiet=True)
    batch_idx = train_batches(data, 8, seed=1, epoch=0)[0]
    batch = collate(data, batch_idx)
    mask = batch["attention_mask"].bool()
    live = forward_with_internals(teacher, batch, attentions=True, hidden=True)
    got = cache.lookup(torch.tensor(batch_idx), batch["input_ids"].shape[1], "cpu")
    torch.testing.assert_close(got.logits, live.logits, atol=1e-5, rtol=1e-5)
    used_h = {j for _, j in lmap.hidden}
    for j in range(5):
        if j in used_h:
            torch.testing.assert_close(got.hidden_states[j][mask], live.hidden_states[j][mask], atol=1e-5, rtol=1e-5)
            assert (got.hidden_states[j][~mask] == 0).all()
        else:
            assert got.hidden_states[j] is None  # not kept: the layer map never reads it
    pair = mask[:, None, :, None] & mask[:, None, None, :]
    for _, j in lmap.attention:
        p = pair.expand_as(live.attention_scores[j])
        torch.testing.assert_close(got.attention_scores[j][p], live.attention_scores[j][p], atol=1e-5, rtol=1e-5)
    # and so the KD loss a student sees is the same, live or cached
    student = reduce_layers(teacher, layers or [0, 1, 2, 3])
    full = {**batch, "index": torch.tensor(batch_idx)}
    kd_live = make_kd_loss(teacher, False, KDConfig(), lmap)(tuple(terms))
    kd_cached = make_kd_loss(teacher, False, KDConfig(), lmap, cache)(tuple(terms))
    (l1, t1), (l2, t2) = kd_live(student, full), kd_cached(student, full)
    assert l2.item() == pytest.approx(l1.item(), rel=1e-5, abs=1e-6)
    assert t1.keys() == t2.keys()


def test_only_what_the_terms_need_is_cached_and_gathered():
    teacher, data = _teacher(), _data()
    lmap = layer_maps(4, 4)
    cache = TeacherCache(teacher, data, lmap, {"logit"}, "cpu", 64, quiet=True)
    got = cache.lookup(torch.tensor([0, 1]), max(data.lengths[:2]), "cpu")
    assert cache.hidden is None and got.hidden_states is None and got.attention_scores is None
    assert got.logits.shape == (2, 2)
    # a logits-only stage (two-stage KD, stage 2) gathers nothing else from a full cache
    full = TeacherCache(teacher, data, lmap, {"logit", "hidden", "attention"}, "cpu", 64, quiet=True)
    got = full.lookup(torch.tensor([0, 1]), max(data.lengths[:2]), "cpu", need_hidden=False,
                      need_attention=False)
    assert got.hidden_states is None and got.attention_scores is None
    torch.testing.assert_close(got.logits, cache.logits[[0, 1]])


def test_plan_cache_budget_epochs_and_size():
    teacher, data = _teacher(), _data()
    cfg = teacher.config
    lmap = layer_maps(4, 4)
    n_tok, n_sq = sum(data.lengths), sum(n * n for n in data.lengths)
    want = 4 * (len(data) * 2 + 5 * n_tok * cfg.hidden_size + 4 * cfg.num_attention_heads * n_sq)
    plan = plan_cache(data, cfg, lmap, {"logit", "hidden", "attention"}, 3.0, 1.0)
    assert plan.use and plan.bytes == want
    cache = TeacherCache(teacher, data, lmap, {"logit", "hidden", "attention"}, "cpu", 64, quiet=True)
    stored = (cache.logits.numel() + cache.hidden[:, :-1].numel() + sum(a.numel() for a in cache.attention)) * 4
    assert stored == cache.nbytes == want  # the estimate is the real size (plus one zero padding row)
    logits_bytes = 4 * len(data) * 2
    off, short = plan_cache(data, cfg, lmap, {"logit"}, 3.0, 0.0), plan_cache(data, cfg, lmap, {"logit"}, 0.5, 1.0)
    assert off.use is False and off.bytes == logits_bytes  # a plan not taken still reports the size it would have had
    assert short.use is False and short.bytes == logits_bytes and "under one epoch" in short.reason
    over = plan_cache(data, cfg, lmap, {"logit", "hidden"}, 3.0, (want / 2) / 2**30)
    assert over.use is False and over.bytes == 4 * (len(data) * 2 + 5 * n_tok * cfg.hidden_size)
    assert "over --teacher-cache-gb" in over.reason


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_model_dir, glue_dir):
    out = str(tmp_path_factory.mktemp("runs") / "teacher")
    finetune("sst2", tiny_model_dir, out, TrainConfig(epochs=2, lr=1e-2, batch_size=16),
             run=RunOptions(glue_dir=glue_dir, quiet=True))
    return out


def test_cached_run_resumes_exactly_and_tracks_the_live_one(tmp_path, teacher_dir, glue_dir, monkeypatch):
    spec, cc = QuantSpec(wbits=1, abits=8), CompressConfig(layers=2)
    full = compress("sst2", teacher_dir, str(tmp_path / "full"), CFG, spec, cc,
                    run=RunOptions(glue_dir=glue_dir, quiet=True))
    assert full["teacher_cache"]["used"] and full["teacher_cache"]["bytes"] > 0
    out = str(tmp_path / "resumed")
    interrupt_after_checkpoints(monkeypatch, 2,
                                lambda: compress("sst2", teacher_dir, out, CFG, spec, cc,
                                                 run=RunOptions(glue_dir=glue_dir, quiet=True)))
    resumed = compress("sst2", teacher_dir, out, CFG, spec, cc, run=RunOptions(glue_dir=glue_dir, quiet=True))
    assert [h["train"] for h in resumed["history"]] == [h["train"] for h in full["history"]]
    assert resumed["metrics"] == full["metrics"]
    # the live teacher gives the same first losses up to float rounding
    live = compress("sst2", teacher_dir, str(tmp_path / "live"), CFG, spec,
                    CompressConfig(layers=2, teacher_cache_gb=0), run=RunOptions(glue_dir=glue_dir, quiet=True))
    assert not live["teacher_cache"]["used"] and "disabled" in live["teacher_cache"]["reason"]
    for k, v in live["history"][0]["train"].items():
        assert full["history"][0]["train"][k] == pytest.approx(v, rel=1e-4)
    with open(os.path.join(str(tmp_path / "live"), "metrics.json")) as f:
        assert json.load(f)["config"]["teacher_cache_gb"] == 0
    with pytest.raises(ValueError, match="--teacher-cache-gb must be >= 0"):
        compress("sst2", teacher_dir, str(tmp_path / "bad"), CFG, spec, CompressConfig(teacher_cache_gb=-1),
                 run=RunOptions(glue_dir=glue_dir, quiet=True))


class _Lengths:
    """Stands in for Encoded in plan_cache, which reads only len() and .lengths: a big set without tokenizing."""

    def __init__(self, lengths):
        self.lengths = lengths

    def __len__(self):
        return len(self.lengths)


def test_plan_cache_boundaries_and_reasons():
    cfg = _teacher().config
    lmap = layer_maps(4, 4)
    data = _Lengths([128] * 20000)  # 20k examples of 128 tokens: a cache of GiBs
    terms = {"logit", "hidden"}
    size = plan_cache(data, cfg, lmap, terms, 3.0, 1e6).bytes
    gib = size / 2**30
    assert size == 4 * (20000 * 2 + 5 * 20000 * 128 * cfg.hidden_size) and gib > 0.5
    off = plan_cache(data, cfg, lmap, terms, 3.0, 0.0)
    assert not off.use and off.reason == "disabled (--teacher-cache-gb 0)"
    assert plan_cache(data, cfg, lmap, terms, 1.0, 1e6).use  # exactly one epoch of KD: cached
    assert plan_cache(data, cfg, lmap, terms, 1.5, 1e6).use
    short = plan_cache(data, cfg, lmap, terms, 0.99, 1e6)
    assert not short.use and short.reason == "under one epoch of KD (0.99): a live teacher costs less"
    fits = plan_cache(data, cfg, lmap, terms, 3.0, gib)  # exactly the budget: fits
    assert fits.use and fits.reason == f"{gib:.2f} GiB"
    over = plan_cache(data, cfg, lmap, terms, 3.0, gib / 2)
    assert not over.use and over.reason == f"needs {gib:.2f} GiB, over --teacher-cache-gb {gib / 2:g}"


def test_lookup_has_the_live_structure_sizes_add_up_and_no_bar_off_a_terminal(capsys):
    teacher, data = _teacher(), _data()
    lmap = layer_maps(4, 4)
    cache = TeacherCache(teacher, data, lmap, {"logit", "hidden"}, "cpu", 64, quiet=False)
    assert capsys.readouterr().err == ""  # stderr is not a terminal here: no progress bar even when not quiet
    batch = collate(data, [0, 1])
    live = forward_with_internals(teacher, batch, attentions=False, hidden=True)
    got = cache.lookup(torch.tensor([0, 1]), batch["input_ids"].shape[1], "cpu")
    assert len(got.hidden_states) == len(live.hidden_states)  # one slot per hidden state, as the live forward
    logits_only = TeacherCache(teacher, data, lmap, {"logit"}, "cpu", 64, quiet=True)
    assert logits_only.hidden is None and logits_only.nbytes == len(data) * teacher.config.num_labels * 4


def test_cache_runs_the_teacher_on_its_device_without_labels_and_shows_a_bar_on_a_terminal(monkeypatch):
    import xtc.teacher_cache as tc

    teacher, data, lmap = _teacher(), _data(), layer_maps(4, 4)
    seen, bars = [], []

    def forward_on(model, batch, **kw):  # records where the inputs went; runs the real forward on CPU inputs of that shape
        seen.append({k: v.device.type for k, v in batch.items()})
        return forward_with_internals(model, {k: torch.ones(v.shape, dtype=v.dtype) for k, v in batch.items()}, **kw)

    def fake_tqdm(it, **kw):
        bars.append(kw)
        return it

    monkeypatch.setattr(tc, "forward_with_internals", forward_on)
    monkeypatch.setattr(tc, "tqdm", fake_tqdm)
    monkeypatch.setattr(tc.sys.stderr, "isatty", lambda: True, raising=False)
    tc.TeacherCache(teacher, data, lmap, {"logit"}, "cpu", 64, quiet=False)
    assert seen and all(s == {"input_ids": "cpu", "token_type_ids": "cpu", "attention_mask": "cpu"} for s in seen)
    seen.clear()
    tc.TeacherCache(teacher, data, lmap, {"logit"}, "meta", 64, quiet=True)
    assert seen and set(seen[0].values()) == {"meta"} and "labels" not in seen[0]
    assert bars[0] == {"desc": "teacher cache", "unit": "batch", "disable": False}
    assert bars[1]["disable"] is True


def test_lookup_puts_every_output_on_the_requested_device_and_takes_a_single_example():
    teacher, data, lmap = _teacher(), _data(), layer_maps(4, 4)
    cache = TeacherCache(teacher, data, lmap, {"logit", "hidden", "attention"}, "cpu", 64, quiet=True)
    got = cache.lookup(torch.tensor([3, 4]), 14, "meta")
    assert got.logits.device.type == "meta"
    assert {t.device.type for t in got.hidden_states + got.attention_scores} == {"meta"}
    one = cache.lookup(torch.tensor([2]), data.lengths[2], "cpu")  # a batch of one example
    live = forward_with_internals(teacher, collate(data, [2]), attentions=True, hidden=True)
    assert len(one.attention_scores) == len(live.attention_scores) == 4
    torch.testing.assert_close(one.attention_scores[3], live.attention_scores[3], atol=1e-5, rtol=1e-5)
