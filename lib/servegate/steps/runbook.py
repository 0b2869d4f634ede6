"""The runbook: every deployment step, in order, with the scenario module that checks it and the Stack
method that runs it. The dry-run plan (steps/plan.py) narrates this list, the image gate runs its
pre-launch part, and a test keeps scenarios/ in step with it (file number == step number).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    number: str  # equals the scenario file's number: scenarios/test_<number>_<module>.py
    name: str  # the label every scenario docstring opens with: "Step <number>, <name>: ..."
    module: str  # scenario module suffix
    runs: str  # the Stack method (or fixture) that does the work
    checks: str  # what the scenario asserts, one line
    pre_launch: bool = False  # the launch itself refuses on this step's errors (Stack.launch_problems)

    @property
    def scenario(self) -> str:
        return f"test_{self.number}_{self.module}"


STEPS: tuple[Step, ...] = (
    Step("00", "preflight", "preflight", "Stack.preflight",
         "every node answers, versions recorded, serve port free, disk has room"),
    Step("10", "image", "image", "Stack.image",
         "one image ID on every node, pinned versions, Ray inside, containers started with the seed flags"),
    Step("15", "stack parity", "stack_parity", "Stack.stack_parity",
         "driver, CUDA, kernel, NCCL, key packages, pip freeze and image identical on every node"),
    Step("20", "mods", "mods", "Stack.apply_mods", "every mod applied where vLLM lives; its flags exist after it"),
    Step("30", "weights", "weights", "Stack.weights", "model folder identical on every node", pre_launch=True),
    Step("40", "Ray", "ray", "Stack.ray", "one head on the fabric IP, every node joined with its resources"),
    Step("45", "env parity", "env_parity", "Stack.env_parity",
         "every recipe var present and equal on every node, as a Ray task there sees it", pre_launch=True),
    Step("47", "fabric", "fabric", "Stack.fabric",
         "declared NCCL/GLOO/UCX interfaces exist with carrier on every node; a timed all-reduce crosses them"),
    Step("50", "flags", "flags", "Stack.flags",
         "every launch accepted by the vLLM (after mods) of the node that runs it", pre_launch=True),
    Step("55", "memory plan", "memory_plan", "Stack.memory_plan",
         "weights, KV and Mamba state fit the budget and the nodes", pre_launch=True),
    Step("60", "serve", "serve", "Stack.deployment",
         "ready (process, port, /health, /v1/models, first token); plain, streamed and concurrent chats"),
    Step("62", "startup timing", "startup", "deployment",
         "seconds from process start to port open, HTTP ready and first token, within expect.startup"),
    Step("65", "reasoning", "reasoning", "deployment", "the reasoning parser puts thinking in `reasoning`"),
    Step("66", "tool calls", "tool_calls", "deployment", "the tool-call parser yields `tool_calls`, also streamed"),
    Step("67", "speculative decoding", "spec_decode", "deployment",
         "drafts made and accepted; greedy output unchanged without speculation"),
    Step("68", "multi-turn tool use", "multiturn", "deployment",
         "tool call, tool result, final answer; streamed and plain parses equal"),
    Step("80", "memory headroom", "memory_headroom", "deployment",
         "a heavy phase succeeds above the MemAvailable floor; vLLM's KV cache matches the plan"),
    Step("85", "context ladder", "context_ladder", "deployment",
         "prompt length raised to the context; TTFT and MemAvailable per rung; stops at the floor naming the rung"),
    Step("90", "throughput", "throughput", "deployment",
         "load workloads meet their thresholds; no regression against the baseline"),
)
