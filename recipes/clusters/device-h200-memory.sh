#!/usr/bin/env bash
# Issue 17's GPU runs on the lent H200, inside one device call (<= 600 s): install the vLLM bundle carried to
# BUNDLE (device-h100-setup.sh), measure the CUDA overheads (memory/measure_cuda.py), generate the real-width
# Nano stand-in on the machine itself, then memory.gpu_runs: per case the planner's prediction before the
# launch and what vLLM then logs. Everything lands in OUT (at most 8 files: the runs as one tar).
# Usage: OUT=dir bash recipes/clusters/device-h200-memory.sh [CASE ...]   (CASE: name:key=value,key=value)
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:?set OUT}
bundle=${BUNDLE:-$repo/.gpubundle}
cd "$repo"
t0=$(date +%s)
step() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
step "install $bundle"
bash recipes/clusters/device-h100-setup.sh "$bundle" /tmp/site > "$out/setup.log" 2>&1 || { tail -20 "$out/setup.log"; exit 1; }
tail -1 "$out/setup.log"
step "CUDA overheads"
python3 lib/servegate/memory/measure_cuda.py > "$out/cuda-overhead.json"; cat "$out/cuda-overhead.json"
step "stand-in"
PYTHONPATH=lib python3 -m servegate.models recipes/models/nemotron-3-nano-standin.yaml /tmp/nano-standin || exit 1
step "runs"
mkdir -p /tmp/gpu-runs
PATH=/tmp/site/bin:$PATH PYTHONPATH=/tmp/site:lib timeout "${RUNS_TIMEOUT_S:-420}" \
  python3 -m servegate.memory.gpu_runs recipes/gpu-nano-standin.yaml --out /tmp/gpu-runs \
  $(for c in "$@"; do printf -- '--case %s ' "$c"; done)
step "runs exit $?"
cp /tmp/gpu-runs/gpu-runs.json "$out/" 2>/dev/null
tar czf "$out/gpu-runs-logs.tgz" -C /tmp/gpu-runs . 2>/dev/null
step done
