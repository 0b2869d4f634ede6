"""`servegate collect RESULTS --out DIR`: what a visit to a remote (lent, air-gapped) machine produced, as ONE
archive plus its summary beside it, so nothing is lost in transfer.

    DIR/<name>.tar.gz        every file that matters under RESULTS (logs, run.json, junit.xml, progress, md/txt/
                             csv/png/json), each under --max-file (the bulky raw request dumps stay behind)
    DIR/<name>-summary.md    per run: recipe, verdict, scenario outcomes, fidelity figures; the archive's sha256
    DIR/<name>-summary.json  the same, for a program
"""

from __future__ import annotations

import json
import tarfile
from datetime import datetime, timezone
from pathlib import Path

from servegate.errors import ServegateError
from servegate.runtimes.node_install import sha256_file

KEEP = ("*.log", "*.md", "*.txt", "*.csv", "*.png", "*.json", "*.xml", "*.jsonl")
MAX_FILE = 3 * 2**20


def wanted(results: Path, max_file: int) -> tuple[list[Path], list[str]]:
    """Files to pack (relative order kept), and what was left out and why."""
    keep, left = [], []
    for path in sorted(p for p in results.rglob("*") if p.is_file()):
        if not any(path.match(pattern) for pattern in KEEP):
            continue
        if path.stat().st_size > max_file:
            left.append(f"{path.relative_to(results)} ({path.stat().st_size} bytes > {max_file})")
        else:
            keep.append(path)
    return keep, left


def run_summary(run_json: Path) -> dict:
    try:
        data = json.loads(run_json.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return {"run": run_json.parent.name, "error": f"{run_json}: unreadable ({exc})"}
    recipe = data.get("recipe") or {}
    outcomes: dict[str, int] = {}
    for verdict in (data.get("scenarios") or {}).values():
        outcomes[verdict.get("outcome", "?")] = outcomes.get(verdict.get("outcome", "?"), 0) + 1
    failed = [f"{node}: {v.get('message', '')[:160]}" for node, v in (data.get("scenarios") or {}).items()
              if v.get("outcome") not in ("passed", "skipped")]
    return {"run": run_json.parent.name, "recipe": recipe.get("name"), "verdict": data.get("verdict"),
            "outcomes": outcomes, "failed": failed, "fidelity": data.get("fidelity")}


def collect(results: Path, out: Path, name: str | None = None, max_file: int = MAX_FILE) -> dict:
    if not results.is_dir():
        raise ServegateError(f"collect: {results} is not a folder of results")
    name = name or f"{results.name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    out.mkdir(parents=True, exist_ok=True)
    files, left = wanted(results, max_file)
    archive = out / f"{name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in files:
            tar.add(path, arcname=f"{name}/{path.relative_to(results)}")
    summary = {"archive": archive.name, "sha256": sha256_file(archive), "bytes": archive.stat().st_size,
               "files": len(files), "left_out": left,
               "runs": [run_summary(p) for p in sorted(results.rglob("run.json"))]}
    (out / f"{name}-summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / f"{name}-summary.md").write_text("\n".join(markdown(summary)) + "\n")
    return summary


def markdown(summary: dict) -> list[str]:
    lines = [f"# {summary['archive']}", "", f"{summary['files']} files, {summary['bytes']} bytes, sha256 "
             f"`{summary['sha256']}`", "", "| run | recipe | verdict | scenarios |", "| --- | --- | --- | --- |"]
    for run in summary["runs"]:
        counts = ", ".join(f"{k} {v}" for k, v in sorted((run.get("outcomes") or {}).items())) or "-"
        lines.append(f"| {run['run']} | {run.get('recipe') or '-'} | {run.get('verdict') or run.get('error')} | "
                     f"{counts} |")
    for run in summary["runs"]:
        lines += [f"- {run['run']}: {text}" for text in run.get("failed") or []]
        for level, figures in ((run.get("fidelity") or {}).get("concurrency") or {}).items():
            ttft = figures.get("ttft_ms_p50") or {}
            lines.append(f"- {run['run']} fidelity c={level}: TTFT p50 pooled {ttft.get('pooled_diff_pct')} %, "
                         f"paired {ttft.get('paired_diff_pct')} %")
    if summary["left_out"]:
        lines += ["", "Left out (too big):", *[f"- {item}" for item in summary["left_out"]]]
    return lines


def add_subparsers(subparsers) -> None:
    p = subparsers.add_parser("collect", help="pack a results folder into one archive plus a summary .md/.json",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, help="results folder (e.g. /tmp/sg-results)")
    p.add_argument("--out", type=Path, required=True, help="where the archive and summaries go")
    p.add_argument("--name", help="archive name (default: RESULTS name + UTC time)")
    p.add_argument("--max-file", type=int, default=MAX_FILE, help="leave out files above this many bytes")
    p.set_defaults(func=cmd_collect)


def cmd_collect(args) -> int:
    summary = collect(args.results, args.out, args.name, args.max_file)
    print(f"{args.out / summary['archive']}: {summary['files']} files, {summary['bytes']} bytes; "
          f"summary beside it ({len(summary['runs'])} runs, {len(summary['left_out'])} files left out)")
    return 0
