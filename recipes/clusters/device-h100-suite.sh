#!/usr/bin/env bash
# Run `pytest scenarios` with the GPU recipes on the lent GPU machine, one recipe (one server) at a time,
# after device-h100-setup.sh. Beside the suite's own results it records the machine (nvidia-smi, driver,
# versions, pip freeze) and an independent nvidia-smi memory log (1 Hz, whole GPU and per process).
# Usage: bash recipes/clusters/device-h100-suite.sh [RECIPE...]   (default: recipes/gpu-*.yaml)
# Env: SITE (/tmp/site), RESULTS (/tmp/sg-results).
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
site=${SITE:-/tmp/site}
results=${RESULTS:-/tmp/sg-results}
mkdir -p "$results/machine"
cd "$repo"
# The harness runs in the image's python3: pytest-testinfra comes from the wheelhouse, servegate from here.
export PYTHONPATH="$site:$repo/lib:$repo" PYTHONUNBUFFERED=1
[ -x /tmp/aiperf-site/bin/aiperf ] && export SERVEGATE_AIPERF=/tmp/aiperf-site/bin/aiperf
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

machine() {
  nvidia-smi > "$results/machine/nvidia-smi.txt" 2>&1
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv > "$results/machine/gpu.csv"
  { uname -a; nproc; ldd --version | head -1; python3 --version; command -v python3; } > "$results/machine/host.txt" 2>&1
  "$site/bin/python3" -c 'import torch, vllm, ray, triton, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda); print("vllm", vllm.__version__); print("ray", ray.__version__); print("triton", triton.__version__); print("transformers", transformers.__version__)' > "$results/machine/versions.txt" 2>&1
  env -u PYTHONPATH python3 -m pip list --format=freeze > "$results/machine/image-pip-freeze.txt" 2>/dev/null
}

machine
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader,nounits -l 1 \
  > "$results/machine/nvidia-smi-gpu-1hz.csv" 2>&1 &
gpu_log=$!
trap 'kill $gpu_log 2>/dev/null' EXIT

[ $# -gt 0 ] || set -- recipes/gpu-*.yaml
for recipe in "$@"; do
  name=$(basename "$recipe" .yaml)
  echo "=== $(date -u +%H:%M:%S) $name"
  echo "$(date -u +%FT%T) start $name" >> "$results/machine/recipe-times.txt"
  ( while sleep 2; do nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader \
      | sed "s/^/$(date -u +%T),$name,/"; done ) >> "$results/machine/nvidia-smi-apps.csv" 2>&1 &
  apps_log=$!
  python3 -m pytest scenarios -p no:cacheprovider -q -rA --sg-recipe "$recipe" --sg-results "$results" \
    2>&1 | tee "$results/$name.pytest.log" | grep -E "^(PASSED|FAILED|ERROR|SKIPPED)|passed|failed|error" 
  echo "$(date -u +%FT%T) end $name rc=${PIPESTATUS[0]}" >> "$results/machine/recipe-times.txt"
  kill $apps_log 2>/dev/null
  "$site/bin/ray" stop --force > /dev/null 2>&1
done
echo "=== $(date -u +%H:%M:%S) suite done"
