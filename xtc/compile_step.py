"""A compiled training step: `torch.compile` (inductor) of the loss function, i.e. the student's forward with
its quantizers and the KD loss, whose backward AOTAutograd compiles with it. The optimizer step, clipping and
evaluation stay eager. On CUDA, small models use CUDA graphs (`mode="reduce-overhead"`): a MiniLM step is bound
by kernel launches there. Shapes are dynamic (length-grouped batches vary in length), so one graph serves all.

`--compile auto` compiles only where it pays: compiling costs a fixed time once per run (COMPILE_SECONDS,
measured by bench/vs_deepspeed.py), so a run must have enough steps for the per-step saving to repay it. A
compilation that fails falls back to eager with one line on stderr; the run goes on.
"""
from __future__ import annotations

import sys

from xtc.config import COMPILE_MODES

# device type: (one-off compile seconds, eager step seconds, compiled step seconds) of the measured set-up
# (bench/vs_deepspeed.py; bench/README.md "Compiled training step"). Where it was not measured, auto stays eager.
# CPU: Intel Xeon with AMX, 1 thread, 6-layer MiniLM W1A8 cached one-stage KD, batch 32 x 64, 10 interleaved
# rounds of thread CPU time (bench/results/vs_deepspeed_mrpc.json): compiling took 215 s of CPU (148 s in
# process, 66 s in compiler subprocesses; 874 s wall on the loaded machine) and the compiled step was slower
# (2.22 s against 2.00 s eager), so auto stays eager on CPUs. CUDA: not measured yet (no GPU was lent).
MEASURED: dict[str, tuple[float, float, float] | None] = {
    "cpu": (215.0, 1.996, 2.222),
    "cuda": None,
}
SMALL_MODEL_PARAMS = 150_000_000  # below this a CUDA step is launch-bound: CUDA graphs


def resolve_compile(requested: str, device, total_steps: int) -> tuple[bool, str]:
    """(compile the step?, why) for `requested` in COMPILE_MODES and a run of `total_steps` steps."""
    import torch

    if requested not in COMPILE_MODES:
        raise ValueError(f"unknown --compile {requested!r}; choose one of {', '.join(COMPILE_MODES)}")
    if requested != "auto":
        return requested == "on", f"requested --compile {requested}"
    dtype = torch.device(device).type
    measured = MEASURED.get(dtype)
    if not measured:
        return False, f"auto: compiling was not measured to pay on {dtype} (bench/vs_deepspeed.py)"
    compile_s, eager_s, compiled_s = measured
    if compiled_s >= eager_s:
        return False, (f"auto: a compiled step was not faster on {dtype} ({compiled_s:.3f} s against "
                       f"{eager_s:.3f} s eager; bench/vs_deepspeed.py)")
    need = compile_s / (eager_s - compiled_s)
    if total_steps < need:
        return False, (f"auto: {total_steps} steps are too few to repay about {compile_s:.0f} s of compilation "
                       f"({1 - compiled_s / eager_s:.0%} saved per step: needs about {need:.0f})")
    return True, (f"auto: {total_steps} steps repay about {compile_s:.0f} s of compilation "
                  f"({1 - compiled_s / eager_s:.0%} saved per step)")


class CompiledLoss:
    """`loss_fn(model, batch)` compiled on first use; on a compilation error, eager from then on (one line)."""

    def __init__(self, loss_fn, model, device):
        import torch

        self.eager, self.failed = loss_fn, None
        small = sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS
        self.mode = "reduce-overhead" if torch.device(device).type == "cuda" and small else "default"
        self.compiled = torch.compile(loss_fn, dynamic=True, mode=self.mode)

    def __call__(self, model, batch):
        if self.failed is None:
            try:
                return self.compiled(model, batch)
            except Exception as e:  # inductor/dynamo errors surface at the first call
                self.failed = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                print(f"xtc: --compile: compiling the training step failed ({self.failed}); training eagerly",
                      file=sys.stderr)
        return self.eager(model, batch)
