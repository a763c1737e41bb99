"""``arbor team`` on the embedded SmolLM2-135M (CPU) with one iteration and short replies. A
model this small rarely writes a project whose tests pass; what must hold is that the run
ends cleanly with an honest report (iterations, test results or why there are none, tokens)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arbor.cli.main import app


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.timeout(900)  # ~2 min alone on 2 cores; a loaded CI machine took over 5
@pytest.mark.usefixtures("isolation")
def test_smollm2_team_run_ends_with_an_honest_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ARBOR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ARBOR_LLM__CACHE__ENABLED", "false")
    args = ["team", "A function add(a, b) that returns a + b.", "--model", "local:smollm2"]
    started = time.perf_counter()
    result = CliRunner().invoke(app, [*args, "--max-iterations", "1", "--max-tokens", "192"])
    elapsed = time.perf_counter() - started
    text = result.output
    print(f"smollm2 team: {elapsed:.0f}s, exit {result.exit_code}\n{text}")
    # 0 if the tiny model's project passes its tests, 1 if not: never a crash or a usage error
    assert result.exit_code in (0, 1), text
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "iterations: 1" in text
    verdict = "tests pass" if result.exit_code == 0 else "tests do not pass"
    assert f"result: {verdict}" in text
    tokens = re.search(r"tokens: (\d+) in, (\d+) out", text)
    assert tokens and int(tokens[1]) > 0 and int(tokens[2]) > 0
    # the iteration's row says what happened: a pass/fail count, or why there was nothing to run
    assert re.search(r"│ 1\s+│ \d+\s+│ \d+\s+│ \S", text), text
    assert f"workspace: {tmp_path / 'home' / 'workspaces'}" in text
