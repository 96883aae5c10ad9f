"""The serving path of a packed student (xtc.infer.ServedModel, `xtc predict`): what it predicts, its settings."""
from __future__ import annotations

import json
import os

import pytest
import torch
from test_infer import _export, _tokenizer

from xtc.cli import main
from xtc.infer import ServedModel, load_int_model, serve
from xtc.quant import QuantSpec, int8_matmul, int8_matmul_f32, prepack_int8_weight

# (batch, length, padded rows): batch 1 at two lengths, small and larger batches, padding inside a batch
SHAPES = [(1, 7, 0), (1, 24, 0), (3, 16, 1), (8, 24, 3)]


def _inputs(batch, length, padded, seed=0):
    g = torch.Generator().manual_seed(seed + 31 * batch + length)
    ids = torch.randint(5, 120, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    for r in range(padded):
        mask[r, length // 2 + r:] = 0
    types = torch.zeros_like(ids)
    types[:, length // 2:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@pytest.fixture(scope="module")
def w1a8_file(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("served"), QuantSpec(wbits=1, abits=8), tokenizer=_tokenizer())


@pytest.mark.parametrize("m", [1, 7, 64, 300])
def test_prepacked_int8_gemm_equals_the_int32_product(m):
    g = torch.Generator().manual_seed(m)
    q = torch.randint(-128, 128, (m, 96), dtype=torch.int8, generator=g)
    codes_t = torch.randint(-1, 2, (96, 40), dtype=torch.int8, generator=g)
    packed = prepack_int8_weight(codes_t)
    assert packed is not None
    exact = int8_matmul(q, codes_t).to(torch.float32)
    assert torch.equal(int8_matmul_f32(q, codes_t, packed), exact)
    assert torch.equal(torch.ops.xtc.int8_matmul_f32(q, codes_t), exact)  # the op compiled graphs call
    # where |q @ codes| could reach 2^24 (not every integer an fp32), no prepacked route: the int32 product
    wide = torch.full((1100, 8), 127, dtype=torch.int8)
    assert prepack_int8_weight(wide) is None


@pytest.mark.skipif(not os.environ.get("XTC_COMPILE_TESTS"), reason="Inductor's C++ build of even a tiny BERT takes "
                    "minutes on a CI machine; set XTC_COMPILE_TESTS=1 (real students: bench/serve_exactness.py)")
def test_served_model_computes_what_the_eager_integer_path_computes(w1a8_file, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    eager, _ = load_int_model(w1a8_file)
    served, tok = serve(w1a8_file, engine="compiled")
    assert tok is not None and served.is_compiled
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with torch.inference_mode():
        for batch, length, padded in SHAPES:
            x = _inputs(batch, length, padded)
            a, b = eager(**x).logits, served(**x).logits
            # the same activation codes and GEMMs: labels equal, logits to the last bits of fp32 (the fused
            # pooler/classifier kernels round differently; real students: <= 2.4e-7, bench/serve_exactness.py)
            assert torch.equal(a.argmax(-1), b.argmax(-1)) and (a - b).abs().max() <= 1e-6, (batch, length)
    assert served.is_compiled and served.fallback is None  # compiled, not fallen back to eager
    # one compilation for every length and batch size (dynamic shapes): batch 1 and batch > 1 at most
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] <= 2
    assert any((tmp_path / "inductor").iterdir())  # the compiled graphs are kept on disk for the next process


def test_served_model_falls_back_to_eager_with_one_line(w1a8_file, capsys):
    eager, _ = load_int_model(w1a8_file)
    served = ServedModel(load_int_model(w1a8_file)[0], engine="compiled")

    def failed_compilation(*args, **kwargs):  # what a compiled model raises when its backend fails (no Dynamo trace)
        try:
            raise RuntimeError("no C++ compiler here\n(details)")
        except RuntimeError as cause:
            raise torch._dynamo.exc.BackendCompilerFailed(lambda *a: None, cause, None) from cause

    served.compiled = failed_compilation
    x = _inputs(3, 16, 1)
    with torch.inference_mode():
        a, b = eager(**x).logits, served(**x).logits
    assert torch.equal(a, b) and not served.is_compiled and served.engine == "eager"
    assert served.fallback == "RuntimeError: no C++ compiler here"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "running it eager" in err[0] and "no C++ compiler here" in err[0]
    with torch.inference_mode():  # the eager model from then on, without a second message
        assert torch.equal(served(**x).logits, a)
    assert capsys.readouterr().err == ""
    # attributes of the wrapped model read through (xtc.arch.inputs_for, the CLI's checks use them)
    assert served.config is served.model.config and served.base_model is served.model.base_model


def test_cli_predict_threads_and_cold_start(w1a8_file, tmp_path, capsys, glue_dir):
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            out = tmp_path / f"p{threads}.csv"
            assert main(["predict", "--model", w1a8_file, "--task", "sst2", "--glue-dir", glue_dir, "--out",
                         str(out), "--threads", str(threads), "--engine", "eager"]) == 0
            cap = capsys.readouterr()
            serving = json.loads(cap.out)["serving"]
            assert serving["threads"] == threads and torch.get_num_threads() == threads
            assert serving["engine"] == "eager"  # --engine eager: the Python integer path
            assert serving["cold_start_seconds"] > 0
            assert serving["cold_start_seconds"] == pytest.approx(serving["load_seconds"]
                                                                  + serving["first_batch_seconds"], abs=2e-3)
            assert "cold start" in cap.err and f"{threads} thread" in cap.err
        # auto where the native engine is not available, on 32 examples (below COMPILE_MIN_EXAMPLES): eager
        from xtc import native

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(native, "load", lambda verbose=False: "building the native encoder failed (test)")
            assert main(["predict", "--model", w1a8_file, "--task", "sst2", "--glue-dir", glue_dir, "--out",
                         str(tmp_path / "auto.csv")]) == 0
        serving = json.loads(capsys.readouterr().out)["serving"]
        assert serving["engine"] == "eager" and "(test)" in serving["native_unavailable"]
        bad = tmp_path / "bad.csv"
        assert main(["predict", "--model", w1a8_file, "--task", "sst2", "--glue-dir", glue_dir, "--out",
                     str(bad), "--threads", "0"]) == 2
        assert "--threads" in capsys.readouterr().err and not bad.exists()
    finally:
        torch.set_num_threads(before)
