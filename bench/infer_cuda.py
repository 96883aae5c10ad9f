"""The integer inference path on CUDA: packed W1A8 / W2A8 students against the fp32 student of the same shape.

On a CUDA device, with all-MiniLM-L6-v2's shape (random-init students: speed does not depend on training):
latency at batch 1 x 128 and batch 32 x 128 (interleaved rounds, CUDA-synchronized wall-clock medians) of the
fp32 Hugging Face model (sdpa), the same under bf16 autocast, our integer path (xtc.infer: int8 codes,
per-token int8 activations, torch._int_mm on int8 tensor cores) and the fake-quant path it was exported from;
and, on the same random inputs, the integer path's agreement with the fake-quant one (labels, largest logit
difference). Real-data exactness on CUDA: bench/infer_exactness.py --device cuda.

    python bench/infer_cuda.py --out bench/results/infer_cuda.json
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile

import torch

from common import emit, time_interleaved
from infer_speed import build_artifacts, random_batch

VARIANTS = ("fp32", "bf16_autocast", "w1a8_int", "w1a8_fake", "w2a8_int", "w2a8_fake")


def load(name: str, paths: dict, device: torch.device):
    from transformers import BertForSequenceClassification

    if name in ("fp32", "bf16_autocast"):
        m = BertForSequenceClassification.from_pretrained(paths["fp32"], attn_implementation="sdpa")
    elif name.endswith("_fake"):
        from xtc.pack import load_packed

        m = load_packed(paths[name.split("_")[0]])[0]
    else:
        from xtc.infer import load_int_model

        m = load_int_model(paths[name.split("_")[0]], with_tokenizer=False)[0]
    m = m.eval().to(device)
    bf16 = name == "bf16_autocast"

    def call(ids, mask, types):
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return m(input_ids=ids, attention_mask=mask, token_type_ids=types).logits

    return call


def latency(fns: dict, x: tuple, rounds: int, device) -> dict:
    """Per variant: the median wall time of one call on `x` and its ratio to fp32 (interleaved rounds, in
    alternating order, CUDA-synchronised)."""
    seconds = time_interleaved(fns, [x], rounds, warmup=3, device=device, alternate=True)
    ref = statistics.median(seconds["fp32"]["wall"])
    return {k: {"median_ms": 1000 * statistics.median(s["wall"]), "ratio_to_fp32": statistics.median(s["wall"]) / ref}
            for k, s in seconds.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="fp32 model whose shape the students take")
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--workdir", help="where models are built (default: a temporary folder)")
    p.add_argument("--device", default="cuda", help="cuda (cpu only to try the script; CPU figures: infer_speed.py)")
    p.add_argument("--out")
    a = p.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("infer_cuda: no CUDA device; run it on a machine with a GPU (CPU figures: bench/infer_speed.py)")
    device = torch.device(a.device)
    workdir = a.workdir or tempfile.mkdtemp(prefix="xtc-infer-cuda-")
    paths = build_artifacts(workdir, a.model, with_ort=False)
    fns = {k: load(k, paths, device) for k in VARIANTS}
    out = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "torch": torch.__version__, "rounds": a.rounds, "shapes": {}}
    for b in (1, 32):
        x = tuple(t.to(device) for t in random_batch(b, 128, seed=b))
        res = latency(fns, x, a.rounds, device)
        for wb in ("w1a8", "w2a8"):
            li, lf = fns[f"{wb}_int"](*x).float(), fns[f"{wb}_fake"](*x).float()
            res[f"{wb}_int"]["agreement_with_fake_quant"] = {
                "labels": float((li.argmax(-1) == lf.argmax(-1)).float().mean()),
                "max_abs_logit_diff": float((li - lf).abs().max())}
        out["shapes"][f"batch{b}x128"] = res
    emit(out, a.out)


if __name__ == "__main__":
    main()
