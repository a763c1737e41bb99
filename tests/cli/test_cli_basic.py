from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from arbor.cli.main import app

runner = CliRunner()


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("doctor", "chat", "mock-upstream", "bench"):
        assert command in result.output


def test_doctor_ok_on_defaults() -> None:
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["default_model"] == "local:smollm2"


def test_doctor_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBOR_OPENAI_API_KEY", "sk-doctor-secret-123")
    monkeypatch.setenv("ARBOR_ADMIN_KEY", "admin-secret-456")
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0
    assert "sk-doctor-secret-123" not in result.output
    assert "admin-secret-456" not in result.output


def test_doctor_names_bad_variable_in_a_real_process() -> None:
    env = {**os.environ, "ARBOR_LOG_LEVEL": "loud"}
    proc = subprocess.run(
        [sys.executable, "-m", "arbor.cli", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "ARBOR_LOG_LEVEL" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_cli_fail_modes_match_the_server() -> None:
    from arbor.cli import mock
    from arbor.testing import mock_upstream

    assert mock.FAIL_MODES == mock_upstream.FAIL_MODES
