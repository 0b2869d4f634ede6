"""Measure the per-process CUDA overheads the memory planner charges, on the GPU machine itself.

Run with the GPU machine's python (PyTorch with CUDA; no vLLM needed):
    python3 lib/servegate/memory/measure_cuda.py > cuda-overhead.json

Prints JSON, all sizes in bytes:
  context_device     device memory a process holds once CUDA is initialised (driver context, module
                     images), before any tensor: cudaMemGetInfo drop minus what PyTorch allocated
  cublas_device      the further drop after the first bf16/fp32 GEMMs (cuBLAS/cuBLASLt handles + workspace)
  non_torch_device   context + cuBLAS: what vLLM's profiler reports as "non-torch" memory at start
  host_rss_*         the process's resident host memory: python + torch imported, CUDA initialised,
                     after GEMMs (on unified-memory nodes, host and device share one pool)
"""

from __future__ import annotations

import json
import sys


def rss() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    out: dict = {"host_rss_python": rss()}
    import torch

    out["host_rss_torch_imported"] = rss()
    if not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device"}))
        return 1
    free0, total = torch.cuda.mem_get_info()  # initialises the context
    torch.cuda.synchronize()
    free1, _ = torch.cuda.mem_get_info()
    out["device"] = torch.cuda.get_device_name()
    out["total_device"] = total
    out["torch"] = torch.__version__
    out["context_device"] = total - free1 - torch.cuda.memory_reserved()
    out["host_rss_cuda_init"] = rss()
    for dtype in (torch.bfloat16, torch.float32):
        a = torch.randn(4096, 4096, device="cuda", dtype=dtype)
        (a @ a).sum().item()
        del a
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    free2, _ = torch.cuda.mem_get_info()
    out["cublas_device"] = (total - free2 - torch.cuda.memory_reserved()) - out["context_device"]
    out["non_torch_device"] = total - free2 - torch.cuda.memory_reserved()
    out["host_rss_after_gemm"] = rss()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
