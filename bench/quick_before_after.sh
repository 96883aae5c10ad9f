#!/bin/bash
# The quick study's wall time from a fresh clone, at two commits back to back on one machine (issue 24):
#   bash bench/quick_before_after.sh BEFORE_REV AFTER_REV OUT_DIR
# Each arm: git clone of this repository, `make install` (timed), `make run` (timed; the quick profile), with no
# cached `--precision auto` choice (a fresh machine's). The load average is logged every 30 s to OUT_DIR/load.log
# (anything else running shares the cores). Then bench/quick_before_after.py OUT_DIR compares the two runs.
set -u
before=$1 after=$2 out=$3
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
( while true; do echo "$(date +%s) $(cut -d' ' -f1-3 /proc/loadavg)"; sleep 30; done ) > "$out/load.log" &
logger=$!
lscpu > "$out/lscpu.txt"
cache=${XDG_CACHE_HOME:-$HOME/.cache}/xtc/precision.json
for arm in before after; do
  rev=$([ $arm = before ] && echo "$before" || echo "$after")
  dir="$out/clone-$arm"
  rm -rf "$dir" && git clone -q "$repo" "$dir" && git -C "$dir" checkout -q "$rev"
  [ -f "$cache" ] && mv "$cache" "$out/precision.json.before-$arm"
  t0=$(date +%s); make -C "$dir" install > "$out/$arm.install.log" 2>&1; t1=$(date +%s)
  make -C "$dir" run XTC_GLUE_DIR="${XTC_GLUE_DIR:-$repo/../shared/glue}" > "$out/$arm.run.log" 2>&1; rc=$?; t2=$(date +%s)
  echo "{\"arm\": \"$arm\", \"commit\": \"$(git -C "$dir" rev-parse HEAD)\", \"install_s\": $((t1-t0)), \"run_s\": $((t2-t1)), \"rc\": $rc, \"start\": $t1}" >> "$out/summary.jsonl"
done
kill $logger
