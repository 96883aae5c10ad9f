"""Mixed precision for training: which precision a run uses, why, and the autocast region.

`bf16` runs the forward pass and the loss under `torch.autocast(dtype=torch.bfloat16)`: matmuls in bf16,
everything that accumulates or is kept stays fp32 (latent weights, gradients, AdamW state, quantizer scales,
the KD and label losses, the teacher-output cache). `auto` (the default) picks bf16 where the device computes
it natively (CPU with AMX-BF16 or AVX512-BF16, CUDA with bf16 support) and fp32 elsewhere, where bf16 would be
emulated and slower. Evaluation always runs in fp32 (measured: see README "Mixed precision").
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str  # "fp32" or "bf16"
    reason: str

    def to_dict(self) -> dict:
        return {"train": self.precision, "eval": "fp32", "reason": self.reason}


def _cpu_bf16_support() -> tuple[bool, str]:
    """Whether this CPU has native bf16 arithmetic, and which instructions say so."""
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
    found = []
    if "amx_bf16" in flags or torch.cpu._is_amx_tile_supported():
        found.append("AMX-BF16")
    if "avx512_bf16" in flags or torch.cpu._is_avx512_bf16_supported():
        found.append("AVX512-BF16")
    return bool(found), " and ".join(found)


def device_bf16_support(device) -> tuple[bool, str]:
    """(native bf16 on `device`?, a short explanation)."""
    import torch  # here, not at the top: the CLI reads PRECISIONS without importing torch

    device = torch.device(device)
    if device.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
        name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "CUDA"
        return ok, f"{name} {'supports' if ok else 'lacks native'} bf16"
    if device.type == "cpu":
        ok, found = _cpu_bf16_support()
        return ok, f"CPU has {found}" if ok else "CPU lacks AMX-BF16 and AVX512-BF16 (bf16 would be emulated)"
    return False, f"no bf16 autocast support known for device type {device.type!r}"


def resolve_precision(requested: str, device) -> PrecisionChoice:
    """The training precision for `requested` ("auto", "fp32" or "bf16") on `device`, with the reason."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    ok, why = device_bf16_support(device)
    if requested == "auto":
        return PrecisionChoice("bf16" if ok else "fp32", f"auto: {why}")
    if requested == "bf16" and not ok:
        return PrecisionChoice("bf16", f"requested --precision bf16 although {why}: expect it to be slow")
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
