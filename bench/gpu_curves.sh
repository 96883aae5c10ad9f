#!/usr/bin/env bash
# Learning curves of 1-/2-bit students at the standard profile's data size (192 examples, batch 16), on a lent
# GPU (see bench/gpu_checks.sh for ASSETS), evaluated every epoch (12 steps) for 24 epochs (288 steps); and a
# profile of a bf16-autocast fine-tuning step on CUDA against fp32 (why bf16 is slower for this small model).
#   ASSETS=.gpu bash bench/gpu_curves.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD TOKENIZERS_PARALLELISM=false
ASSETS=${ASSETS:-.gpu}; OUT=${OUT:-scratch/gpu}; W=/tmp/xtc-gpu; G=$ASSETS/glue; PY=python3
mkdir -p "$OUT" "$W/curves"
python3 -c '
import os, shutil, sys
from safetensors.torch import load_file, save_file
src, dst = sys.argv[1:]
shutil.copytree(src, dst, dirs_exist_ok=True)
save_file({k: v.float() for k, v in load_file(os.path.join(src, "model.safetensors")).items()}, os.path.join(dst, "model.safetensors"))
' "$ASSETS/minilm" "$W/minilm"
M=$W/minilm
echo "[$(date +%T)] teachers (MRPC, STS-B full; SST-2 8000 examples)"
for t in mrpc stsb sst2; do
  $PY -m xtc.cli finetune --task $t --model $M --glue-dir $G --epochs 3 --batch-size 32 --seed 42 \
      $([ $t = sst2 ] && echo --max-train-samples 8000) --out $W/teacher-$t --quiet > $W/teacher-$t.log 2>&1 &
done
wait
echo "[$(date +%T)] curves"
for t in sst2 mrpc stsb; do
  for b in 1 2; do
    timeout 200 $PY -m xtc.cli compress --task $t --teacher $W/teacher-$t --wbits $b --abits 8 --kd one-stage \
        --max-train-samples 192 --batch-size 16 --epochs 24 --warmup-epochs 0.5 --max-eval-samples 400 \
        --seed 1 --glue-dir $G --out $W/curves/$t-w$b --quiet > $W/curve-$t-w$b.log 2>&1 &
  done
done
wait
echo "[$(date +%T)] bf16 profile"
$PY - "$M" "$G" > $OUT/bf16_profile_cuda.txt 2>&1 <<'PYEOF'
import sys, torch
sys.path.insert(0, "bench")
from common import task_data, timed_step
from xtc.data import train_batches
from xtc.distill import label_objective
from xtc.models import load_classifier
from xtc.train import make_optimizer
M, G = sys.argv[1:]
task, data = task_data("mrpc", M, G)
m = load_classifier(M, 2).cuda()
opt = make_optimizer(m, 5e-5, 0.01)
b = train_batches(data, 32, 0, 0)
for prec in ("fp32", "bf16", "fp32", "bf16"):
    ts = sorted(timed_step(m, opt, label_objective, data, b[i], precision=prec, device="cuda")[0] for i in range(30))
    print(prec, "median step ms", round(1000 * ts[15], 2))
for prec in ("fp32", "bf16"):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as p:
        for i in range(5):
            timed_step(m, opt, label_objective, data, b[i], precision=prec, device="cuda")
    print("=====", prec)
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
PYEOF
cat $OUT/bf16_profile_cuda.txt | head -60
$PY -c '
import glob, json, os, sys
w, out = sys.argv[1:]
rows = {os.path.relpath(os.path.dirname(p), w): json.load(open(p)) for p in sorted(glob.glob(os.path.join(w, "curves", "*", "metrics.json")) + glob.glob(os.path.join(w, "teacher-*", "metrics.json")))}
json.dump(rows, open(out, "w"), indent=1); print(len(rows), "runs")' "$W" "$OUT/curves_cuda.json"
tail -3 $W/curve-*.log
echo "[$(date +%T)] done"
