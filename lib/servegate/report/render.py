"""Render a report once as a list of blocks, then write those blocks as HTML (plots embedded as base64)
and as markdown (plots as PNG files beside it), so both always say the same thing."""

from __future__ import annotations

import base64
import datetime as dt
import html
from pathlib import Path

from servegate.report import charts
from servegate.report.blocks import Heading, Image, Table, Text
from servegate.report.checks import check_blocks
from servegate.report.model import RunView
from servegate.throughput import baseline as baselines
from servegate.throughput import store

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1150px;
color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}h3{margin-top:1.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f4f4f4}tr:nth-child(even) td{background:#fafafa}
.passed,.ok,.improved{color:#17772f;font-weight:600}.failed,.error,.regressed,.interrupted{color:#b00020;
font-weight:700}.skipped,.n\\/a,.not{color:#777}img{max-width:100%;border:1px solid #eee;margin:.4em 0}
.caption{color:#666;font-size:.85em}"""
VERDICT_WORDS = {
    "passed",
    "failed",
    "error",
    "skipped",
    "n/a",
    "ok",
    "regressed",
    "improved",
    "interrupted",
    "not measured",
    "not run",
    "running",
    "within noise",
    "valid",
}


def blocks(runs: list[RunView], out_dir: Path) -> list:
    out: list = [
        Heading(f"servegate report: {', '.join(sorted({r.recipe for r in runs}))}", 1),
        Text(f"{len(runs)} run(s); generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"),
    ]
    out.append(Heading("Verdicts"))
    out.append(
        Table(["run", "recipe", "verdict", "passed", "failed", "other"], [_verdict_row(r) for r in runs])
    )
    chart = charts.throughput_chart(runs, out_dir / "throughput.png")
    if chart:
        out += [
            Heading("Throughput vs concurrency"),
            Image(chart, "system and per-user output tok/s, TTFT and ITL (p50 solid, p99 dashed)"),
        ]
    for run in runs:
        out += _run_blocks(run, out_dir)
    return out


def _verdict_row(run: RunView) -> list[str]:
    outcomes = [s.get("outcome") for s in run.data.get("scenarios", {}).values()]
    other = len(outcomes) - outcomes.count("passed") - outcomes.count("failed") - outcomes.count("error")
    return [
        run.name,
        run.recipe,
        run.verdict,
        str(outcomes.count("passed")),
        str(outcomes.count("failed") + outcomes.count("error")),
        str(other),
    ]


def _run_blocks(run: RunView, out_dir: Path) -> list:
    out: list = [
        Heading(f"{run.recipe}: {run.name}"),
        Heading("Provenance", 3),
        Table(["what", "value"], [list(row) for row in run.provenance_rows()]),
    ]
    scenarios = run.data.get("scenarios", {})
    if scenarios:
        out += [
            Heading("Scenarios", 3),
            Table(
                ["outcome", "seconds", "scenario", "message"],
                [
                    [
                        s.get("outcome", "?"),
                        f"{s.get('seconds', 0):.1f}",
                        s.get("scenario", nodeid),
                        s.get("message", "")[:240],
                    ]
                    for nodeid, s in scenarios.items()
                ],
            ),
        ]
    phases = run.data.get("phases", {})
    if phases:
        out += [
            Heading("Phases", 3),
            Table(["phase", "seconds"], [[k, f"{v:.1f}"] for k, v in phases.items()]),
        ]
    out += check_blocks(run, out_dir)
    out += _throughput_blocks(run, out_dir)
    for index, png in enumerate(run.memory_pngs):
        copy = out_dir / f"{run.name}-memory-{index}-{png.name}"  # beside report.md, so its links travel
        copy.write_bytes(png.read_bytes())
        out += [Heading("Memory", 3)] if index == 0 else []
        out.append(Image(copy, f"memory: {png.relative_to(run.path)}"))
    return out


def _throughput_blocks(run: RunView, out_dir: Path) -> list:
    if not run.throughput:
        return [Heading("Throughput", 3), Text("no throughput measured in this run")]
    lines = store.table_lines(run.throughput)
    headers = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    out: list = [Heading("Throughput", 3), Table(headers, rows)]
    problems = [v["message"] for entry in run.throughput["workloads"].values() for v in entry["violations"]]
    notes = [
        f"{lv['workload']} c={lv['concurrency']}: {lv['note']}"
        for entry in run.throughput["workloads"].values()
        for lv in entry["levels"]
        if lv.get("note")
    ]
    out += [Text("threshold failures:\n" + "\n".join(problems))] if problems else []
    out += [Text("level notes:\n" + "\n".join(notes))] if notes else []
    chart = charts.percentile_chart(run, out_dir / f"{run.name}-percentiles.png")
    if chart:
        out.append(Image(chart, "TTFT and ITL percentiles per workload and concurrency"))
    if run.deltas:
        lines = baselines.delta_lines(run.deltas)
        out += [
            Heading(f"Deltas vs baseline {run.baseline_file.name}", 3),
            Table(
                [c.strip() for c in lines[0].strip("|").split("|")],
                [[c.strip().strip("*") for c in line.strip("|").split("|")] for line in lines[2:]],
            ),
        ]
    return out


def to_html(items: list) -> str:
    body = []
    for item in items:
        if isinstance(item, Heading):
            body.append(f"<h{item.level}>{html.escape(item.text)}</h{item.level}>")
        elif isinstance(item, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in item.headers)
            rows = "".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in item.rows)
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
        elif isinstance(item, Image):
            data = base64.b64encode(item.path.read_bytes()).decode()
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(item.caption)}">'
                f'<figcaption class="caption">{html.escape(item.caption)}</figcaption></figure>'
            )
        elif item.text:
            body.append(
                f"<pre>{html.escape(item.text)}</pre>"
                if "\n" in item.text
                else f"<p>{html.escape(item.text)}</p>"
            )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>servegate report</title>"
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )


def _html_cell(value: str) -> str:
    css = value.lower() if value.lower() in VERDICT_WORDS else ""
    css = css.replace(" ", "-").replace("/", "\\/")
    return f"<td class='{css}'>{html.escape(value)}</td>" if css else f"<td>{html.escape(value)}</td>"


def to_markdown(items: list, out_dir: Path) -> str:
    lines: list[str] = []
    for item in items:
        if isinstance(item, Heading):
            lines += ["#" * item.level + " " + item.text, ""]
        elif isinstance(item, Table):
            lines += ["| " + " | ".join(item.headers) + " |", "|" + "---|" * len(item.headers)]
            lines += [
                "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in row) + " |"
                for row in item.rows
            ] + [""]
        elif isinstance(item, Image):
            lines += [f"![{item.caption}]({_relative(item.path, out_dir)})", ""]
        elif item.text:
            lines += (["```", item.text, "```"] if "\n" in item.text else [item.text]) + [""]
    return "\n".join(lines)


def _relative(path: Path, out_dir: Path) -> str:
    try:
        return str(path.resolve().relative_to(out_dir.resolve()))
    except ValueError:
        return str(path.resolve())
