"""What marks a servegate run on every node, in one place: the run id, the owner, docker labels.

Every process a run starts carries RUN_ID_VAR and OWNER_VAR in its environment; every container, image,
network and volume carries the labels below. The reaper (`servegate clean`) finds leftovers by these
names alone, so they are defined here and nowhere else.
"""

from __future__ import annotations

import os
import shlex
import socket
import uuid

RUN_ID_VAR = "SERVEGATE_RUN_ID"
OWNER_VAR = "SERVEGATE_OWNER"

RUN_LABEL = "org.servegate.run"  # a run's containers
OWNER_LABEL = "org.servegate.owner"  # host:pid of the process that started them
ROLE_LABEL = "org.servegate.role"
CONTENT_LABEL = "org.servegate.content"  # an image's content hash
BASE_LABEL = "org.servegate.base"  # the locally built base image
SIM_LABEL = "org.servegate.sim"  # a simulated cluster's node containers, network and volumes
SIM_OWNER_LABEL = "org.servegate.sim-owner"


def owner_tag() -> str:
    """host:pid of this process; a reaper treats what a live owner holds as not stale."""
    return f"{socket.gethostname()}:{os.getpid()}"


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def env_exports(run_id: str) -> list[str]:
    """The lines that mark a launched process as this run's (for its env file)."""
    return [f"export {RUN_ID_VAR}={run_id}", f"export {OWNER_VAR}={shlex.quote(owner_tag())}"]
