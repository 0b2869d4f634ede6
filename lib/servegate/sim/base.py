"""A base OS image made on this machine: there is no image registry here, so `FROM debian` cannot work.

debootstrap --variant=minbase bookworm into a folder, then `tar | docker import`. Cached by tag: a base
that exists is never rebuilt (remove it by its tag to force a rebuild; never with a blanket prune).
"""

from __future__ import annotations

import subprocess
import tempfile
import time

from servegate.errors import ServegateError
from servegate.labels import BASE_LABEL

BASE_IMAGE = "servegate-base:bookworm"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def ensure_base_image(tag: str = BASE_IMAGE, log=print) -> str:
    """Return the tag of the local base image, building it (~30 s) if this machine lacks it."""
    if image_exists(tag):
        return tag
    started = time.monotonic()
    log(f"building base image {tag}: debootstrap --variant=minbase {SUITE} (first time only)")
    with tempfile.TemporaryDirectory(prefix="servegate-rootfs-") as rootfs:
        boot = subprocess.run(
            ["debootstrap", "--variant=minbase", SUITE, rootfs, MIRROR],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if boot.returncode != 0:
            raise ServegateError(
                f"debootstrap {SUITE} failed (exit {boot.returncode}): {boot.stderr[-1500:]}\n"
                f"  fix: check that {MIRROR} is reachable and debootstrap is installed"
            )
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [
                "docker",
                "import",
                "--change",
                f"LABEL {BASE_LABEL}={SUITE}-minbase",
                "--change",
                'CMD ["/bin/bash"]',
                "-",
                tag,
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
        )
        tar.stdout.close()
        tar.wait()
    if imported.returncode != 0 or tar.returncode != 0:
        raise ServegateError(f"docker import of the {SUITE} rootfs failed: {imported.stderr[-1000:]}")
    log(f"base image {tag} built in {time.monotonic() - started:.0f} s")
    return tag
