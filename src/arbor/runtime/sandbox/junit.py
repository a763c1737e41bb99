"""Test results from pytest's JUnit XML, not from scraping its console output.

:func:`run_pytest` runs pytest inside the sandbox with ``--junitxml`` pointing at a
randomly named file in the workspace, reads it back (size-capped) and removes it.
:func:`parse_junit` refuses DTDs and entities: the XML was written by untrusted code.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from arbor.runtime.sandbox.errors import SandboxError
from arbor.runtime.sandbox.result import SandboxResult
from arbor.runtime.sandbox.sandbox import Sandbox

__all__ = ["Outcome", "TestCaseResult", "TestReport", "parse_junit", "run_pytest"]

Outcome = Literal["error", "failed", "passed", "skipped"]
MAX_XML_BYTES = 8 * 1024 * 1024
MAX_MESSAGE_CHARS = 4000


class TestCaseResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    __test__ = False  # not a pytest test class

    classname: str
    name: str
    outcome: Outcome
    seconds: float
    #: The failure/error/skip message and detail, trimmed.
    message: str = ""


class TestReport(BaseModel):
    model_config = ConfigDict(frozen=True)
    __test__ = False

    cases: tuple[TestCaseResult, ...] = ()
    #: Why there are no results (pytest did not write a report), else ``None``.
    problem: str | None = None
    #: The sandboxed pytest run, when the report came from :func:`run_pytest`.
    run: SandboxResult | None = None

    def count(self, outcome: Outcome) -> int:
        return sum(1 for c in self.cases if c.outcome == outcome)

    @property
    def passed(self) -> int:
        return self.count("passed")

    @property
    def failed(self) -> int:
        return self.count("failed") + self.count("error")

    @property
    def ok(self) -> bool:
        """Tests ran, none failed or errored, and pytest itself exited cleanly."""
        run_ok = self.run is None or self.run.ok
        return self.problem is None and bool(self.cases) and self.failed == 0 and run_ok


def _case(element: ET.Element) -> TestCaseResult:
    outcome: Outcome = "passed"
    message = ""
    for tag in ("failure", "error", "skipped"):
        child = element.find(tag)
        if child is not None:
            outcome = "failed" if tag == "failure" else tag  # type: ignore[assignment]
            detail = "\n".join(p for p in (child.get("message", ""), child.text or "") if p)
            message = detail[:MAX_MESSAGE_CHARS]
            break
    try:
        seconds = float(element.get("time", "0") or 0)
    except ValueError:
        seconds = 0.0
    return TestCaseResult(
        classname=element.get("classname", ""),
        name=element.get("name", ""),
        outcome=outcome,
        seconds=seconds,
        message=message,
    )


def parse_junit(xml: bytes) -> TestReport:
    """The test cases of a JUnit XML document (pytest's xunit1 or xunit2 flavour)."""
    if len(xml) > MAX_XML_BYTES:
        raise SandboxError(f"JUnit report is {len(xml)} bytes; the limit is {MAX_XML_BYTES}")
    if b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
        raise SandboxError("JUnit report refused: it declares a DTD or entities")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise SandboxError(f"JUnit report is not well-formed XML: {exc}") from exc
    if root.tag not in ("testsuites", "testsuite"):
        raise SandboxError(f"JUnit report has root <{root.tag[:40]}>, not <testsuite(s)>")
    return TestReport(cases=tuple(_case(e) for e in root.iter("testcase")))


def _take_report(path: Path) -> bytes | None:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_XML_BYTES + 1)
    except FileNotFoundError:
        return None
    finally:
        path.unlink(missing_ok=True)
    return data


async def run_pytest(
    sandbox: Sandbox,
    workspace: Path | str,
    args: Sequence[str] = (),
    *,
    python: str = sys.executable,
    plugins: Sequence[str] = (),
    autoload_plugins: bool = False,
) -> TestReport:
    """Run pytest on the workspace inside ``sandbox`` and parse its JUnit report.

    Plugin autoloading is off by default: the interpreter's installed plugins belong to
    the host, not the generated project, and loading them all can take seconds per run.
    Name the ones the project needs in ``plugins`` (``-p`` names, e.g. ``pytest_asyncio``).
    """
    name = f".arbor-junit-{secrets.token_hex(8)}.xml"
    argv = [
        python,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={name}",
        "-o",
        "junit_family=xunit2",
    ]
    for plugin in plugins:
        argv += ["-p", plugin]
    env = {} if autoload_plugins else {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    run = await sandbox.run([*argv, *args], workspace, env=env)
    data = await asyncio.to_thread(_take_report, Path(workspace) / name)
    if data is None:
        reason = (
            f"killed by the {run.killed_by} limit" if run.killed_by else (f"exited {run.exit_code}")
        )
        return TestReport(problem=f"pytest wrote no JUnit report ({reason})", run=run)
    try:
        report = parse_junit(data)
    except SandboxError as exc:
        return TestReport(problem=str(exc), run=run)
    return report.model_copy(update={"run": run})
