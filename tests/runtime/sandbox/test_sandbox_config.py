"""arbor.runtime.sandbox.config: the isolation policy fails closed, limits are validated.
These run without root: they simulate a machine where isolation is unavailable."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from arbor.runtime.sandbox import Sandbox, SandboxConfig, SandboxLimits, SandboxUnavailableError

PY = sys.executable


async def test_fails_closed_without_isolation_unless_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SandboxUnavailableError, match=r"refusing to run unisolated: .*root"):
        await Sandbox().run([PY, "-c", "print('ran')"], tmp_path)
    assert not (tmp_path / "ran").exists()
    allowed = Sandbox(SandboxConfig(allow_unisolated=True, limits=SandboxLimits(cpu_seconds=2)))
    result = await allowed.run([PY, "-c", "open('ran', 'w'); print('ran')"], tmp_path)
    assert (result.stdout, result.isolated, result.uid) == ("ran\n", False, None)
    loop = await allowed.run([PY, "-c", "while True: pass"], tmp_path)
    assert loop.killed_by == "cpu"  # the rlimits and watchdog still apply


def test_bad_configuration_names_the_field() -> None:
    with pytest.raises(ValidationError, match="cpu_seconds"):
        SandboxLimits(cpu_seconds=0)
    with pytest.raises(ValidationError, match="not an absolute path"):
        SandboxConfig(hide=("home",))
    with pytest.raises(ValidationError, match="uid"):
        SandboxConfig(uid=0)  # the run never keeps root
