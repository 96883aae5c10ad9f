"""Mixed precision for training: which precision a run uses, why, and the autocast region.

`bf16` runs the forward pass and the loss under `torch.autocast(dtype=torch.bfloat16)`: matmuls in bf16,
everything that accumulates or is kept stays fp32 (latent weights, gradients, AdamW state, quantizer scales,
the KD and label losses, the teacher-output cache). `auto` (the default) picks bf16 where it is faster: CUDA with
bf16 support and CPUs with usable AMX-BF16; fp32 elsewhere, including CPUs with AVX512-BF16 but no AMX, where
bf16 measured about 1.5x slower than fp32. Evaluation always runs in fp32 (measured: see README).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

from xtc.config import PRECISIONS


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str  # "fp32" or "bf16"
    reason: str

    def to_dict(self) -> dict:
        return {"train": self.precision, "eval": "fp32", "reason": self.reason}


def _cpu_bf16_units() -> tuple[bool, bool]:
    """(usable AMX-BF16, AVX512-BF16) on this CPU: the cpuinfo flags and torch's runtime checks (AMX also needs
    the operating system to grant the tile state, which some VMs do not)."""
    import torch

    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    amx = torch.cpu._is_amx_tile_supported() and ("amx_bf16" in flags or not flags)
    avx512_bf16 = "avx512_bf16" in flags or torch.cpu._is_avx512_bf16_supported()
    return amx, avx512_bf16


# Measured on a 2-core AVX512-BF16 CPU without usable AMX (bench/results/qat_throughput_mrpc_6L_precision.json,
# eval_precision_mrpc.json): bf16 autocast made the cached 1-bit QAT+KD step 1.47x, fp32 fine-tuning 1.54x and
# dev evaluation 1.45x SLOWER than fp32. So on CPUs only AMX makes bf16 the default.
SLOW_WITHOUT_AMX = "bf16 measured 1.5x slower than fp32 there (bench/results/qat_throughput_mrpc_6L_precision.json)"


def device_bf16_support(device) -> tuple[bool, str]:
    """(bf16 faster than fp32 on `device`?, a short explanation)."""
    import torch  # here, not at the top: the CLI reads PRECISIONS without importing torch

    device = torch.device(device)
    if device.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
        name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "CUDA"
        return ok, f"{name} {'supports' if ok else 'lacks native'} bf16"
    if device.type == "cpu":
        amx, avx512_bf16 = _cpu_bf16_units()
        if amx:
            return True, "CPU has AMX-BF16"
        if avx512_bf16:
            return False, f"CPU has AVX512-BF16 but no usable AMX: {SLOW_WITHOUT_AMX}"
        return False, "CPU lacks AMX-BF16 and AVX512-BF16 (bf16 would be emulated)"
    return False, f"no bf16 autocast support known for device type {device.type!r}"


def resolve_precision(requested: str, device) -> PrecisionChoice:
    """The training precision for `requested` ("auto", "fp32" or "bf16") on `device`, with the reason."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    ok, why = device_bf16_support(device)
    if requested == "auto":
        return PrecisionChoice("bf16" if ok else "fp32", f"auto: {why}")
    if requested == "bf16" and not ok:
        return PrecisionChoice("bf16", f"requested --precision bf16 although {why}: expect it to be slower")
    return PrecisionChoice(requested, f"requested --precision {requested}")


def autocast(precision: str, device):
    """The training step's forward+loss region: bf16 autocast, or nothing at all for fp32 (bit-identical to
    code without mixed precision)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"autocast needs a resolved precision (fp32 or bf16), got {precision!r}")
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def full_precision(device_type: str):
    """Inside an autocast region: compute in fp32 (the losses, whose reductions bf16 would round)."""
    import torch

    return torch.autocast(device_type=device_type, enabled=False)
