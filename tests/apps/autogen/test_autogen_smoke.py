"""``init(..., smoke=True)``: each new module is imported (and its argument-less functions
called) in the OS sandbox before the importing process executes it. A module that raises or
loops at import is refused there, the reason goes back to the model, and after the retries the
import fails with a clear ImportError; the caller's process never runs that code (a marker it
would write outside the sandbox never appears). Without OS isolation the smoke call fails
closed unless ``allow_unisolated``.

Like tests/runtime/sandbox these need root and Linux namespaces: they skip locally without them
and fail under ARBOR_REQUIRE_SERVICES=1."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from _autogen_helpers import TOKENS_V1, fenced, make_client, prompt_text, run_script

import arbor.autogen
from arbor.apps.autogen import AutogenImportError, generator, validate

CALLER = """
from arbor.autogen.tokens import generate_token

RESULT = "sess-" + generate_token(8)
"""


@pytest.fixture
def smoke_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str | None]]]:
    """Every smoke call the generator makes: the code and the verdict (None: passed)."""
    seen: list[tuple[str, str | None]] = []
    real = validate.smoke_call

    async def spy(module: str, code: str, names: list[str], **kw: bool) -> str | None:
        verdict = await real(module, code, names, **kw)
        seen.append((code, verdict))
        return verdict

    monkeypatch.setattr(generator, "smoke_call", spy)
    yield seen


def _raises_at_import(marker: Path) -> str:
    return (
        "try:\n"
        f"    open({str(marker)!r}, 'w').write('ran in the caller')\n"
        "except OSError:\n    pass\n"
        "raise RuntimeError('configuration missing at import')\n\n"
        "def generate_token(length: int = 16) -> str:\n    return 'x' * length\n"
    )


def _loops_at_import(marker: Path) -> str:
    return (
        "try:\n"
        f"    open({str(marker)!r}, 'w').write('ran in the caller')\n"
        "except OSError:\n    pass\n"
        "while True:\n    pass\n\n"
        "def generate_token(length: int = 16) -> str:\n    return 'x' * length\n"
    )


@pytest.mark.usefixtures("isolation")
def test_a_module_that_runs_fine_passes_the_smoke_call(
    tmp_path: Path, smoke_calls: list[tuple[str, str | None]]
) -> None:
    client, model = make_client(lambda req: fenced(TOKENS_V1))
    arbor.autogen.init("Cryptographic utility library", client=client, smoke=True)
    out = run_script(tmp_path, "app.py", CALLER)
    assert out["RESULT"].startswith("sess-") and len(model.calls) == 1
    assert smoke_calls == [(TOKENS_V1.strip() + "\n", None)]


@pytest.mark.usefixtures("isolation")
def test_a_module_raising_at_import_is_refused_in_the_sandbox_then_a_clear_import_error(
    tmp_path: Path, smoke_calls: list[tuple[str, str | None]]
) -> None:
    marker = tmp_path / "outside" / "marker"
    marker.parent.mkdir()
    client, model = make_client(lambda req: fenced(_raises_at_import(marker)))
    arbor.autogen.init("Cryptographic utility library", client=client, smoke=True, retries=2)
    with pytest.raises(ImportError) as err:
        run_script(tmp_path, "app.py", CALLER)
    assert isinstance(err.value, AutogenImportError)
    message = str(err.value)
    assert "'tokens'" in message and "after 3 attempt(s)" in message
    assert "importing or calling it in the sandbox failed" in message
    assert "RuntimeError: configuration missing at import" in message
    assert len(model.calls) == 3 and len(smoke_calls) == 3
    for later in model.calls[1:]:  # each retry carries the sandbox's error
        last = later.messages[-1].content or ""
        assert "That module was refused: importing or calling it in the sandbox failed" in last
        assert "configuration missing at import" in last
    assert not marker.exists()  # the caller's process never executed it
    assert "arbor.autogen.tokens" not in sys.modules


@pytest.mark.usefixtures("isolation")
def test_a_module_looping_at_import_is_stopped_and_the_error_retried(
    tmp_path: Path, smoke_calls: list[tuple[str, str | None]]
) -> None:
    marker = tmp_path / "outside" / "marker"
    marker.parent.mkdir()
    replies = iter([fenced(_loops_at_import(marker)), fenced(_raises_at_import(marker))])
    client, model = make_client(lambda req: next(replies))
    arbor.autogen.init("Cryptographic utility library", client=client, smoke=True, retries=1)
    started = time.monotonic()
    with pytest.raises(AutogenImportError) as err:
        run_script(tmp_path, "app.py", CALLER)
    elapsed = time.monotonic() - started
    # bounded by the smoke call's limits (10 CPU s, 20 s wall) however loaded the machine is
    assert elapsed < 20 + 10, f"took {elapsed:.1f}s"
    assert len(model.calls) == 2
    retry = prompt_text(model.calls[1])
    assert "That module was refused: the smoke call was stopped by the sandbox's cpu limit" in (
        retry
    )
    assert smoke_calls[0][1] == "the smoke call was stopped by the sandbox's cpu limit"
    assert "configuration missing at import" in str(err.value)
    assert not marker.exists()
    assert "arbor.autogen.tokens" not in sys.modules


def test_without_isolation_the_smoke_call_fails_closed_unless_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # isolation needs root: now missing
    client, model = make_client(lambda req: fenced(TOKENS_V1))
    arbor.autogen.init("Cryptographic utility library", client=client, smoke=True, retries=2)
    with pytest.raises(AutogenImportError) as err:
        run_script(tmp_path, "app.py", CALLER)
    message = str(err.value)
    assert "the smoke call cannot run: refusing to run unisolated" in message
    assert "allow_unisolated" in message
    assert len(model.calls) == 1  # no reply can fix a missing sandbox: no retries
    assert "arbor.autogen.tokens" not in sys.modules

    client2, model2 = make_client(lambda req: fenced(TOKENS_V1))
    arbor.autogen.init(
        "Cryptographic utility library", client=client2, smoke=True, allow_unisolated=True
    )
    with structlog.testing.capture_logs() as logs:
        out = run_script(tmp_path, "app.py", CALLER)
    assert out["RESULT"].startswith("sess-") and len(model2.calls) == 1
    assert any(e["event"] == "autogen.smoke_unisolated" for e in logs)  # and it says so
