"""`servegate report RUN... [--out DIR] [--baseline FILE] [--png]`: HTML + markdown report of runs."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

from servegate.errors import ServegateError
from servegate.report.model import load_run
from servegate.report.render import blocks, to_html, to_markdown
from servegate.results.run import DEFAULT_RESULTS

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="HTML and markdown report of one or several runs")
    report.add_argument("runs", nargs="*", type=Path, help="run folders (default: the newest under results/)")
    report.add_argument("--out", type=Path, help="output folder (default: <first run>/report)")
    report.add_argument("--baseline", type=Path, help="baseline for the deltas (default: the recipe's own)")
    report.add_argument("--png", action="store_true", help="also render report.png with headless chromium")
    report.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    runs = args.runs or [newest_run(DEFAULT_RESULTS)]
    written = write_report(runs, args.out, args.baseline, png=args.png)
    for path in written:
        print(f"wrote {path}")
    return 0


def write_report(
    runs: list[Path], out: Path | None = None, baseline: Path | None = None, png: bool = False
) -> list[Path]:
    views = [load_run(run, baseline) for run in runs]
    out = Path(out or Path(runs[0]) / "report")
    out.mkdir(parents=True, exist_ok=True)
    items = blocks(views, out)
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(to_html(items), encoding="utf-8")
    md_path.write_text(to_markdown(items, out), encoding="utf-8")
    written = [html_path, md_path]
    if png:
        written.append(screenshot(html_path, out / "report.png"))
    return written


def newest_run(root: Path) -> Path:
    runs = sorted(p for p in Path(root).glob("*/run.json"))
    if not runs:
        raise ServegateError(
            f"no run folders under {root}\n  fix: name the run folders, or run the suite first"
        )
    return runs[-1].parent


def screenshot(html_path: Path, png_path: Path, height: int = 4000) -> Path:
    """Render the HTML with a headless chromium (apt-get install -y chromium)."""
    browser = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if browser is None:
        raise ServegateError("no chromium found for --png\n  fix: apt-get install -y chromium, or drop --png")
    argv = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size=1280,{height}",
        f"--screenshot={png_path}",
        html_path.resolve().as_uri(),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or not png_path.is_file():
        raise ServegateError(f"chromium could not render {html_path}: {result.stderr.strip()[-400:]}")
    return png_path
