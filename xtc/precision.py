"""Mixed precision for training: which precision a run uses, why, and the autocast region.

`bf16` runs the forward pass and the loss under `torch.autocast(dtype=torch.bfloat16)`: matmuls in bf16,
everything that accumulates or is kept stays fp32 (latent weights, gradients, AdamW state, quantizer scales,
the KD and label losses, the teacher-output cache). Evaluation always runs in fp32 (measured: see bench/README.md).

`auto` (the default) decides by measurement. The first run on a machine (key: device type, CPU model or CUDA
device name, torch version) times a few real training steps of its own student on its own batches in fp32 and
bf16, interleaved, and takes bf16 only when it is at least `MIN_GAIN` faster and bf16's dev scores were measured
within the documented tolerance on that device type (`BF16_FIDELITY`). The choice and its figures go to a small
JSON cache (`cache_file()`: $XTC_PRECISION_CACHE, else $XDG_CACHE_HOME/xtc/precision.json, else
~/.cache/xtc/precision.json) that later runs reuse; `xtc precision --show/--clear` reads and clears it. The CPU
flags (AMX-BF16, AVX512-BF16) decide only where no step can be measured (a caller without a training step, or a
measurement that failed).
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from xtc.config import PRECISIONS

CACHE_ENV = "XTC_PRECISION_CACHE"
CACHE_VERSION = 1
MIN_GAIN = 0.05  # bf16 must take at most 0.95x fp32's step time: a tie keeps the exact fp32 path
MEASURE_ROUNDS = 3  # timed steps per precision (after one warm-up step each), interleaved

# The documented fidelity rule (README, "Mixed precision"; figures in bench/README.md; bench/fidelity.py): bf16's
# mean dev score on the selection metric must lie within the larger of the two precisions' seed standard
# deviations of fp32's mean.
# Measured: MRPC, 3 seeds, 3 epochs; (bf16 mean - fp32 mean, tolerance) per arm.
BF16_FIDELITY = {
    "cpu": {"source": "bench/results/fidelity_mrpc.json",
            "arms": {"fp32_KD_3L accuracy": (0.0, 0.0028301483783805086)}},
    "cuda": {"source": "bench/results/fidelity_mrpc_cuda.json",
             "arms": {"W1A8_6L accuracy": (0.0, 0.007352941176470618),
                      "fp32_KD_3L accuracy": (-0.0008169934640522847, 0.0037439343913037776)}},
}


def bf16_fidelity(device_type: str) -> tuple[bool, str]:
    """(bf16's dev scores within the documented tolerance of fp32's on this device type?, why)."""
    entry = BF16_FIDELITY.get(device_type)
    if not entry:
        return False, f"bf16's scores were never measured on {device_type!r} devices"
    bad = [f"{arm} moved {diff:+.4f} (allowed {tol:.4f})" for arm, (diff, tol) in entry["arms"].items()
           if abs(diff) > tol]
    if bad:
        return False, f"bf16's scores moved beyond the tolerance ({'; '.join(bad)}; {entry['source']})"
    return True, f"bf16's scores within the tolerance ({entry['source']})"


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str  # "fp32" or "bf16"
    reason: str
    auto: dict | None = field(default=None, compare=False)  # how `auto` decided: source, figures, cache file

    def to_dict(self) -> dict:
        out = {"train": self.precision, "eval": "fp32", "reason": self.reason}
        if self.auto is not None:
            out["auto"] = self.auto
        return out


# ----------------------------------------------------------------------------- the per-machine cache

def cache_file() -> str:
    """Where `auto`'s measurements are kept: $XTC_PRECISION_CACHE, else the user's cache folder."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "xtc", "precision.json")


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_key(device) -> str:
    """The cache key: device type, CPU model or CUDA device name, torch version."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "CUDA"
    else:
        name = cpu_model_name()
    return f"{device.type} | {name} | torch {torch.__version__}"


def read_cache(path: str | None = None) -> dict:
    """The cache's entries ({key: entry}); a missing file is empty, an unreadable or malformed one is ignored
    with one line on stderr (it is plain JSON, never unpickled, and is rewritten by the next measurement)."""
    path = path or cache_file()
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
        entries = data["entries"]
        if data.get("version") != CACHE_VERSION or not isinstance(entries, dict) or not all(
                isinstance(e, dict) and e.get("choice") in ("fp32", "bf16") for e in entries.values()):
            raise ValueError("unexpected content")
        return entries
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        print(f"xtc: ignoring the precision cache {path} ({type(e).__name__}: {e}); auto measures again and "
              f"rewrites it", file=sys.stderr)
        return {}


def write_cache_entry(key: str, entry: dict, path: str | None = None) -> None:
    from xtc.files import write_json_atomic

    path = path or cache_file()
    entries = read_cache(path)
    entries[key] = entry
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_json_atomic(path, {"version": CACHE_VERSION, "entries": entries})


def clear_cache(path: str | None = None) -> bool:
    """Delete the cache file; True when there was one."""
    path = path or cache_file()
    if os.path.exists(path):
        os.unlink(path)
        return True
    return False


# ----------------------------------------------------------------------------- measuring

def measure_step_seconds(step: Callable[[str], None], device, rounds: int = MEASURE_ROUNDS) -> dict:
    """Time `step(precision)` (one real training step) in fp32 and bf16: one warm-up step each, then `rounds`
    interleaved rounds alternating which goes first. CPU: the process's CPU time (robust on a loaded machine);
    CUDA: synchronised wall time. Returns the medians and their ratio."""
    import torch

    device = torch.device(device)

    def clock() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            return time.perf_counter()
        return time.process_time()

    seconds = {"fp32": [], "bf16": []}
    for p in ("fp32", "bf16"):
        step(p)
    for r in range(rounds):
        for p in (("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")):
            t0 = clock()
            step(p)
            seconds[p].append(clock() - t0)
    fp32, bf16 = statistics.median(seconds["fp32"]), statistics.median(seconds["bf16"])
    return {"fp32_step_seconds": fp32, "bf16_step_seconds": bf16, "ratio_bf16_over_fp32": bf16 / max(fp32, 1e-12),
            "rounds": rounds, "clock": "wall (synchronised)" if device.type == "cuda" else "process CPU time"}


def choose_from_timing(timing: dict, fidelity_ok: bool) -> str:
    return "bf16" if fidelity_ok and timing["ratio_bf16_over_fp32"] <= 1 - MIN_GAIN else "fp32"


# ----------------------------------------------------------------------------- the CPU-flag fallback

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
# dev evaluation 1.45x SLOWER than fp32. An AMD EPYC with AVX512-BF16 and no AMX measured the opposite (1.66x
# faster): flags are a guess, which is why `auto` measures wherever it can.
SLOW_WITHOUT_AMX = "bf16 measured 1.5x slower than fp32 there (bench/results/qat_throughput_mrpc_6L_precision.json)"


def device_bf16_support(device) -> tuple[bool, str]:
    """The flag-based guess (no measurement): (bf16 likely faster than fp32 on `device`?, a short explanation)."""
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


# ----------------------------------------------------------------------------- the decision

def resolve_precision(requested: str, device, measure: Callable[[], Callable[[str], None]] | None = None,
                      measured_with: str = "") -> PrecisionChoice:
    """The training precision for `requested` ("auto", "fp32" or "bf16") on `device`, with the reason.

    For "auto", `measure()` returns `step(precision)`, one real training step of the run (xtc.train.step_timer);
    it is called only when the cache has no entry for this machine. Without it, or when it fails, the CPU flags
    decide (`device_bf16_support`)."""
    import torch

    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        ok, why = device_bf16_support(device)
        if requested == "bf16" and not ok:
            return PrecisionChoice("bf16", f"requested --precision bf16 although {why}: expect it to be slower")
        return PrecisionChoice(requested, f"requested --precision {requested}")
    device = torch.device(device)
    fid_ok, fid_why = bf16_fidelity(device.type)
    if not fid_ok:
        return PrecisionChoice("fp32", f"auto: {fid_why}", {"source": "fidelity", "fidelity": fid_why})
    key, path = machine_key(device), cache_file()
    cached = read_cache(path).get(key)
    if cached is not None:
        return PrecisionChoice(cached["choice"], f"auto: {cached['choice']} from the cache {path} "
                               f"(bf16/fp32 step time {cached.get('ratio_bf16_over_fp32', float('nan')):.2f}, "
                               f"measured on {key})",
                               {"source": "cache", "from_cache": True, "cache_file": path, "key": key, **cached})
    failure = "no training step to measure"
    if measure is not None:
        try:
            timing = measure_step_seconds(measure(), device)
        except Exception as e:  # a bf16 step that cannot run here, out of memory, ...: fall back to the flags
            failure = f"measuring failed: {type(e).__name__}: {e}".splitlines()[0]
            print(f"xtc: --precision auto: {failure}; deciding from the device's flags", file=sys.stderr)
        else:
            choice = choose_from_timing(timing, fid_ok)
            entry = {"choice": choice, **timing, "min_gain": MIN_GAIN, "fidelity": fid_why,
                     "measured_with": measured_with, "torch_threads": torch.get_num_threads(),
                     "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
            try:
                write_cache_entry(key, entry, path)
            except OSError as e:
                print(f"xtc: could not write the precision cache {path} ({e}); the next run measures again "
                      f"(set {CACHE_ENV} to a writable file)", file=sys.stderr)
            return PrecisionChoice(choice, f"auto: measured bf16/fp32 step time {timing['ratio_bf16_over_fp32']:.2f} "
                                   f"on {key} (bf16 needs <= {1 - MIN_GAIN:.2f})",
                                   {"source": "measured", "from_cache": False, "cache_file": path, "key": key,
                                    **entry})
    ok, why = device_bf16_support(device)
    return PrecisionChoice("bf16" if ok else "fp32", f"auto ({failure}; from the device's flags): {why}",
                           {"source": "flags", "from_cache": False, "flags": why})


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
