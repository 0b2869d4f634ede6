"""The gate's junit: one test case per Check (classname gate.<step>, name its target), via results/junit.py."""

from __future__ import annotations

from servegate.gate.model import Check
from servegate.results.junit import Case
from servegate.results.junit import junit_xml as write_suite


def junit_xml(checks: list[Check], image: str) -> str:
    cases = [Case(f"gate.{c.step.replace(' ', '_')}", c.target, c.outcome, c.seconds, c.message, c.detail)
             for c in checks]
    return write_suite(f"servegate.gate.image_bump[{image}]", cases)
