"""The container engine on this machine: install docker.io + debootstrap and start dockerd when absent.

Standard library only, so CI can run it before anything else is installed:
    PYTHONPATH=lib python3 -m servegate.sim.engine     (also what `.ci/run` does)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from servegate.errors import ServegateError, WaitTimeout  # standard library only, like this module
from servegate.waits import wait_until  # standard library only too

PACKAGES = ("docker.io", "debootstrap")
DOCKERD_LOG = Path("/var/log/servegate-dockerd.log")
SOCKET_WAIT_S = 60


class EngineError(ServegateError):
    """The docker engine could not be installed or started."""


def engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    return (
        subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=30
        ).returncode
        == 0
    )


def install_packages(log=print) -> None:
    missing = [p for p in PACKAGES if not _package_installed(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise EngineError(
            f"packages {missing} are missing and this is not root; install them: "
            f"apt-get install -y {' '.join(missing)}"
        )
    log(f"installing {' '.join(missing)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *missing]):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1200)
        if done.returncode != 0:
            raise EngineError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-1500:]}")


def _package_installed(name: str) -> bool:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True)
    return out.returncode == 0 and "install ok installed" in out.stdout


def start_dockerd(log=print) -> None:
    """Start dockerd detached (it outlives this process: other runs and CI steps share it)."""
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not Path(dockerd).exists():
        raise EngineError("dockerd is not installed (apt-get install -y docker.io)")
    log(f"starting {dockerd} (log {DOCKERD_LOG})")
    with open(DOCKERD_LOG, "ab") as out:
        subprocess.Popen([dockerd], stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until("dockerd answers `docker info`", lambda: (engine_answers(), "no answer yet"), SOCKET_WAIT_S, 0.5,
                   subject="dockerd", log_tail=lambda: DOCKERD_LOG.read_text(errors="replace")[-2000:]
                   if DOCKERD_LOG.exists() else "")
    except WaitTimeout as exc:
        raise EngineError(str(exc)) from None


def ensure_engine(log=print) -> str:
    """Make `docker` usable here; return the server version. Idempotent."""
    install_packages(log)
    if not engine_answers():
        start_dockerd(log)
    return subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=30
    ).stdout.strip()


def main() -> int:
    try:
        version = ensure_engine(log=lambda msg: print(f"servegate engine: {msg}", file=sys.stderr))
    except EngineError as exc:
        print(f"servegate engine: error: {exc}", file=sys.stderr)
        return 1
    print(f"servegate engine: docker {version} answers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
