"""Weights on every node: the model folder must be identical everywhere before launch.

A manifest is the folder's file list with sizes and a content hash per file (sha256 of the whole file;
for folders over FULL_HASH_LIMIT bytes, of its size plus first and last SAMPLE_BYTES, recorded as mode
"sampled"). A node that lacks the folder receives it from a node that has it (`tar c | tar x` through
this machine, into a temporary sibling renamed into place). A node whose folder differs is reported with
the differing files, never silently overwritten: which copy is right is a person's call.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field

from servegate.errors import Location, NodeError
from servegate.nodes.host import NodeHost, Result
from servegate.nodes.transport import pipe_between

FULL_HASH_LIMIT = 20 * 2**30
SAMPLE_BYTES = 64 * 2**20
ABSENT_RC = 3

# Prints "size<TAB>bytes<TAB>path" per file, then "full|sampled<TAB>hash<TAB>path" per file, relative to the
# folder. Few processes (find, sha256sum): it runs in every node check round.
MANIFEST_SCRIPT = r"""
set -euo pipefail
cd {path} 2>/dev/null || exit {absent}
sizes=() names=() total=0
while IFS=$'\t' read -r -d '' size name; do
  sizes+=("$size"); names+=("$name"); total=$((total + size))
  printf 'size\t%s\t%s\n' "$size" "$name"
done < <(find . -type f -printf '%s\t%P\0')
wait $!
[ "${{#names[@]}}" -gt 0 ] || exit 0
if [ "$total" -le {limit} ]; then
  while IFS= read -r line; do
    printf 'full\t%s\t%s\n' "${{line:0:64}}" "${{line:66}}"
  done < <(sha256sum -- "${{names[@]}}")
  wait $!
else
  for i in "${{!names[@]}}"; do
    f=${{names[$i]}}
    h=$( {{ printf '%s\n' "${{sizes[$i]}}"; head -c {sample} -- "$f"; tail -c {sample} -- "$f"; }} | sha256sum )
    printf 'sampled\t%s\t%s\n' "${{h%% *}}" "$f"
  done
fi
"""


@dataclass
class Manifest:
    node: str
    path: str
    mode: str = "full"
    sizes: dict[str, int] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        text = "".join(
            f"{name}\t{self.sizes[name]}\t{self.hashes.get(name, '')}\n" for name in sorted(self.sizes)
        )
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())

    def summary(self) -> dict:
        return {"files": len(self.sizes), "bytes": self.total_bytes, "mode": self.mode, "digest": self.digest}


def manifest(host: NodeHost, path: str) -> Manifest | None:
    """The folder's manifest on the node, or None when the folder does not exist there (one round trip)."""
    return parse_manifest(host.name, path, host.run(manifest_script(path), timeout=3600))


def manifest_script(path: str) -> str:
    return MANIFEST_SCRIPT.format(path=shlex.quote(path), limit=FULL_HASH_LIMIT, sample=SAMPLE_BYTES,
                                  absent=ABSENT_RC)


def parse_manifest(node: str, path: str, result: Result) -> Manifest | None:
    """The manifest from the script's output; None when the folder is absent; NodeError when hashing failed."""
    if result.rc == ABSENT_RC:
        return None
    if not result.ok:
        raise NodeError(
            f"hashing the model folder {path} failed (exit {result.rc}): {result.stderr.strip()[-300:]}",
            where=Location(node=node),
            fix="check the folder's permissions and disk on the node",
        )
    found = Manifest(node, path)
    for line in result.stdout.splitlines():
        kind, value, name = (line.split("\t", 2) + ["", ""])[:3]
        if kind == "size":
            found.sizes[name] = int(value)
        elif kind in ("full", "sampled"):
            found.mode = kind
            found.hashes[name] = value
    return found


def differences(reference: Manifest, other: Manifest, limit: int = 8) -> list[str]:
    """Human-readable differences of `other` against `reference`."""
    out = []
    for name in sorted(set(reference.sizes) | set(other.sizes)):
        if name not in other.sizes:
            out.append(f"{name} missing")
        elif name not in reference.sizes:
            out.append(f"{name} extra")
        elif reference.sizes[name] != other.sizes[name]:
            out.append(f"{name} size {other.sizes[name]} != {reference.sizes[name]}")
        elif reference.hashes.get(name) != other.hashes.get(name):
            out.append(
                f"{name} content differs (sha256 {other.hashes.get(name, '?')[:12]} != "
                f"{reference.hashes.get(name, '?')[:12]})"
            )
    return out[:limit] + ([f"... and {len(out) - limit} more"] if len(out) > limit else [])


def problems(manifests: dict[str, Manifest | None], reference: str, path: str) -> list[str]:
    """Every node must hold the folder, identical to the reference node's copy."""
    ref = manifests.get(reference)
    if ref is None:
        return [f"node {reference}: model folder {path} does not exist"]
    if not ref.sizes:
        return [f"node {reference}: model folder {path} is empty"]
    out = []
    for name, found in manifests.items():
        if found is None:
            out.append(f"node {name}: model folder {path} does not exist")
        elif found.digest != ref.digest:
            out.append(
                f"node {name}: model folder {path} differs from node {reference}'s: "
                + "; ".join(differences(ref, found))
            )
    return out


def copy_folder(source: NodeHost, target: NodeHost, path: str) -> int:
    """Copy the folder from source to target at the same path; return bytes moved."""
    parent, name = path.rstrip("/").rsplit("/", 1)
    staging = f"{parent}/.{name}.incoming"
    receive = (
        f"rm -rf {shlex.quote(staging)} && mkdir -p {shlex.quote(staging)} && "
        f"tar -C {shlex.quote(staging)} -xf - && rm -rf {shlex.quote(path)} && "
        f"mv {shlex.quote(staging)} {shlex.quote(path)}"
    )
    result = pipe_between(
        source.node.host,
        f"tar -C {shlex.quote(path)} -cf - .",
        target.node.host,
        receive,
        what=f"copying the model folder {path} from node {source.name}",
        node=target.name,
    )
    return result.bytes


def sync_folder(
    hosts: dict[str, NodeHost], source: str, path: str, stamp: str | None = None, log=print
) -> dict[str, str]:
    """Give every node that lacks the folder a copy from `source`; return the action per node.

    With `stamp` (a file inside the folder that names its version, e.g. a generated model's
    servegate-model.json), a node whose stamp differs from the source's holds an outdated copy that
    servegate itself made, and receives the current one. Without it, an existing folder is never replaced.
    """
    quoted = shlex.quote(path)
    if not hosts[source].run(f"test -d {quoted}").ok:
        raise NodeError(
            f"model folder {path} does not exist on the source node",
            where=Location(node=source),
            fix="generate or download the model there first",
        )
    stamp_cmd = f"cat {quoted}/{shlex.quote(stamp)} 2>/dev/null" if stamp else None
    wanted = hosts[source].run(stamp_cmd).stdout if stamp_cmd else None
    actions = {}
    for name, host in hosts.items():
        present = name == source or host.run(f"test -d {quoted}").ok
        outdated = (
            present and name != source and stamp_cmd is not None and host.run(stamp_cmd).stdout != wanted
        )
        if present and not outdated:
            actions[name] = "present"
            continue
        log(
            f"node {name}: receiving model folder {path} from node {source}"
            + (" (outdated copy)" if outdated else "")
        )
        moved = copy_folder(hosts[source], host, path)
        actions[name] = f"received {moved} bytes" + (", replaced an outdated copy" if outdated else "")
    return actions
