"""`servegate wheelhouse`: the wheels an offline node lacks for a vLLM version, in one folder.

An air-gapped node cannot reach a package index, so its vLLM arrives as wheels. This resolves the
requirements for the node's Python and platform with `pip install --dry-run --report` (no install),
subtracts what the node already has (its `pip freeze`), drops optional heavy wheels a small model does
not need, downloads the rest with `pip download --no-deps`, and reports sizes. The node then runs
`pip install --no-index --no-deps --target DIR WHEELHOUSE/*.whl` (or into its own venv). The command line,
the lock and the bundle for an air-gapped node: servegate.runtimes.wheelhouse_cli and .bundle.

pip evaluates environment markers (`; python_version > "3.11"`) for the Python that runs it, not for
the target: the plan therefore re-checks every requirement of the wheels it keeps against the target
environment and names what is missing or what the node has at a version that does not fit.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import InvalidMarker, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from servegate.errors import ServegateError

# Not needed to serve a small model on vLLM 0.25 (seen on the lent H100, FIELD-NOTES): ~1 GB together.
DEFAULT_EXCLUDES = (
    "flashinfer-cubin", "nvidia-cutlass-dsl*", "tilelang", "tokenspeed-*", "nvidia-cuda-nvcc*",
    "nvidia-nvvm*", "nvidia-cuda-tileiras*", "z3-solver", "pynvvideocodec", "torchcodec",
)
REPORT_NAME = "pip-report.json"
MANIFEST_NAME = "wheelhouse.json"


class WheelhouseError(ServegateError):
    """Resolution or download failed; the message carries pip's own last lines."""


def canonical(name: str) -> str:
    """PEP 503 normalised project name: 'Torch_C.dlpack' -> 'torch-c-dlpack'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public_version(text: str) -> str:
    """'2.11.0+cu130' -> '2.11.0': a node's local build label does not change what it provides."""
    return text.split("+", 1)[0]


@dataclass(frozen=True)
class Target:
    """The node's interpreter and platform, as pip's tag options and as marker values."""

    python_version: str = "3.12"
    glibc: str = "2.35"
    machine: str = "x86_64"

    def platforms(self) -> list[str]:
        major, minor = (int(part) for part in self.glibc.split("."))
        tags = [f"manylinux_{major}_{n}_{self.machine}" for n in range(minor, 4, -1)]
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        tags += [f"{name}_{self.machine}" for glibc_minor, name in legacy.items() if glibc_minor <= minor]
        return tags + [f"linux_{self.machine}"]

    def tag_options(self) -> list[str]:
        options = ["--only-binary=:all:", "--python-version", self.python_version, "--implementation", "cp"]
        for platform in self.platforms():
            options += ["--platform", platform]
        return options

    def marker_env(self, extra: str = "") -> dict[str, str]:
        return {"python_version": self.python_version, "python_full_version": f"{self.python_version}.0",
                "implementation_name": "cpython", "platform_python_implementation": "CPython",
                "os_name": "posix", "sys_platform": "linux", "platform_system": "Linux",
                "platform_machine": self.machine, "extra": extra}


@dataclass(frozen=True)
class Wheel:
    name: str  # canonical
    version: str
    url: str = ""
    requested: bool = False
    extras: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


def parse_report(data: dict) -> list[Wheel]:
    """The wheels of a `pip install --dry-run --report` JSON document."""
    if "install" not in data:
        raise WheelhouseError(f"not a pip installation report: keys {sorted(data)[:6]}; "
                              "expected the JSON that `pip install --dry-run --report FILE` writes")
    wheels = []
    for item in data["install"]:
        meta = item["metadata"]
        url = item.get("download_info", {}).get("url", "")
        extras, requires = tuple(item.get("requested_extras") or ()), tuple(meta.get("requires_dist") or ())
        wheels.append(Wheel(canonical(meta["name"]), meta["version"], url, bool(item.get("requested")),
                            extras, requires))
    return sorted(wheels, key=lambda w: w.name)


def parse_freeze(text: str) -> dict[str, str | None]:
    """Name -> public version from `pip freeze` / `pip list --format=freeze` text; bare names map to None."""
    installed: dict[str, str | None] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        if " @ " in line:
            installed[canonical(line.split(" @ ", 1)[0].split("[", 1)[0])] = None
            continue
        name, _, version = line.partition("==")
        installed[canonical(name.split("[", 1)[0].strip())] = public_version(version.strip()) or None
    return installed


@dataclass
class Plan:
    """What to download, and why everything else was left out."""

    fetch: list[Wheel] = field(default_factory=list)
    on_node: list[tuple[Wheel, str | None]] = field(default_factory=list)  # (resolved, node's version)
    excluded: list[tuple[Wheel, str]] = field(default_factory=list)  # (resolved, matching pattern)
    problems: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> list[tuple[Wheel, str]]:
        """Packages the node keeps at a version other than the resolver's choice."""
        return [(w, v) for w, v in self.on_node if v is not None and v != public_version(w.version)]


def make_plan(wheels: list[Wheel], installed: dict[str, str | None], target: Target,
              excludes: tuple[str, ...] = DEFAULT_EXCLUDES, replace: tuple[str, ...] = (),
              provided: tuple[str, ...] = ()) -> Plan:
    """Split the resolved wheels into fetch / already on the node / excluded, then check the result.
    `provided`: names the user says the node provides (any version), so a requirement on them is met."""
    plan = Plan()
    installed = {**installed, **{canonical(n): None for n in provided}}  # the user's word wins over a freeze
    replace_names = {canonical(n) for n in replace}
    for wheel in wheels:
        pattern = _matching(wheel.name, excludes)
        if pattern and not wheel.requested:
            plan.excluded.append((wheel, pattern))
        elif wheel.name in installed and wheel.name not in replace_names:
            plan.on_node.append((wheel, installed[wheel.name]))
        else:
            plan.fetch.append(wheel)
    plan.problems = unmet_requirements(plan, installed, target)
    return plan


def node_conflicts(plan: Plan, installed: dict[str, str | None], target: Target) -> tuple[str, ...]:
    """Names the node has at a version some fetched wheel rejects (what `--replace` would carry)."""
    names = []
    for wheel in plan.fetch:
        for requirement in _applicable(wheel, target):
            name = canonical(requirement.name)
            version = installed.get(name)
            if version and name not in {w.name for w in plan.fetch} and not _satisfies(requirement, version):
                names.append(name)
    return tuple(dict.fromkeys(names))


def _req_name(text: str) -> str:
    try:
        return canonical(Requirement(text).name)
    except InvalidRequirement:
        return canonical(re.split(r"[<>=!~;\[ ]", text, maxsplit=1)[0])


def _matching(name: str, patterns: tuple[str, ...]) -> str | None:
    return next((p for p in patterns if fnmatch.fnmatchcase(name, canonical(p))), None)


def unmet_requirements(plan: Plan, installed: dict[str, str | None], target: Target) -> list[str]:
    """Requirements of the fetched wheels that neither the wheelhouse nor the node meets, for the target."""
    have = {w.name: w.version for w in plan.fetch}
    excluded = {w.name for w, _ in plan.excluded}
    problems = []
    for wheel in plan.fetch:
        for requirement in _applicable(wheel, target):
            name = canonical(requirement.name)
            if name in excluded:
                continue
            version = have.get(name) or installed.get(name)
            if name not in have and name not in installed:
                problems.append(f"{wheel.name} needs {requirement} (for Python {target.python_version}): "
                                "neither in the wheelhouse nor on the node")
            elif version and not _satisfies(requirement, version):
                where = "wheelhouse" if name in have else "node"
                problems.append(f"{wheel.name} needs {requirement}; the {where} has {name} {version}")
    return problems


def _applicable(wheel: Wheel, target: Target) -> list[Requirement]:
    applicable = []
    for text in wheel.requires:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if requirement.marker is None or _marker_true(requirement, wheel, target):
            applicable.append(requirement)
    return applicable


def _marker_true(requirement: Requirement, wheel: Wheel, target: Target) -> bool:
    try:
        return any(requirement.marker.evaluate(target.marker_env(extra)) for extra in ("", *wheel.extras))
    except (InvalidMarker, UndefinedEnvironmentName):
        return True


def _satisfies(requirement: Requirement, version: str) -> bool:
    try:
        return requirement.specifier.contains(Version(public_version(version)), prereleases=True)
    except InvalidVersion:
        return True


# ---- pip ----------------------------------------------------------------------------------------------
def resolve_argv(requirements: list[str], target: Target, report: Path, scratch: Path,
                 python: str = sys.executable) -> list[str]:
    # pip refuses tag options without --target, even for a dry run; nothing is written there.
    return [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
            str(report), "--target", str(scratch), *target.tag_options(), *requirements]


def download_argv(wheels: list[Wheel], target: Target, dest: Path, python: str = sys.executable) -> list[str]:
    return [python, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(dest),
            *target.tag_options(), *[w.pin for w in wheels]]


def _run_pip(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in (result.stderr + result.stdout).splitlines() if "is ignored" not in line]
        raise WheelhouseError(f"{what} failed (pip exit {result.returncode}):\n  " + "\n  ".join(lines[-12:])
                              + f"\n  command: {' '.join(argv[:12])} ...")


def resolve(requirements: list[str], target: Target, report: Path,
            python: str = sys.executable) -> list[Wheel]:
    """Resolve with pip for the target; keep pip's report at `report`."""
    with tempfile.TemporaryDirectory(prefix="servegate-resolve-") as scratch:
        _run_pip(resolve_argv(requirements, target, report, Path(scratch), python),
                 f"resolving {' '.join(requirements)} for Python {target.python_version}")
    return parse_report(json.loads(report.read_text()))


def download(wheels: list[Wheel], target: Target, dest: Path, python: str = sys.executable) -> None:
    if wheels:
        _run_pip(download_argv(wheels, target, dest, python), f"downloading {len(wheels)} wheels")


def wheel_files(dest: Path) -> dict[str, Path]:
    """Canonical name -> wheel file in a folder (the name is the file name's first field)."""
    return {canonical(path.name.split("-", 1)[0]): path for path in sorted(dest.glob("*.whl"))}


def stale_files(dest: Path, plan: Plan) -> list[Path]:
    """Wheels in the folder that the plan does not fetch (an earlier run's): two versions break installs."""
    wanted = {(w.name, w.version) for w in plan.fetch}
    stale = []
    for path in sorted(dest.glob("*.whl")):
        fields = path.name.split("-")
        if (canonical(fields[0]), fields[1]) not in wanted:
            stale.append(path)
    return stale


# ---- report -------------------------------------------------------------------------------------------
def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def report_lines(plan: Plan, files: dict[str, Path]) -> list[str]:
    sizes = {name: path.stat().st_size for name, path in files.items()}
    fetched = sorted(plan.fetch, key=lambda w: -sizes.get(w.name, 0))
    lines = [f"wheelhouse: {len(plan.fetch)} wheels, {mib(sum(sizes.get(w.name, 0) for w in plan.fetch))}"]
    lines += [f"  {mib(sizes[w.name]) if w.name in sizes else 'missing':>11}  {w.pin}" for w in fetched]
    lines.append(f"already on the node: {len(plan.on_node)}")
    lines += [f"  kept node's {w.name} {v} (resolver chose {w.version}; --replace {w.name} to carry it)"
              for w, v in plan.drifted]
    lines.append(f"excluded (optional, heavy): {len(plan.excluded)}")
    lines += [f"  {w.pin}  (pattern {p})" for w, p in plan.excluded]
    if plan.problems:
        lines.append(f"PROBLEMS: {len(plan.problems)} requirement(s) not met on the node after install")
        lines += [f"  {text}" for text in plan.problems]
        names = sorted({text.split(" needs ", 1)[1].split()[0] for text in plan.problems if " needs " in text})
        lines.append("  fix: carry them (--replace NAME for a node version that does not fit), or, where the node "
                     f"really provides them, --provided {','.join(_req_name(n) for n in names)}")
    return lines


def manifest(plan: Plan, target: Target, requirements: list[str], files: dict[str, Path]) -> dict:
    def entry(wheel: Wheel) -> dict:
        path = files.get(wheel.name)
        return {"pin": wheel.pin, "file": path.name if path else None,
                "bytes": path.stat().st_size if path else None}

    return {"requirements": requirements, "target": vars(target), "wheels": [entry(w) for w in plan.fetch],
            "on_node": [{"name": w.name, "node": v, "resolved": w.version} for w, v in plan.on_node],
            "excluded": [{"pin": w.pin, "pattern": p} for w, p in plan.excluded],
            "problems": plan.problems,
            "install": "pip install --no-index --no-deps --target DIR *.whl  (then PYTHONPATH=DIR)"}
