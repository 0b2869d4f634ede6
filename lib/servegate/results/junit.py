"""The one junit writer: a testsuite of cases, for the pytest scenarios' run folder and the image gate."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

FAILED, ERROR, SKIPPED = ("failed",), ("error",), ("skipped", "n/a")


@dataclass
class Case:
    classname: str
    name: str
    outcome: str  # passed | failed | error | skipped | n/a
    seconds: float = 0.0
    message: str = ""
    detail: str = ""  # failure text, or system-out of a passed case


def junit_xml(suite_name: str, cases: list[Case]) -> str:
    suite = ET.Element("testsuite", name=suite_name, tests=str(len(cases)),
                       failures=str(sum(c.outcome in FAILED for c in cases)),
                       errors=str(sum(c.outcome in ERROR for c in cases)),
                       skipped=str(sum(c.outcome in SKIPPED for c in cases)),
                       time=f"{sum(c.seconds for c in cases):.3f}")
    for c in cases:
        case = ET.SubElement(suite, "testcase", classname=c.classname, name=c.name, time=f"{c.seconds:.3f}")
        if c.outcome in FAILED + ERROR:
            tag = "failure" if c.outcome in FAILED else "error"
            ET.SubElement(case, tag, message=c.message).text = c.detail or c.message
        elif c.outcome in SKIPPED:
            ET.SubElement(case, "skipped", message=c.message)
        elif c.detail:
            ET.SubElement(case, "system-out").text = c.detail
    return ET.tostring(suite, encoding="unicode") + "\n"
