"""Does torch.compile pay for itself on the activation fake-quant? First-call (compile) time against the
per-call saving, one thread, a (32, 64, 384) bf16 activation through xtc.quant.quantize_activation (8 bits,
one scale per token). Result: bench/results/compile_act_quant.json.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python bench/compile_act_quant.py > bench/results/compile_act_quant.json
"""
from __future__ import annotations

import json
import time

import torch

from xtc.quant import quantize_activation


def act(x: torch.Tensor) -> torch.Tensor:
    return quantize_activation(x, bits=8, per_token=True)


def seconds(f, x) -> float:
    t = time.perf_counter()
    f(x)
    return time.perf_counter() - t


def median_seconds(f, x, n: int = 30) -> float:
    return sorted(seconds(f, x) for _ in range(n))[n // 2]


def main() -> None:
    torch.manual_seed(0)
    compiled = torch.compile(act, dynamic=True)
    x = torch.randn(32, 64, 384).to(torch.bfloat16)
    first = seconds(compiled, x)
    second_shape = seconds(compiled, torch.randn(32, 51, 384).to(torch.bfloat16))
    eager, comp = [], []
    for _ in range(3):
        eager.append(median_seconds(act, x))
        comp.append(median_seconds(compiled, x))
    print(json.dumps({"compile_first_call_s": first, "new_shape_call_s": second_shape, "eager_ms": 1e3 * min(eager),
                      "compiled_ms": 1e3 * min(comp), "equal": torch.equal(act(x), compiled(x))}))


if __name__ == "__main__":
    main()
