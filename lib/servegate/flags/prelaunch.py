"""The pre-launch flag gate: every vLLM launch of a rendered recipe, checked on the node that runs it.

Why a gate before launch: a removed flag, an invalid choice or an unregistered parser otherwise
surfaces minutes into engine start on the GPU node, one at a time. Here each node's launches are
checked against the manifest of that node's vLLM (after mods) and every finding is reported at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from servegate.flags.check import Finding, check_command, env_findings
from servegate.flags.index import describe_version, index_for

VLLM_ROLES = ("serve", "headless")  # launches whose argv is a vLLM serve command


@dataclass
class GateResult:
    recipe: str
    recipe_path: str
    node: str
    version: str
    launches: list[str] = field(default_factory=list)  # roles checked, e.g. ["ray-head", "serve"]
    findings: list[Finding] = field(default_factory=list)
    origin: dict = field(default_factory=dict)  # where the manifest came from (flags.node origin_line)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity != "error"]

    def record(self) -> dict:
        """The run.json entry: what was checked and every finding, errors first."""
        return {
            "vllm": self.version,
            "launches": self.launches,
            "errors": [asdict(f) for f in self.errors],
            "warnings": [asdict(f) for f in self.warnings],
        }

    def failure_message(self) -> str:
        """Expected, seen, where and what to do, one block per error."""
        head = (
            f"{len(self.errors)} flag error(s) in recipe {self.recipe} ({self.recipe_path}) on node "
            f"{self.node}: expected every flag, value and name to be accepted by {self.version} "
            "as installed on the node (after the recipe's mods); seen:"
        )
        return "\n".join([head, *(str(f) for f in self.errors)])


def check_launches(rendered, node_name: str, manifest: dict) -> GateResult:
    """Check what `rendered` (servegate.render.command.Rendered) runs on one node against that node's manifest.

    vLLM launches are checked in full (argv + env); other launches on the node (a Ray head or worker)
    only for VLLM_* variables, which the vLLM workers Ray starts there will read.
    """
    recipe = rendered.recipe
    source = f"{recipe.name}[{node_name}]"
    result = GateResult(recipe.name, str(recipe.path), node_name, describe_version(manifest))
    for launch in (launch for launch in rendered.launches if launch.node.name == node_name):
        result.launches.append(launch.role)
        if launch.role in VLLM_ROLES:
            found = check_command(launch.argv, launch.env, manifest, source=source)
        else:
            found = env_findings(launch.env, index_for(manifest), source)
        result.findings += [f for f in found if f not in result.findings]
    return result
