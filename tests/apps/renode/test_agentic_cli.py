"""``arbor renode generate --model``: the agentic workflow from the command line (a scripted
model in place of the configured client), its files and report, and bad input exiting 2 with
one line and no traceback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from _agentic import APPROVE, PLAN, fenced, skeleton, with_behaviour
from typer.testing import CliRunner

from arbor.cli.main import app
from arbor.core.config import Settings
from arbor.llm import setup
from arbor.llm.client import LLMClient
from arbor.testing.models import ScriptedModel, Step

runner = CliRunner()


def _script(monkeypatch: pytest.MonkeyPatch, steps: list[Step]) -> ScriptedModel:
    model = ScriptedModel(list(steps))

    @asynccontextmanager
    async def scripted_client(settings: Settings) -> AsyncIterator[LLMClient]:
        cfg = Settings(llm={"cache": {"enabled": False}})
        async with LLMClient(cfg, models={"test:r": model}) as client:
            yield client

    monkeypatch.setattr(setup, "open_client", scripted_client)
    return model


@pytest.mark.usefixtures("mcs")
def test_generate_with_a_model_runs_the_agents(
    small_svd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = with_behaviour(skeleton(small_svd, "TIMER0"))
    model = _script(monkeypatch, [PLAN, fenced("class Broken {"), fenced(good), APPROVE])
    out = tmp_path / "out"
    args = [
        "renode",
        "generate",
        "--svd",
        str(small_svd),
        "-p",
        "TIMER0",
        "--model",
        "test:r",
        "--out",
        str(out),
        "--max-iterations",
        "3",
    ]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "iteration 0: accepted" in result.output
    assert "iteration 1: rejected (syntax errors" in result.output
    assert "iteration 2: accepted" in result.output
    assert "coder asked test:r" in result.output
    assert (out / "TIMER0.cs").read_text() == good.strip() + "\n"
    report = json.loads((out / "TIMER0.json").read_text())
    assert [a["accepted"] for a in report["iterations"]] == [True, False, True]
    assert report["accepted_iterations"] == [2] and report["final"]["accuracy"]["score"] == 1.0
    assert (out / "TIMER0.repl").is_file() and (out / "TIMER0.robot").is_file()
    model.assert_consumed()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--request", ""], "empty description"),
        ([], "empty description"),
        (["--request", "UART3 of a chip"], "no known device named"),
        (["--request", "rp2040 the frobnicator"], "no peripheral of rp2040 named"),
        (["--svd", "missing.svd", "-p", "X"], "SVD file not found"),
    ],
)
def test_bad_agentic_input_exits_2_with_one_line(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model = _script(monkeypatch, [])
    monkeypatch.setattr("arbor.apps.renode.compile.find_mcs", lambda: "/usr/bin/mcs")
    cmd = ["renode", "generate", "--model", "test:r", "--out", str(tmp_path), *args]
    result = runner.invoke(app, cmd, env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    assert not model.calls


def test_request_without_a_model_exits_2() -> None:
    result = runner.invoke(app, ["renode", "generate", "--request", "USART1 of STM32F103xx"])
    assert result.exit_code == 2
    assert "need --model" in result.output
