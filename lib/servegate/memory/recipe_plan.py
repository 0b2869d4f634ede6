"""From a rendered recipe to a MemoryPlan: find the model's shape and weights, the nodes' memory, the flags.

The model is read where it lives (the head node) through NodeHost: config.json plus every safetensors
header. A hub id nobody downloaded yet (or an unreachable node) falls back to the shape files in
recipes/models/shapes/, matched by name, with the checkpoint size they record.
"""

from __future__ import annotations

from servegate.config.expect import MEMORY, Expect
from servegate.errors import NodeError, RecipeError
from servegate.memory import terms as t
from servegate.memory.plan import GIB, MemoryPlan, PlanContext, build_plan
from servegate.memory.shapes import ModelShape, shape_for_model, shape_from_config
from servegate.memory.weights import read_model_dir, summarize_headers
from servegate.nodes.host import NodeHost
from servegate.render.command import Rendered


def memory_expect(recipe) -> Expect:
    """The recipe's expect.memory block, or every default when the recipe has none."""
    block = recipe.expect.get("memory")
    if block is not None:
        return block
    return Expect({key: field.default for key, field in MEMORY.items()})


def meminfo(host: NodeHost) -> dict[str, int]:
    """/proc/meminfo of a node, in bytes."""
    result = host.check("cat /proc/meminfo", "reading /proc/meminfo")
    values = {}
    for line in result.stdout.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def platform_of(rendered: Rendered) -> str:
    if any(node.gpus for node in rendered.cluster.nodes):
        return "gpu"
    env = rendered.launches[-1].env if rendered.launches else {}
    cpu = "vllm-cpu" in rendered.recipe.container or "VLLM_CPU_KVCACHE_SPACE" in env
    return "cpu" if cpu else "gpu"


def model_shape(model: str, host: NodeHost | None) -> tuple[ModelShape, int, str]:
    """(shape, total weight bytes, where the weight bytes come from) for a path or hub id."""
    if host is not None:
        try:
            config, headers = read_model_dir(host, model)
            summary = summarize_headers(headers)
            shape = shape_from_config(config, name=model, source=f"{model}/config.json on {host.name}")
            return (
                shape,
                summary.bytes,
                (
                    f"{summary.files} safetensors header(s), {summary.tensors} tensors "
                    f"{dict(sorted(summary.by_dtype.items()))}"
                ),
            )
        except NodeError:
            pass
    shape = shape_for_model(model)
    if shape is None:
        raise RecipeError(
            f"model {model!r}: no config.json readable on the head node and no shape file names it",
            fix="download the model first, or add recipes/models/shapes/<model>.yaml with its "
            "published config and a 'names:' entry matching this id",
        )
    checkpoint = shape.checkpoint_for(model)
    if checkpoint is None:
        weights = int((shape.params_total or 0) * 2)
        return (
            shape,
            weights,
            f"{shape.params_total:.4g} params x 2 B (no checkpoint entry matches {model!r})",
        )
    if checkpoint.layout == "nvfp4-selective":
        weights = t.nvfp4_selective_bytes(shape)
    elif checkpoint.layout:
        raise RecipeError(f"{shape.source}: checkpoint '{checkpoint.match}' names an unknown layout "
                          f"{checkpoint.layout!r}", fix="known layouts: nvfp4-selective")
    else:
        weights = checkpoint.weight_bytes(shape.params_total or 0)
    return (
        shape,
        weights,
        (
            f"checkpoint '{checkpoint.match}' in {shape.source}: {checkpoint.source}"
            + (" (unsure)" if checkpoint.unsure else "")
        ),
    )


def node_total(rendered: Rendered, hosts: dict[str, NodeHost] | None, memory: Expect) -> tuple[int, str]:
    if memory.get("node_total_gib"):
        return int(memory.node_total_gib * GIB), "expect.memory.node_total_gib"
    if not hosts:
        raise RecipeError(
            "the planner needs each node's memory",
            fix="set expect.memory.node_total_gib, or run where the nodes are reachable",
        )
    try:
        totals = {name: meminfo(host)["MemTotal"] for name, host in hosts.items()}
    except (NodeError, KeyError) as exc:
        raise RecipeError(
            f"cannot read MemTotal on the nodes: {exc}", fix="set expect.memory.node_total_gib in the recipe"
        ) from None
    smallest = min(totals, key=totals.get)
    return totals[smallest], f"MemTotal of {smallest}"


def _image_vllm(recipe) -> str | None:
    """The vLLM version the recipe's expect.image pins, if any."""
    image = recipe.expect.get("image")
    return image.get("vllm") if image is not None else None


def _head_gpu_query(rendered: Rendered, hosts: dict[str, NodeHost] | None, fields: str) -> list[str] | None:
    """The first GPU's line of `nvidia-smi --query-gpu=FIELDS` on the head, split at commas; None when no GPU
    is declared, the head is not reachable or nvidia-smi fails."""
    head = rendered.cluster.head
    host = hosts.get(head.name) if hosts else None
    if host is None or not head.gpus:
        return None
    try:
        out = host.run(f"nvidia-smi --query-gpu={fields} --format=csv,noheader,nounits 2>/dev/null").stdout
    except NodeError:
        return None
    return [value.strip() for value in (out.strip().splitlines() or [""])[0].split(",")]


def gpu_total(rendered: Rendered, hosts: dict[str, NodeHost] | None) -> int | None:
    """A discrete GPU's memory as nvidia-smi reports it on the head (None on unified memory, where it says
    [N/A], or when no GPU is declared or reachable)."""
    for fields in ("memory.total,memory.reserved", "memory.total"):  # older drivers lack memory.reserved
        values = _head_gpu_query(rendered, hosts, fields)
        if values is None:
            return None
        numbers = [float(v) for v in values if v.replace(".", "", 1).isdigit()]
        if numbers:
            return int((numbers[0] - (numbers[1] if len(numbers) > 1 else 0)) * 2**20)
    return None  # [N/A]: unified memory


def gpu_capability(rendered: Rendered, hosts: dict[str, NodeHost] | None) -> float | None:
    """The head GPU's CUDA compute capability (nvidia-smi's compute_cap, e.g. 9.0), or None when no GPU is
    declared or reachable, or the driver does not say."""
    values = _head_gpu_query(rendered, hosts, "compute_cap")
    try:
        return float(values[0]) if values else None
    except ValueError:
        return None


def plan_for(
    rendered: Rendered, hosts: dict[str, NodeHost] | None = None, profile: dict | None = None
) -> MemoryPlan:
    memory = memory_expect(rendered.recipe)
    head = rendered.cluster.head
    host = hosts.get(head.name) if hosts else None
    shape, weights, weight_source = model_shape(rendered.model_arg, host)
    total, total_source = node_total(rendered, hosts, memory)
    serve = next((launch for launch in rendered.launches if launch.role == "serve"), None)

    def in_bytes(key: str) -> int | None:
        return None if memory.get(key) is None else int(memory[key] * GIB)

    ctx = PlanContext(
        argv=rendered.serve_argv,
        env=dict(serve.env if serve else rendered.recipe.env),
        platform=platform_of(rendered),
        node_names=[n.name for n in rendered.cluster.nodes],
        node_total_bytes=total,
        node_total_source=total_source,
        gpu_total_bytes=in_bytes("gpu_total_gib") or gpu_total(rendered, hosts),
        gpu_capability=memory.get("gpu_compute_capability") or gpu_capability(rendered, hosts),
        overhead_bytes=in_bytes("overhead_gib"),
        margin_bytes=in_bytes("margin_gib"),
        floor_bytes=in_bytes("floor_gib"),
        recipe=rendered.recipe.name,
        vllm_version=memory.get("vllm") or _image_vllm(rendered.recipe),
        profile=profile,
    )
    return build_plan(shape, weights, weight_source, ctx, model=rendered.model_arg)
