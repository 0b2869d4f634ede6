"""The gate's markdown summary (fit for a CI job summary), and writing it with the junit file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from servegate.gate.junit import junit_xml
from servegate.gate.model import Check, GateConfig
from servegate.results.run import RunDir

ICONS = {"passed": "✅", "failed": "❌", "skipped": "⏭️"}


def summary_markdown(
    checks: list[Check], config: GateConfig, verdict: str, runs: dict[str, str], gate_dir: Path
) -> str:
    lines = [
        f"## servegate image gate: {'PASSED' if verdict == 'passed' else 'FAILED'}",
        "",
        f"- new image: `{config.image}`",
        f"- baseline image: `{config.baseline_image or '(stored baseline)'}`",
        f"- results: `{gate_dir}`",
        "",
        "| | step | target | seconds | detail |",
        "|---|---|---|---|---|",
    ]
    for c in checks:
        message = c.message.replace("|", "\\|").replace("\n", " ")[:300]
        lines.append(f"| {ICONS.get(c.outcome, c.outcome)} | {c.step} | {c.target} | {c.seconds:.0f} | {message} |")
    for path in sorted(gate_dir.glob("deltas-*.md")):
        lines += ["", f"### {path.stem.removeprefix('deltas-')}: deltas", "", path.read_text().strip()]
    if runs:
        lines += ["", "run folders:"] + [f"- {label}: `{path}`" for label, path in runs.items()]
    return "\n".join(lines) + "\n"


def write_outputs(
    run: RunDir,
    checks: list[Check],
    config: GateConfig,
    verdict: str,
    runs: dict[str, str],
    log: Callable[[str], None],
) -> None:
    """junit.xml and summary.md in the gate's folder; the summary also to $GITHUB_STEP_SUMMARY and the log."""
    run.write_text("junit.xml", junit_xml(checks, config.image))
    summary = summary_markdown(checks, config, verdict, runs, run.path)
    run.write_text("summary.md", summary)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as handle:
            handle.write(summary + "\n")
    log(summary)
    log(f"gate results: {run.path} (junit.xml, summary.md)")
