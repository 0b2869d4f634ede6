"""sparkrun's own loader as a referee: a Debian trixie root (Python 3.13) holding a venv with sparkrun 0.4.2.

sparkrun needs Python >= 3.12 (PEP 695 syntax) and exact pins that clash with servegate's, so it cannot live in
the test venv. As root, `build(folder)` makes it from what a fresh Debian machine reaches (deb.debian.org and
PyPI): `debootstrap --variant=minbase trixie`, then `python3 -m venv /sr && /sr/bin/pip install sparkrun==0.4.2`
inside it (chroot). A marker file, written last, says the folder is complete; a complete folder is reused, an
incomplete one is removed and built again. `Referee.run` copies a recipe's folder into the root and runs a Python
snippet on it with the venv's python (argv lists only, a clean environment). Standard library only: noxfile.py
runs this file as a script (`python3 tests/sparkrun_referee.py [FOLDER]`) to build it ahead of the tests.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SPARKRUN = "sparkrun==0.4.2"
SUITE = "trixie"  # Python 3.13
MIRROR = "http://deb.debian.org/debian"
CACHE = Path.home() / ".cache" / "servegate" / "sparkrun-referee-0.4.2"
MARKER = ".servegate-referee-complete"
VENV_PY = "/sr/bin/python"
SPEC = {"suite": SUITE, "requirement": SPARKRUN, "venv": "/sr", "marker_version": 1}
CHROOT_ENV = {"HOME": "/root", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
HOST_CA = "/etc/ssl/certs/servegate-host-ca.crt"  # in the root: the host's CA bundle, so pip trusts what it does


class Unavailable(Exception):
    """The referee cannot be built or run on this machine; the message says why, precisely."""


@dataclass(frozen=True)
class Referee:
    root: Path
    chroot: str

    def run(self, snippet: str, recipe: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run `python -c snippet <recipe-in-root> *args` with sparkrun's venv; the recipe's folder (its mods
        too) is copied into the root for the run and removed after."""
        work = Path(tempfile.mkdtemp(prefix="recipes-", dir=self.root / "srv"))
        try:
            shutil.copytree(recipe.parent, work / "r", symlinks=True)
            inside = "/" + str((work / "r" / recipe.name).relative_to(self.root))
            return subprocess.run([self.chroot, str(self.root), VENV_PY, "-c", snippet, inside, *args],
                                  capture_output=True, text=True, env=dict(CHROOT_ENV), timeout=timeout)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def build(folder: Path = CACHE, log=print) -> Referee:
    """The referee in `folder`: reused when complete and valid, otherwise built there from scratch."""
    chroot = _preflight()
    folder = Path(folder).absolute()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:  # parallel workers: one builds, others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        referee = Referee(folder, chroot)
        if _complete(referee):
            return referee
        _remove(folder)
        started = time.monotonic()
        _debootstrap(folder, log)
        _venv(referee, log)
        if not _complete(referee, check_marker=False):
            raise Unavailable(f"sparkrun was installed in {folder} but `import sparkrun.core.recipe` fails there")
        (folder / MARKER).write_text(json.dumps({**SPEC, "built_s": round(time.monotonic() - started, 1)}) + "\n")
        log(f"sparkrun referee built in {time.monotonic() - started:.0f}s at {folder}")
        return referee


def _preflight() -> str:
    if sys.platform != "linux":
        raise Unavailable(f"the sparkrun referee is a Debian chroot: needs Linux, not {sys.platform}")
    if os.geteuid() != 0:
        raise Unavailable("building and entering the sparkrun referee (debootstrap, chroot) needs root; "
                          f"this runs as uid {os.geteuid()}")
    chroot = shutil.which("chroot", path=CHROOT_ENV["PATH"])
    if not chroot:
        raise Unavailable("no chroot binary (coreutils) in /usr/sbin:/usr/bin")
    return chroot


def _complete(referee: Referee, check_marker: bool = True) -> bool:
    marker = referee.root / MARKER
    if check_marker:
        try:
            recorded = json.loads(marker.read_text())
        except (OSError, ValueError):
            return False
        if {k: recorded.get(k) for k in SPEC} != SPEC:
            return False
    version = SPARKRUN.split("==")[1]
    probe = f"import sparkrun.core.recipe, importlib.metadata as m; assert m.version('sparkrun') == {version!r}"
    try:
        done = subprocess.run([referee.chroot, str(referee.root), VENV_PY, "-c", probe], capture_output=True,
                              env=dict(CHROOT_ENV), timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _debootstrap(folder: Path, log) -> None:
    tool = shutil.which("debootstrap", path=CHROOT_ENV["PATH"]) or _install_debootstrap(log)
    log(f"debootstrap {SUITE} into {folder} (minbase + python3-venv)")
    argv = [tool, "--variant=minbase", "--include=python3,python3-venv,ca-certificates", SUITE, str(folder), MIRROR]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=_host_env())
    finally:
        _unmount_under(folder)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-6:]
        raise Unavailable(f"debootstrap {SUITE} from {MIRROR} failed (rc {done.returncode}): " + " | ".join(tail))


def _install_debootstrap(log) -> str:
    if not shutil.which("apt-get"):
        raise Unavailable("no debootstrap, and no apt-get to install it")
    log("no debootstrap: apt-get install -y debootstrap")
    env = {**_host_env(), "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "debootstrap"]
    if subprocess.run(install, capture_output=True, env=env, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=600)
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
        if done.returncode != 0:
            raise Unavailable(f"apt-get install debootstrap failed: {done.stderr.strip()[-300:]}")
    tool = shutil.which("debootstrap", path=CHROOT_ENV["PATH"])
    if not tool:
        raise Unavailable("apt-get installed debootstrap but it is not on /usr/sbin:/usr/bin")
    return tool


def _venv(referee: Referee, log) -> None:
    """venv + pip install inside the root; pip trusts the host's CA bundle (a proxy's CA, where there is one)."""
    root = referee.root
    for name in ("resolv.conf", "hosts"):
        if Path("/etc", name).is_file():
            (root / "etc" / name).unlink(missing_ok=True)
            shutil.copyfile(Path("/etc", name), root / "etc" / name)
    (root / "srv").mkdir(exist_ok=True)
    cert: list[str] = []
    bundle = next((Path(p) for p in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"),
                                     "/etc/ssl/certs/ca-certificates.crt") if p and Path(p).is_file()), None)
    if bundle:
        shutil.copyfile(bundle, root / HOST_CA.lstrip("/"))
        cert = ["--cert", HOST_CA]
    env = {**CHROOT_ENV, **{k: v for k, v in os.environ.items() if k in PROXY_VARS}}
    steps = [["/usr/bin/python3", "-m", "venv", "/sr"],
             [VENV_PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-input", *cert, SPARKRUN]]
    for argv in steps:
        log("chroot: " + " ".join(argv))
        done = subprocess.run([referee.chroot, str(root), *argv], capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            raise Unavailable(f"in the referee root, `{' '.join(argv[:4])} ...` failed (rc {done.returncode}): "
                              + " | ".join((done.stdout + done.stderr).strip().splitlines()[-4:]))


def _host_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", *PROXY_VARS)
    return {k: v for k, v in os.environ.items() if k in keep} | {"PATH": CHROOT_ENV["PATH"]}


def _unmount_under(folder: Path) -> None:
    """Unmount whatever a failed debootstrap left mounted inside `folder` (proc, sys), deepest first."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    prefix = str(folder).rstrip("/") + "/"
    points = [line.split()[1].encode().decode("unicode_escape") for line in lines if len(line.split()) > 1]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True)


def _remove(folder: Path) -> None:
    if folder.exists() or folder.is_symlink():
        _unmount_under(folder)
        prefix = str(folder).rstrip("/") + "/"
        if any(line.split()[1].startswith(prefix) for line in Path("/proc/self/mounts").read_text().splitlines()):
            raise Unavailable(f"{folder} still has something mounted inside: not removing it")
        shutil.rmtree(folder)


if __name__ == "__main__":  # python3 tests/sparkrun_referee.py [FOLDER]: build it (exit 0) or say why not (exit 1)
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else CACHE
    t0 = time.monotonic()
    try:
        built = build(target)
    except Unavailable as why:
        print(f"sparkrun referee unavailable: {why}", file=sys.stderr)
        sys.exit(1)
    print(f"sparkrun referee ready at {built.root} ({time.monotonic() - t0:.0f}s)")
