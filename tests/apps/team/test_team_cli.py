"""``arbor team`` in process with a FunctionModel per role: exit 0 and the report; a failing
project exits 1 with an honest report; ``arbor runs workspace`` zips the workspace; bad
usage exits 2."""

from __future__ import annotations

import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from _team_replies import BAD, code, good_team, team
from typer.testing import CliRunner

from arbor.cli import team as team_cli
from arbor.cli.main import app
from arbor.core.config import Settings
from arbor.llm.client import LLMClient
from arbor.testing import FunctionModel


def _serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, replies: dict[str, list[str]]) -> None:
    fn, _ = team(replies)
    monkeypatch.setenv("ARBOR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ARBOR_DEFAULT_MODEL", "test:team")

    @asynccontextmanager
    async def client(settings: Settings) -> AsyncIterator[LLMClient]:
        c = LLMClient(
            settings.model_copy(
                update={
                    "llm": settings.llm.model_copy(
                        update={"cache": settings.llm.cache.model_copy(update={"enabled": False})}
                    )
                }
            ),
            models={"test:team": FunctionModel(fn)},
        )
        try:
            yield c
        finally:
            await c.aclose()

    monkeypatch.setattr(team_cli, "open_team_client", client)


@pytest.mark.usefixtures("isolation")
def test_arbor_team_exits_0_and_prints_the_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _serve(monkeypatch, tmp_path, good_team())
    out = tmp_path / "project"
    result = CliRunner().invoke(
        app, ["team", "A calculator.", "--out", str(out), "--max-iterations", "2"]
    )
    assert result.exit_code == 0, result.output
    text = result.output
    assert "tests, iteration 1: 1 passed, 0 failed" in text
    assert "iterations: 1" in text and "tokens:" in text and "tests pass" in text
    assert text.strip().splitlines()[-1] == f"workspace: {out.resolve()}"
    assert (out / "src/calc/__init__.py").is_file() and (out / "README.md").is_file()

    run_id = text.splitlines()[0].split()[1].rstrip(":")
    target = tmp_path / "ws.zip"
    zipped = CliRunner().invoke(app, ["runs", "workspace", run_id, "--out", str(target)])
    assert zipped.exit_code == 0, zipped.output
    with zipfile.ZipFile(target) as archive:
        assert "src/calc/__init__.py" in archive.namelist()


@pytest.mark.usefixtures("isolation")
def test_arbor_team_exits_1_when_the_tests_still_fail(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _serve(monkeypatch, tmp_path, good_team(developer=[code(BAD)]))
    result = CliRunner().invoke(app, ["team", "A calculator.", "--max-iterations", "1"])
    assert result.exit_code == 1, result.output
    assert "tests do not pass" in result.output and "iterations: 1" in result.output
    assert "workspace: " + str(tmp_path / "home" / "workspaces") in result.output


def test_bad_usage_exits_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ARBOR_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    assert runner.invoke(app, ["team", "  "]).exit_code == 2
    assert runner.invoke(app, ["team", "x", "--max-iterations", "0"]).exit_code == 2
    assert runner.invoke(app, ["team", "x", "--max-tokens", "5"]).exit_code == 2
    (tmp_path / "file").write_text("x")
    bad_out = runner.invoke(app, ["team", "x", "--out", str(tmp_path / "file")])
    assert bad_out.exit_code == 2 and "not a directory" in bad_out.output
    unknown = runner.invoke(app, ["runs", "workspace", "run_nope", "--out", "x.zip"])
    assert unknown.exit_code == 2
