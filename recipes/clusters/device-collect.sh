#!/usr/bin/env bash
# Copy what a device session produced, without the bulky raw files, to OUT (the device tool's $OUT):
# logs, run.json/junit/progress of every run, normalised throughput summaries, plots, fidelity figures.
# Usage: bash recipes/clusters/device-collect.sh [RESULTS=/tmp/sg-results] [OUT=$OUT]
set -uo pipefail
results=${1:-/tmp/sg-results}
out=${2:-$OUT}
cd "$results" || exit 1
find . -type f \( -name '*.log' -o -name 'run.json' -o -name 'junit.xml' -o -name '*.md' -o -name '*.txt' \
  -o -name '*.csv' -o -name '*.png' -o -name '*.json' \) \
  -size -3M -print0 | tar --null -T - -cf - | tar -xf - -C "$out"
du -sh "$out"
