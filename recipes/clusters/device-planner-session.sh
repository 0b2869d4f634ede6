#!/usr/bin/env bash
# Issue 17's second GPU session (after device-h200-memory.sh): the real-width Nano, Super and Ultra stand-ins,
# each generated on the machine, served by vLLM 0.25 at several settings, the planner's prediction made
# before every launch (memory/gpu_runs.py). Cases marked "trace" record what is alive at profile_run's torch
# peak (memory/trace_peak.py): the measurement behind the activation term. Meant to run detached (setsid
# nohup) after the bundle was carried to BUNDLE; progress in RESULTS/session.log, "session done" ends it.
# One model at a time on disk (64 GiB): Nano 16 GiB, Super 30 GiB, Ultra 46 GiB, nano_nvfp4 (all 52 layers,
# ModelOpt NVFP4, seed 002's Marlin launch: recipes/gpu-nano-nvfp4-standin.yaml) 18 GiB.
# ONLY=REGEX keeps the cases whose name matches (grep -E), e.g. ONLY='graphs|mtp3|b16k' for the third session.
# Usage: BUNDLE=/tmp/bundle RESULTS=/tmp/sg-results [ONLY=REGEX] bash recipes/clusters/device-planner-session.sh [nano super ultra nano_nvfp4]
set -uo pipefail
source "$(dirname "$0")/device-session-lib.sh"
cd "$repo"
install_bundle || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$results/session.log"

MTP3='{"method":"mtp","num_speculative_tokens":3}'
nano_cases=(
  '{"name":"n-u020-t","set":{"gpu_memory_utilization":0.2},"trace":true}'
  '{"name":"n-u020-b2k-t","set":{"gpu_memory_utilization":0.2,"max_num_batched_tokens":2048},"trace":true}'
  '{"name":"n-u030-ctx64k-s4","set":{"gpu_memory_utilization":0.3,"max_model_len":65536,"max_num_seqs":4}}'
  '{"name":"n-u030-fp8-t","set":{"gpu_memory_utilization":0.3},"argv":{"--quantization":"fp8"},"trace":true}'
  '{"name":"n-u030-graphs","set":{"gpu_memory_utilization":0.3,"max_num_seqs":8},"argv":{"--enforce-eager":"drop-switch"}}'
  '{"name":"n-u030-graphs-s1","set":{"gpu_memory_utilization":0.3},"argv":{"--enforce-eager":"drop-switch"}}'
  '{"name":"n-u030-graphs-s64","set":{"gpu_memory_utilization":0.3,"max_num_seqs":64},"argv":{"--enforce-eager":"drop-switch"}}'
)
# the seed 002 floor sweep, NVFP4 + Marlin as the seed ran it, bracketing the floor the planner predicts on
# this GPU (H100 ~0.245, H200 ~0.137); the first case that starts calibrates the rest
if [ "$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)" -gt 100000 ]; then
  floor=('0.14' '0.13' '0.15' '0.2' '0.1' '0.9') more=('0.135' '0.5')
else
  floor=('0.25' '0.24' '0.26' '0.2' '0.1' '0.9') more=('0.245' '0.5')
fi
u() { printf '{"name":"n4-u%03d","set":{"gpu_memory_utilization":%s}}' "$(python3 -c "print(round($1 * 1000))")" "$1"; }
nano_nvfp4_cases=('{"name":"n4-u300-t","set":{"gpu_memory_utilization":0.3},"trace":true}')
for f in "${floor[@]}"; do nano_nvfp4_cases+=("$(u "$f")"); done
nano_nvfp4_cases+=('{"name":"n4-u300-graphs","set":{"gpu_memory_utilization":0.3},"argv":{"--enforce-eager":"drop-switch"}}')
for f in "${more[@]}"; do nano_nvfp4_cases+=("$(u "$f")"); done
super_cases=(
  '{"name":"s-u050-t","set":{},"trace":true}'
  "{\"name\":\"s-u050-mtp3-t\",\"set\":{},\"argv\":{\"--speculative-config\":$(printf '%s' "$MTP3" | python3 -c 'import json,sys;print(json.dumps(sys.stdin.read()))')},\"trace\":true}"
  '{"name":"s-u050-b16k-t","set":{"max_num_batched_tokens":16384},"trace":true}'
  '{"name":"s-u050-graphs-s8","set":{"max_num_seqs":8},"argv":{"--enforce-eager":"drop-switch"}}'
  '{"name":"s-u050-graphs-b4k-t","set":{"max_num_seqs":8,"max_num_batched_tokens":4096},"argv":{"--enforce-eager":"drop-switch"},"trace":true}'
)
ultra_cases=(
  '{"name":"u-u050-t","set":{},"trace":true}'
  "{\"name\":\"u-u050-mtp3\",\"set\":{},\"argv\":{\"--speculative-config\":$(printf '%s' "$MTP3" | python3 -c 'import json,sys;print(json.dumps(sys.stdin.read()))')}}"
)

for model in "${@:-nano super ultra}"; do
  for m in $model; do
    declare -n cases="${m}_cases"
    args=(); for c in "${cases[@]}"; do
      name=$(printf '%s' "$c" | python3 -c 'import json,sys;print(json.load(sys.stdin)["name"])')
      if [ -z "${ONLY:-}" ] || grep -Eq -- "$ONLY" <<< "$name"; then args+=(--case "$c"); fi
    done
    [ ${#args[@]} -gt 0 ] || { log "$m: no case matches ONLY=$ONLY"; continue; }
    folder=/tmp/${m//_/-}-standin
    log "$m: generating $folder"
    rm -rf "$folder"; mkdir -p "$folder"
    PYTHONPATH=/tmp/site:lib python3 -m servegate.models "recipes/models/nemotron-3-${m//_/-}-standin.yaml" "$folder" \
      >> "$results/session.log" 2>&1 || { log "$m: generation failed"; continue; }
    log "$m: generated $(du -sh "$folder" | cut -f1)"
    mkdir -p "$results/$m"
    PATH=/tmp/site/bin:$PATH PYTHONPATH=/tmp/site:lib \
      python3 -m servegate.memory.gpu_runs "recipes/gpu-${m//_/-}-standin.yaml" --out "$results/$m" "${args[@]}" \
      2>&1 | tee -a "$results/session.log" | grep -v "^ " >> "$results/$m/table.txt"
    log "$m: runs done"
    rm -rf "$folder"
  done
done
log "session done"
