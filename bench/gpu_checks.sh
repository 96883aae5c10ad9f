#!/usr/bin/env bash
# The CUDA checks, as one script for a lent GPU machine (the device tool: ~15 minutes, no network there).
# It proves the CUDA paths and times them; results land in $OUT (JSON) and come back to bench/results/.
#
#   ASSETS=.gpu bash bench/gpu_checks.sh
#
# ASSETS holds what the machine cannot download: glue/{SST-2,MRPC,STS-B}/{train,dev}.tsv and minilm/ (the
# packaged all-MiniLM-L6-v2 folder with its weights stored in fp16 to fit the 64 MiB transfer; they are cast
# back to fp32 here, so every run starts from the MiniLM weights rounded to fp16).
#  1. bench/qat_throughput.py on CUDA: fine-tuning and 1-bit QAT+KD steps, fp32 vs bf16 autocast, live/cached teacher
#  2. bench/infer_cuda.py: integer path (torch._int_mm, int8 tensor cores) vs fp32 / bf16 / fake-quant latency
#  3. teachers fine-tuned on each task's full training set (the references of the standard profile)
#  4. bench/fidelity.py on CUDA (bf16 is the default there): 6L W1A8 and 3L fp32 KD students, fp32 vs bf16, 3 seeds
#  5. learning curves of 1-/2-bit students at the standard profile's data size (budgets for that profile)
#  6. bench/infer_exactness.py --device cuda on a trained 6L W1A8 MRPC student
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD TOKENIZERS_PARALLELISM=false
# several runs side by side on 16 cores: without these, OpenMP spin-waiting stalled them (a try ran no step in 200 s)
export OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE
ASSETS=${ASSETS:-.gpu}
OUT=${OUT:-scratch/gpu}
W=/tmp/xtc-gpu
mkdir -p "$OUT" "$W"
G=$ASSETS/glue
PY=python3
log() { echo "[$(date +%T)] $*"; }
collect() {  # every run's metrics.json in one file, and the logs: after each phase, so a cut-off run still reports
  $PY -c '
import glob, json, os, sys
w, out = sys.argv[1:]
paths = sorted(glob.glob(os.path.join(w, "*", "metrics.json")) + glob.glob(os.path.join(w, "*", "*", "metrics.json")))
rows = {os.path.relpath(os.path.dirname(p), w): json.load(open(p)) for p in paths}
json.dump(rows, open(out, "w"), indent=1)
print(len(rows), "runs")' "$W" "$OUT/runs_cuda.json"
  tar czf $OUT/logs.tar.gz -C $W --exclude='*.safetensors' --exclude='*.xtc' --exclude='*.pt' --exclude=minilm . 2>/dev/null
}

log "env"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))"
$PY - "$ASSETS/minilm" "$W/minilm" <<'EOF'
import os, shutil, sys
from safetensors.torch import load_file, save_file
src, dst = sys.argv[1:]
shutil.copytree(src, dst, dirs_exist_ok=True)
save_file({k: v.float() for k, v in load_file(os.path.join(src, "model.safetensors")).items()},
          os.path.join(dst, "model.safetensors"))
EOF
M=$W/minilm

log "1. qat_throughput (CUDA)"
$PY bench/qat_throughput.py --teacher $M --task mrpc --glue-dir $G --rounds 40 --device cuda \
    --out $OUT/qat_throughput_mrpc_6L_cuda.json > $W/qat.log 2>&1 || { echo "FAILED"; tail -20 $W/qat.log; }
log "2. infer_cuda"
$PY bench/infer_cuda.py --model $M --rounds 50 --out $OUT/infer_cuda.json > $W/infer.log 2>&1 \
    || { echo "FAILED"; tail -20 $W/infer.log; }

log "3. full-data teachers"
for t in mrpc stsb sst2; do  # SST-2 (67k examples): 2 epochs, the others 3
  timeout 170 $PY -m xtc.cli finetune --task $t --model $M --glue-dir $G --epochs $([ $t = sst2 ] && echo 2 || echo 3) --batch-size 32 --seed 42 \
      --out $W/teacher-$t --quiet > $W/teacher-$t.log 2>&1 &
done
wait
for t in mrpc stsb sst2; do tail -2 $W/teacher-$t.log; done
collect

log "4. fidelity (CUDA) + 5. learning curves, side by side"
FID="--teacher $W/teacher-mrpc --task mrpc --glue-dir $G --runs $W/fidelity --out $OUT/fidelity_mrpc_cuda.json"
timeout 220 $PY bench/fidelity.py $FID --jobs 4 > $W/fidelity.log 2>&1 &
mkdir -p $W/curves
for t in sst2 mrpc stsb; do
  for b in 1 2; do
    timeout 220 $PY -m xtc.cli compress --task $t --teacher $W/teacher-$t --wbits $b --abits 8 --kd one-stage \
        --max-train-samples 192 --batch-size 16 --epochs 16 --warmup-epochs 0.5 --max-eval-samples 400 \
        --seed 1 --glue-dir $G --out $W/curves/$t-w$b --quiet > $W/curve-$t-w$b.log 2>&1 &
  done
done
wait
$PY bench/fidelity.py $FID --summarize-only >> $W/fidelity.log 2>&1
tail -30 $W/fidelity.log
collect

log "6. exactness on CUDA"
$PY -m xtc.cli export --model $W/fidelity/W1A8_6L_fp32_seed1 --out $W/mrpc-6L-w1a8.xtc > $W/export.log 2>&1 \
  && $PY bench/infer_exactness.py --device cuda --glue-dir $G --out $OUT/infer_exactness_cuda.json \
      mrpc=$W/mrpc-6L-w1a8.xtc > $W/exact.log 2>&1 || { echo "FAILED"; tail -20 $W/export.log $W/exact.log; }
tail -5 $W/exact.log

collect
log "done"
