#!/usr/bin/env bash
# Pack what a device session produced into ONE archive plus its summary (.md/.json) in OUT (the device tool's
# $OUT): logs, run.json/junit/progress of every run, throughput summaries, plots, fidelity figures; files over
# 3 MiB stay behind and are listed in the summary. `servegate collect` does the work.
# Usage: bash recipes/clusters/device-collect.sh [RESULTS=/tmp/sg-results] [OUT=$OUT] [NAME]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
results=${1:-/tmp/sg-results}
out=${2:-$OUT}
# servegate's CLI imports pytest-testinfra, which the GPU image lacks: the bundle's site (SITE) has it
site=${SITE:-/tmp/site}
[ -d "$site" ] && PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
PYTHONPATH="$repo/lib${PYTHONPATH:+:$PYTHONPATH}" python3 -m servegate collect "$results" --out "$out" \
  ${3:+--name "$3"}
ls -l "$out"
