"""arbor.runtime.sandbox.junit: pytest's JUnit XML parsed into typed results, and pytest run
inside the sandbox on a workspace (passing, failing and hanging projects)."""

from __future__ import annotations

from pathlib import Path

import pytest

from arbor.runtime.sandbox import (
    Sandbox,
    SandboxConfig,
    SandboxError,
    SandboxLimits,
    Workspace,
    parse_junit,
    run_pytest,
)

pytestmark = pytest.mark.xdist_group("sandbox")

XML = b"""<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="4" time="0.1">
<testcase classname="tests.test_calc" name="test_ok" time="0.001"/>
<testcase classname="tests.test_calc" name="test_bad" time="0.002">
  <failure message="assert 3 == 4">def test_bad(): assert add(1, 2) == 4</failure></testcase>
<testcase classname="tests.test_calc" name="test_skip" time="0">
  <skipped type="pytest.skip" message="not today">skip</skipped></testcase>
<testcase classname="tests.test_calc" name="test_err" time="bad">
  <error message="fixture broke">trace</error></testcase>
</testsuite></testsuites>"""


def test_parse_junit_reads_every_outcome() -> None:
    report = parse_junit(XML)
    outcomes = [(c.name, c.outcome) for c in report.cases]
    assert outcomes == [
        ("test_ok", "passed"),
        ("test_bad", "failed"),
        ("test_skip", "skipped"),
        ("test_err", "error"),
    ]
    assert (report.passed, report.failed, report.count("skipped")) == (1, 2, 1)
    assert report.cases[1].message.startswith("assert 3 == 4\ndef test_bad")
    assert report.cases[3].seconds == 0.0
    assert not report.ok


@pytest.mark.parametrize(
    ("xml", "reason"),
    [
        (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><testsuites>&a;</testsuites>', "DTD"),
        (b"<testsuites><testsuite>", "not well-formed"),
        (b"<html/>", "not <testsuite"),
        (b"<testsuites>" + b" " * (9 * 1024 * 1024) + b"</testsuites>", "the limit is"),
    ],
)
def test_parse_junit_refuses_bad_reports(xml: bytes, reason: str) -> None:
    with pytest.raises(SandboxError, match=reason):
        parse_junit(xml)


def project(tmp_path: Path, test_body: str) -> Workspace:
    ws = Workspace.create(tmp_path, "run")
    ws.write("calc.py", "def add(a, b):\n    return a + b\n")
    ws.write("tests/test_calc.py", "from calc import add\n\n" + test_body)
    return ws


def box(wall_seconds: float = 60) -> Sandbox:
    return Sandbox(SandboxConfig(limits=SandboxLimits(cpu_seconds=30, wall_seconds=wall_seconds)))


@pytest.mark.usefixtures("isolation")
async def test_run_pytest_in_the_sandbox(tmp_path: Path) -> None:
    ws = project(
        tmp_path,
        "def test_ok():\n    assert add(1, 2) == 3\n\ndef test_bad():\n    assert add(1, 2) == 4\n",
    )
    report = await run_pytest(box(), ws.root)
    assert report.problem is None
    assert [(c.name, c.outcome) for c in report.cases] == [
        ("test_ok", "passed"),
        ("test_bad", "failed"),
    ]
    assert "assert 3 == 4" in report.cases[1].message
    assert report.run is not None and report.run.isolated and report.run.exit_code == 1
    assert not report.ok
    assert ws.files() == ["calc.py", "tests/test_calc.py"]  # the report file was removed

    ws.write(
        "tests/test_calc.py", "from calc import add\n\ndef test_ok():\n    assert add(2, 2) == 4\n"
    )
    fixed = await run_pytest(box(), ws.root)
    assert fixed.ok and fixed.passed == 1


@pytest.mark.usefixtures("isolation")
async def test_named_plugins_load_without_autoloading(tmp_path: Path) -> None:
    ws = project(
        tmp_path,
        "import pytest\n\n@pytest.mark.asyncio\nasync def test_async():\n"
        "    assert add(1, 1) == 2\n",
    )
    report = await run_pytest(box(), ws.root, plugins=["pytest_asyncio.plugin"])
    assert report.ok and report.passed == 1, report
    without = await run_pytest(box(), ws.root)
    assert not without.ok  # an async test without its plugin is not counted as passing


@pytest.mark.usefixtures("isolation")
async def test_a_hanging_test_run_is_reported_not_awaited(tmp_path: Path) -> None:
    ws = project(tmp_path, "import time\n\ndef test_hangs():\n    time.sleep(600)\n")
    report = await run_pytest(box(wall_seconds=3), ws.root)
    assert report.problem == "pytest wrote no JUnit report (killed by the wall_time limit)"
    assert report.run is not None and report.run.killed_by == "wall_time"
    assert not report.ok and report.cases == ()
