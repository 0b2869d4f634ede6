#!/usr/bin/env bash
# One session on the lent GPU machine, after the wheelhouse pieces were carried to PIECES (see
# recipes/clusters/device-h100.yaml): reassemble and check them, install (device-h100-setup.sh), run the
# AIPerf-vs-vllm-bench fidelity benchmark on FIDELITY_RECIPE while the machine is quiet, then the scenario
# suite for the given recipes (device-h100-suite.sh). Meant to run detached (setsid nohup) so it outlives the device tool's
# 10-minute commands; progress goes to RESULTS/session.log, "session done" ends it.
# Usage: bash recipes/clusters/device-h100-session.sh MD5 [RECIPE...]   (no recipe: fidelity only)
# Env: PIECES (/tmp/wh), RESULTS (/tmp/sg-results), FIDELITY_RECIPE (recipes/gpu-bench-dense.yaml: GPU-bound),
#      FIDELITY_ARGS (--isl 128 --osl 64 --concurrency 8 1 --requests 96 --rounds 5 --warmup 1)
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
pieces=${PIECES:-/tmp/wh}
results=${RESULTS:-/tmp/sg-results}
md5=${1:?usage: device-h100-session.sh MD5 RECIPE...}; shift
mkdir -p "$results"
log() { echo "$(date -u +%T) $*" | tee -a "$results/session.log"; }

log "assembling $(ls "$pieces" | wc -l) pieces"
cat $(ls "$pieces"/p* | sort -V) > /tmp/wheels.tar
got=$(md5sum /tmp/wheels.tar | cut -d' ' -f1)
[ "$got" = "$md5" ] || { log "wheelhouse md5 $got, expected $md5: a piece is missing or damaged"; exit 1; }
mkdir -p /tmp/wheels && tar -xf /tmp/wheels.tar -C /tmp/wheels && rm -f /tmp/wheels.tar
cp "$repo"/.whl/harness/*.whl /tmp/wheels/vllm-0.25.0-cp312/ 2>/dev/null
log "installing"
AIPERF_WHEELS=/tmp/wheels/aiperf-need bash "$repo/recipes/clusters/device-h100-setup.sh" \
  /tmp/wheels/vllm-0.25.0-cp312 /tmp/site >> "$results/session.log" 2>&1 || { log "setup failed"; exit 1; }
export SERVEGATE_AIPERF=/tmp/aiperf-site/bin/aiperf

log "fidelity: ${FIDELITY_RECIPE:-recipes/gpu-bench-dense.yaml}"
cd "$repo"
PYTHONPATH="/tmp/site:$repo/lib" python3 -m servegate.throughput.bench_fidelity \
  --recipe "${FIDELITY_RECIPE:-recipes/gpu-bench-dense.yaml}" --results "$results" \
  ${FIDELITY_ARGS:---isl 128 --osl 64 --concurrency 8 1 --requests 96 --rounds 5 --warmup 1} \
  > "$results/fidelity.txt" 2>&1
log "fidelity exit $?: $(tail -4 "$results/fidelity.txt" | tr '\n' ' ')"
cd "$repo"
if [ $# -gt 0 ]; then
  log "suite: $*"
  RESULTS="$results" bash "$repo/recipes/clusters/device-h100-suite.sh" "$@" >> "$results/session.log" 2>&1
fi

/tmp/site/bin/ray stop --force > /dev/null 2>&1
log "session done"
