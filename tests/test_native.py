"""The encoder in C++ (xtc.native, chosen by xtc.infer.use_native_encoder): the same logits as the Python integer
path, and where it declines a model."""
from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import _vocab, tiny_arch_config
from test_arch import _batch
from test_infer import _export, _tokenizer
from test_predict import SHAPES, _inputs
from transformers import AutoModelForSequenceClassification, BertTokenizerFast

from xtc import native
from xtc.arch import uses_token_types
from xtc.cli import main
from xtc.infer import IntLinear, ServedModel, load_int_model, serve, use_native_encoder
from xtc.pack import export_packed
from xtc.quant import QuantSpec, apply_quantization

SPECS = {"w1a8": QuantSpec(wbits=1, abits=8), "w2a8-groups": QuantSpec(wbits=2, abits=8, groups=4),
         "w4a8": QuantSpec(wbits=4, abits=8)}


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    """torch's thread count for the test (2: short inputs run as one team of threads, xtc/csrc/int_encoder.cpp)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def built():
    why = native.load()
    if why:
        pytest.fail(f"the native library did not build here: {why}")  # CI has g++ and ninja: a build error is a bug


@pytest.mark.parametrize("codes", [(-1, 1, 2), (-1, 0, 1), (-2, 1, 1), (-8, 7, 1), (-128, 127, 1), (3, 3, 1),
                                   (-5, 9, 1)], ids=["binary", "ternary", "2-bit", "4-bit", "8-bit", "constant",
                                                     "offset"])
@pytest.mark.parametrize("m,k,n", [(1, 4, 64), (5, 37, 70), (13, 384, 1152), (200, 9, 130)])
def test_packed_codes_multiply_as_the_int32_product(built, codes, m, k, n):
    lo, hi, step = codes  # codes lo, lo + step, ..., hi; rows past 192 (a task's row block), K and N off the tiles
    g = torch.Generator().manual_seed(m * k + n)
    levels = torch.arange(lo, hi + 1, step, dtype=torch.int8)
    w = levels[torch.randint(len(levels), (k, n), generator=g)]
    q = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
    planes, info = torch.ops.xtc_native.pack_codes(w)
    bits_per_weight = planes.shape[-1]
    assert bits_per_weight == {2: 1, 3: 2, 4: 2, 16: 4, 256: 8, 1: 0, 15: 4}[len(levels)]  # binary: 1 bit, not 2
    out = torch.ops.xtc_native.packed_matmul(q, planes, info)
    assert out.dtype == torch.float32 and out.shape == (m, n)
    assert torch.equal(out, (q.to(torch.int64) @ w.to(torch.int64)).to(torch.float32))


_FALLBACK_CHECK = """
import os, sys, torch
from xtc import native
native.CFLAGS = native.CFLAGS + sys.argv[1].split()
why = native.load()
assert why is None, why
g = torch.Generator().manual_seed(0)
for lo, hi in ((-1, 1), (-8, 7), (-128, 127)):
    for m, k, n in ((1, 4, 64), (5, 37, 70), (40, 384, 130)):
        w = torch.randint(lo, hi + 1, (k, n), generator=g, dtype=torch.int8)
        q = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
        out = torch.ops.xtc_native.packed_matmul(q, *torch.ops.xtc_native.pack_codes(w))
        assert torch.equal(out, (q.long() @ w.long()).float()), (lo, hi, m, k, n)
# the whole encoder (quantize, GEMM epilogue, team of threads) against the Python integer path
import pathlib
sys.path.insert(0, sys.argv[2])
from test_infer import _export, _tokenizer
from test_predict import SHAPES, _inputs
from xtc.infer import load_int_model, use_native_encoder
from xtc.quant import QuantSpec
path = _export(pathlib.Path(sys.argv[3]), QuantSpec(wbits=1, abits=8), tokenizer=_tokenizer())
python, fast = load_int_model(path)[0], load_int_model(path)[0]
assert use_native_encoder(fast) is None
for threads in (1, 2):
    torch.set_num_threads(threads)
    with torch.inference_mode():
        for batch, length, padded in SHAPES:
            x = _inputs(batch, length, padded)
            assert torch.equal(python(**x).logits, fast(**x).logits), (threads, batch, length)
print("exact")
"""


@pytest.mark.parametrize("flags", ["-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
                                   "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16 -mno-avx512f -mno-avxvnni"],
                         ids=["avx512-vnni", "plain-c++"])
def test_native_encoder_is_exact_on_cpus_without_amx_or_avx512(built, tmp_path, flags):
    # the library as it is built for such a CPU (here: the same source without those instructions): its GEMM, and
    # the encoder's logits against the Python integer path at 1 and 2 threads
    import subprocess
    import sys

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    tests = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run([sys.executable, "-c", _FALLBACK_CHECK, flags, tests, str(tmp_path)], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "exact", r.stderr[-2000:]


def test_native_encoder_is_exact_where_outputs_share_a_panel_of_columns(built, tmp_path, threads):
    # hidden 24: query, key and value columns meet inside one 16-column group, the rescale's scalar path
    from conftest import tiny_config
    from transformers import BertForSequenceClassification

    cfg = tiny_config()
    cfg.hidden_size, cfg.intermediate_size = 24, 40
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg).eval()
    apply_quantization(model, SPECS["w1a8"])
    path = str(tmp_path / "odd.xtc")
    export_packed(model, _tokenizer(), path)
    python, _ = load_int_model(path)
    fast, _ = load_int_model(path)
    assert use_native_encoder(fast) is None
    with torch.inference_mode():
        for batch, length, padded in SHAPES:
            x = _inputs(batch, length, padded)
            assert torch.equal(python(**x).logits, fast(**x).logits), (batch, length)


@pytest.mark.parametrize("spec", list(SPECS), ids=list(SPECS))
def test_native_encoder_gives_the_python_integer_paths_logits_bit_for_bit(built, tmp_path, spec, threads):
    path = _export(tmp_path, SPECS[spec], tokenizer=_tokenizer())
    python, _ = load_int_model(path)
    fast, _ = load_int_model(path)
    assert use_native_encoder(fast) is None
    assert isinstance(fast.base_model.encoder, native.NativeEncoder)
    with torch.inference_mode():
        for batch, length, padded in SHAPES:  # batch 1 at two lengths, padding inside larger batches
            x = _inputs(batch, length, padded)
            a, b = python(**x).logits, fast(**x).logits
            assert torch.equal(a, b), (spec, batch, length, (a - b).abs().max())
        # the op ran (not the Python layers it keeps): calling them again gives the same, calling the op directly
        x = _inputs(2, 9, 1)
        h = fast.base_model.embeddings(input_ids=x["input_ids"], token_type_ids=x["token_type_ids"])
        out = torch.ops.xtc_native.bert_encoder(h, None, fast.base_model.encoder.params, fast.base_model.encoder.bits,
                                                fast.config.num_attention_heads, fast.config.layer_norm_eps)
        ref = python.base_model.encoder(h).last_hidden_state
        assert torch.equal(out, ref)


def test_serving_load_packs_each_layer_as_it_loads(built, tmp_path, monkeypatch):
    # the load never holds more than one layer's int8 codes: each layer is packed once its six Linear are in
    import gc

    from xtc.infer import load_for_serving

    path = _export(tmp_path, SPECS["w1a8"], tokenizer=_tokenizer())
    holding, pack = [], native.pack_layer

    def counting_pack(layer, release_codes):
        gc.collect()
        holding.append(sum(type(o) is IntLinear and o.weight_codes_t.numel() > 0 for o in gc.get_objects()))
        return pack(layer, release_codes)

    monkeypatch.setattr(native, "pack_layer", counting_pack)
    model, _ = load_for_serving(path, "auto")
    assert len(holding) == 4 and max(holding) == 6, holding  # 4 layers, each packed with its own 6 modules' codes
    served = ServedModel(model, engine="native")
    python, _ = load_int_model(path)
    x = _inputs(2, 9, 1)
    with torch.inference_mode():
        assert torch.equal(served(**x).logits, python(**x).logits)


def test_serving_load_reloads_whole_when_the_native_engine_declines_a_layer(built, tmp_path, monkeypatch):
    # layer 0 is packed as it loads, layer 1 is declined: another engine serves, so every layer needs its codes
    from xtc import infer

    path = _export(tmp_path, SPECS["w1a8"], tokenizer=_tokenizer())
    check = infer._native_layer_unsupported
    monkeypatch.setattr(infer, "_native_layer_unsupported", lambda layer, i: "declined" if i == 1 else check(layer, i))
    model, _ = infer.load_for_serving(path, "auto")
    assert all(m.weight_codes_t.numel() > 0 for m in model.modules() if isinstance(m, IntLinear))
    served = ServedModel(model, engine="auto", fallback="eager")
    assert served.engine == "eager" and served.native_unavailable == "declined"
    python, _ = load_int_model(path)
    x = _inputs(2, 9, 1)
    with torch.inference_mode():
        assert torch.equal(served(**x).logits, python(**x).logits)


def test_native_encoder_leaves_training_and_gradients_to_the_python_layers(built, tmp_path):
    path = _export(tmp_path, SPECS["w1a8"], tokenizer=_tokenizer())
    fast, _ = load_int_model(path)
    use_native_encoder(fast)
    x = _inputs(1, 7, 0)
    calls = []
    handle = fast.base_model.encoder.python_encoder.register_forward_hook(lambda *a: calls.append(1))
    with torch.inference_mode():
        a = fast(**x).logits
    assert calls == []  # inference: the op
    assert torch.equal(fast(**x).logits, a) and calls == []  # grad mode on, nothing requires grad: the op too
    with torch.no_grad():
        fast(**x, output_hidden_states=True)  # per-layer outputs: only the Python layers have them
    assert calls == [1]
    handle.remove()
    # served: the codes are kept once (oneDNN's copy), so what only the Python layers compute is refused
    served, _ = serve(path, engine="native")
    enc = served.base_model.encoder
    assert not hasattr(enc, "python_encoder") and not any(isinstance(m, IntLinear) for m in served.modules())
    with torch.inference_mode():
        assert torch.equal(served(**x).logits, a)
        with pytest.raises(ValueError, match="native engine.*load_int_model"):
            served(**x, output_hidden_states=True)


def test_models_it_cannot_run_are_left_as_they_were(built, tmp_path):
    # per-tensor activation scales: the native quantizer is per token
    path = _export(tmp_path, QuantSpec(wbits=1, abits=8, act_per_token=False), tokenizer=_tokenizer())
    m, _ = load_int_model(path)
    enc = m.base_model.encoder
    why = use_native_encoder(m)
    assert why and "per-tensor" in why and m.base_model.encoder is enc
    # some Linear layers left in fp32 (only the FFN quantized)
    path = _export(tmp_path, QuantSpec(wbits=1, abits=8, roles=("ffn_in", "ffn_out")), "ffn.xtc", _tokenizer())
    m, _ = load_int_model(path)
    why = use_native_encoder(m)
    assert why and "not integer" in why
    served = ServedModel(m, engine="auto", fallback="eager")
    assert served.engine == "eager" and served.native_unavailable == why
    with pytest.raises(ValueError, match="native engine cannot serve this model: .*not integer"):
        ServedModel(load_int_model(path)[0], engine="native")


def test_a_library_that_cannot_be_built_falls_back_with_the_reason(tmp_path, monkeypatch):
    path = _export(tmp_path, SPECS["w1a8"], tokenizer=_tokenizer())
    monkeypatch.setattr(native, "load", lambda verbose=False: "building the native encoder failed (no g++)")
    served, _ = serve(path, engine="auto")
    assert served.engine == "compiled" and "no g++" in served.native_unavailable
    served = ServedModel(load_int_model(path)[0], engine="auto", fallback="eager")
    assert served.engine == "eager" and not isinstance(served.base_model.encoder, native.NativeEncoder)
    with pytest.raises(ValueError, match="no g\\+\\+"):
        ServedModel(load_int_model(path)[0], engine="native")


def test_build_key_follows_the_source_and_the_cpu(monkeypatch, tmp_path):
    key = native.build_key()
    monkeypatch.setattr(native, "cpu_model_name", lambda: "another CPU")
    assert native.build_key() != key
    monkeypatch.undo()
    src = tmp_path / "int_encoder.cpp"
    src.write_text(open(native.SOURCE).read() + "\n// changed\n")
    monkeypatch.setattr(native, "SOURCE", str(src))
    assert native.build_key() != key
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert native.cache_dir() == str(tmp_path / "cache" / "xtc" / "native")


def test_cli_predict_engines_agree(built, tmp_path, capsys, glue_dir):
    path = _export(tmp_path, SPECS["w1a8"], tokenizer=_tokenizer())
    rows = {}
    for engine in ("auto", "native", "eager"):
        out = tmp_path / f"{engine}.csv"
        assert main(["predict", "--model", path, "--task", "sst2", "--glue-dir", glue_dir, "--out", str(out),
                     "--engine", engine, "--threads", "1"]) == 0
        cap = capsys.readouterr()
        serving = json.loads(cap.out)["serving"]
        assert serving["engine"] == ("native" if engine == "auto" else engine)
        assert f"{serving['engine']} engine" in cap.err
        rows[engine] = out.read_text()
    assert rows["auto"] == rows["native"] == rows["eager"]  # same labels and logits, to the last digit


def test_keep_freed_memory_sets_glibcs_thresholds():
    assert native.keep_freed_memory() is True


def test_a_failed_build_is_one_line_and_leaves_no_library(tmp_path, monkeypatch):
    monkeypatch.setattr(native, "_loaded", None)
    monkeypatch.setattr(native, "_load_error", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))  # the compiler torch's extension builder calls
    why = native.load()
    assert why and why.startswith("building the native encoder failed") and "\n" not in why
    assert native.load() == why  # decided once per process
    assert not list((tmp_path / "cache").rglob("*.so"))


@pytest.mark.parametrize("family,served", [("bert", True), ("roberta", True), ("electra", True),
                                           ("distilbert", False), ("deberta-v2", False)])
def test_other_architectures_are_served_natively_or_declined(built, family, served, tmp_path):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_arch_config(family)).eval()
    apply_quantization(model, QuantSpec(wbits=1, abits=8))
    path = str(tmp_path / "m.xtc")
    export_packed(model, BertTokenizerFast(vocab={w: i for i, w in enumerate(_vocab())}, do_lower_case=True), path)
    python, _ = load_int_model(path)
    fast, _ = load_int_model(path)
    why = use_native_encoder(fast)
    assert (why is None) == served, why
    batch = {k: v for k, v in _batch().items() if k != "token_type_ids" or uses_token_types(python)}
    with torch.inference_mode():
        assert torch.equal(python(**batch).logits, fast(**batch).logits)
