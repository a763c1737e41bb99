"""``arbor doctor`` on the shared backends: in-process by default, Redis named with its
password masked, pinged, and exit 1 when it does not answer."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from arbor.cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


def test_doctor_says_backends_are_in_process_without_redis() -> None:
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "shared backends: in-process" in result.output


def test_an_unreachable_redis_exits_1_with_the_password_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ARBOR_REDIS_URL", "redis://arbor:hunter2-secret@127.0.0.1:1/0")
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1, result.output
    assert "hunter2-secret" not in result.output
    assert "redis://arbor:***@127.0.0.1:1/0 does not answer" in result.output
    assert "ConnectionError" in result.output


def test_a_url_that_is_not_redis_exits_2_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBOR_REDIS_URL", "http://127.0.0.1:6379")
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 2
    assert "ARBOR_REDIS_URL is not a Redis URL" in result.output and "redis://" in result.output


@pytest.mark.redis
def test_a_reachable_redis_is_reported(
    monkeypatch: pytest.MonkeyPatch, redis_server_url: str
) -> None:
    monkeypatch.setenv("ARBOR_REDIS_URL", redis_server_url)
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "shared backends: Redis at" in result.output
    assert "answers." in result.output
