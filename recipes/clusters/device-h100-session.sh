#!/usr/bin/env bash
# One session on the lent GPU machine, after the bundle was carried to BUNDLE (see
# recipes/clusters/device-h100.yaml): verify and install it (device-h100-setup.sh runs the bundle's install.py:
# parts joined, every sha256 checked, pip --no-index), run the short AIPerf-vs-vllm-bench fidelity benchmark on
# FIDELITY_RECIPE while the machine is quiet (it prints its own time estimate), then the scenario suite for the
# given recipes (device-h100-suite.sh). Meant to run detached (setsid nohup) so it outlives the device tool's
# 10-minute commands; progress goes to RESULTS/session.log, "session done" ends it; then device-collect.sh.
# Usage: bash recipes/clusters/device-h100-session.sh [RECIPE...]   (no recipe: fidelity only)
# Env: BUNDLE (/tmp/bundle), RESULTS (/tmp/sg-results), FIDELITY_RECIPE (recipes/gpu-bench-dense.yaml),
#      FIDELITY_ARGS (--isl 128 --osl 64 --concurrency 8 --requests 96 --rounds 2 --warmup 1: ~7 min on an H100)
set -uo pipefail
source "$(dirname "$0")/device-session-lib.sh"
install_bundle || exit 1
export SERVEGATE_AIPERF=/tmp/aiperf-site/bin/aiperf

log "fidelity: ${FIDELITY_RECIPE:-recipes/gpu-bench-dense.yaml}"
cd "$repo"
PYTHONPATH="/tmp/site:$repo/lib" python3 -m servegate.throughput.bench_fidelity \
  --recipe "${FIDELITY_RECIPE:-recipes/gpu-bench-dense.yaml}" --results "$results" \
  ${FIDELITY_ARGS:---isl 128 --osl 64 --concurrency 8 --requests 96 --rounds 2 --warmup 1} \
  > "$results/fidelity.txt" 2>&1
log "fidelity exit $?: $(tail -4 "$results/fidelity.txt" | tr '\n' ' ')"
cd "$repo"
if [ $# -gt 0 ]; then
  log "suite: $*"
  RESULTS="$results" bash "$repo/recipes/clusters/device-h100-suite.sh" "$@" >> "$results/session.log" 2>&1
fi

/tmp/site/bin/ray stop --force > /dev/null 2>&1
log "session done"
