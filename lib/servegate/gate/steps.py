"""The bodies of the gate's steps, each a call into the library that fills in one Check.

A step body raises on failure (the gate records the exception as a failed Check) or sets
check.outcome itself when the library answers with a verdict rather than an exception.
"""

from __future__ import annotations

from collections.abc import Callable

from servegate.config.paths import REPO_ROOT
from servegate.config.recipe import Recipe
from servegate.errors import ServegateError
from servegate.gate.flags import check_family
from servegate.gate.model import Check
from servegate.gate.pins import pin_problems
from servegate.results.run import RunDir
from servegate.serve.deployment import first_text
from servegate.stack import Stack
from servegate.throughput import baseline as baselines
from servegate.throughput.measure import Measurement, measure


def pins(check: Check, image: str) -> None:
    problems = pin_problems(image)
    if problems:
        check.outcome, check.message, check.detail = "failed", "; ".join(problems), "\n".join(problems)
    else:
        check.message = "pinned"


def environment(check: Check, stack: Stack) -> dict:
    """Stack.environments(): vLLM and Ray must import on every node."""
    envs = stack.environments()
    check.message = "; ".join(
        f"{n}: " + ", ".join(f"{k} {v}" for k, v in sorted(e.versions.items())) for n, e in envs.items()
    )
    missing = [n for n, e in envs.items() if "ray" not in e.versions]
    if missing:
        check.outcome, check.message = "failed", f"Ray is not importable on {missing}: {check.message}"
    return envs


def flags(check: Check, stack: Stack, family: str, gate_run: RunDir) -> None:
    """The flag reports of the gated recipe's nodes and of the family's other recipes."""
    report = check_family(stack, family)
    check.detail = "\n".join(report.lines) + "\n"
    gate_run.write_text(f"flags-{stack.recipe.name}.txt", check.detail)
    check.message = f"{report.recipes} recipe(s): " + "; ".join(report.summaries)[:400]
    if report.errors:
        check.outcome = "failed"


def mods(check: Check, stack: Stack) -> None:
    outcomes = stack.apply_mods()
    check.message = (
        ", ".join(f"{o['mod']}/{o['patch']}: {o['status']}" for items in outcomes.values() for o in items) or "no mods"
    )


def smoke(deployment) -> str:
    """One chat and one streamed chat must produce text (content, reasoning or a tool call)."""
    messages = [{"role": "user", "content": "Say hello in one short sentence."}]
    reply = deployment.chat(messages, max_tokens=8, temperature=0)
    answer = first_text(reply["choices"][0]["message"])
    chunks = list(deployment.stream_chat(messages, max_tokens=8, temperature=0))
    streamed = [first_text(c.get("delta") or {}) for chunk in chunks for c in chunk.get("choices", [])]
    if not answer or not any(streamed):
        raise ServegateError(
            f"smoke requests got no text: chat message {reply['choices'][0]['message']!r}, "
            f"{len(chunks)} streamed chunks without text"
        )
    first = deployment.timings.get("start_to_first_token_s", 0.0)
    return f"ready in {first:.0f} s; chat and streamed chat answered"


def throughput(check: Check, stack: Stack, deployment, log: Callable[[str], None]) -> Measurement | None:
    """The recipe's expect.throughput workloads against the live deployment (None: the recipe has none)."""
    if not stack.recipe.expect.throughput:
        check.outcome, check.message = "skipped", "the recipe has no expect.throughput workloads"
        return None
    result = measure(
        stack.recipe,
        deployment,
        stack.run,
        hosts=stack.hosts,
        tokenizer=deployment.rendered.model_arg,
        log=log,
    )
    check.message = f"{len(result.workloads)} workload(s), results in {stack.run.path}/throughput"
    if result.violations:
        check.outcome = "failed"
        check.detail = "\n".join(str(v) for v in result.violations)
        check.message = f"{len(result.violations)} threshold(s) missed; first: {result.violations[0]}"
    return result


def stored_reference(recipe: Recipe, old: str | None) -> tuple[dict | None, str] | None:
    """(baseline, where from) when the stored one was measured on the baseline image (or none was named);
    (None, why) when there is nothing to compare with; None: the old image must be measured now."""
    path = baselines.baseline_path(recipe.name)
    stored = baselines.load(path) if path.is_file() else None
    if stored and (old is None or (stored.get("provenance") or {}).get("container") == old):
        return stored, f"{path.relative_to(REPO_ROOT)} (run {stored.get('source_run')})"
    if old is None:
        return None, (
            f"no baseline at {path}; fix: record one from a good run (servegate baseline RUN) "
            f"or pass --baseline-image OLD to measure the old image in this gate run"
        )
    return None


def measured_reference(measurement: Measurement | None, old: str) -> tuple[dict | None, str]:
    if measurement is None:
        return None, f"the baseline image {old} could not be measured (see its steps above)"
    return baselines.make(measurement.run_path), f"{old} measured in this gate run"


def compare(
    check: Check,
    recipe: Recipe,
    measurement: Measurement,
    reference: tuple[dict | None, str],
    gate_run: RunDir,
    tolerances: dict[str, float],
) -> None:
    """No metric worse than its tolerance; the delta table lands in deltas-<recipe>.md for the summary."""
    baseline, source = reference
    if baseline is None:
        check.outcome, check.message = "failed", source
        return
    deltas = baselines.compare(measurement.summary, baseline, tolerances)
    worse = baselines.regressions(deltas)
    table = "\n".join(baselines.delta_lines(deltas))
    gate_run.write_text(f"deltas-{recipe.name}.md", f"against {source}\n\n{table}\n")
    check.detail = table
    if not deltas:
        check.outcome, check.message = "failed", f"no workload/level in common with {source}"
    elif worse:
        check.outcome = "failed"
        check.message = f"{len(worse)} regression(s) against {source}; first: {worse[0]}"
    else:
        check.message = f"{len(deltas)} metric(s) within tolerance of {source}"
