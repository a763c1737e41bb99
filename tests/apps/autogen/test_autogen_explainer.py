"""The opt-in exception explainer: the traceback and the source around its frames go to the
model, the explanation with a suggested fix is printed, and nothing changes — the generated
module's files, the cache entries and the user's source are byte-identical afterwards, and the
loaded module is the same object. ``reset()`` puts ``sys.excepthook`` back."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import pytest
from _autogen_helpers import fenced, make_client, prompt_text, run_script

import arbor.autogen
from arbor.apps.autogen import cache_root
from arbor.apps.autogen.explain import SYSTEM as EXPLAIN_SYSTEM
from arbor.core.config import Settings
from arbor.llm.types import ChatRequest

MATHX = '''
def ratio(a: float, b: float) -> float:
    """a divided by b."""
    return a / b
'''

CALLER = """
from arbor.autogen.mathx import ratio

def average_speed(distance: float, hours: float) -> float:
    return ratio(distance, hours)

def main() -> float:
    return average_speed(120.0, 0)
"""

#: The model's "fix" holds a whole module: the explainer must print it, never apply it.
EXPLANATION = (
    "ratio() divides by b, and average_speed passes hours=0, so a / b raises "
    "ZeroDivisionError.\nSuggested fix:\n```python\n"
    "def ratio(a: float, b: float) -> float:\n"
    "    if b == 0:\n        raise ValueError('b must not be zero')\n    return a / b\n```"
)


def _reply(req: ChatRequest) -> str:
    if req.messages[0].content == EXPLAIN_SYSTEM:
        return EXPLANATION
    return fenced(MATHX)


def _snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots``, by path."""
    return {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest()
        for root in roots
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _fail(tmp_path: Path) -> tuple[BaseException, dict[str, Any]]:
    out = run_script(tmp_path, "app.py", CALLER)
    with pytest.raises(ZeroDivisionError) as err:
        out["main"]()
    return err.value, out


def _state(tmp_path: Path, session: Any) -> tuple[dict[str, str], list[dict[str, object]], Any]:
    files = _snapshot(tmp_path, cache_root(Settings()))
    cache = session.runtime._generator.cache
    entries = [e.model_dump() for e in cache.memory.values()]
    return files, entries, sys.modules["arbor.autogen.mathx"]


def _check_prompt(request: ChatRequest) -> None:
    assert request.messages[0].content == EXPLAIN_SYSTEM
    text = prompt_text(request)
    assert "Library description: Unit conversion helpers" in text
    assert "Traceback (most recent call last):" in text
    assert "ZeroDivisionError: float division by zero" in text
    # the relevant source: the user's frames and the generated module's, the line marked
    assert "app.py (average_speed):" in text and "app.py (main):" in text
    assert "return ratio(distance, hours)" in text
    assert "mathx" in text and "(ratio):" in text
    marked = [line for line in text.splitlines() if line.startswith(">")]
    assert any("return a / b" in line for line in marked)
    assert any("return ratio(distance, hours)" in line for line in marked)
    assert request.cache is False


def test_explain_sends_traceback_and_source_prints_a_fix_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client, model = make_client(_reply)
    session = arbor.autogen.init("Unit conversion helpers", client=client)
    exc, out = _fail(tmp_path)
    assert len(model.calls) == 1
    files, entries, module = _state(tmp_path, session)
    assert any(p.endswith(".py") and "/autogen/mathx/" in p for p in files)
    assert str(tmp_path / "app.py") in files
    capsys.readouterr()

    text = arbor.autogen.explain(exc)

    assert text == EXPLANATION.strip()
    printed = capsys.readouterr().err
    assert "arbor.autogen explains ZeroDivisionError" in printed
    assert "Suggested fix:" in printed and "raise ValueError('b must not be zero')" in printed
    assert len(model.calls) == 2
    _check_prompt(model.calls[1])
    # nothing changed: files (generated module, index, the user's source), cache, module
    assert _state(tmp_path, session) == (files, entries, module)
    assert module.ratio is out["ratio"]
    with pytest.raises(ZeroDivisionError):
        module.ratio(1, 0)  # still the generated code, not the suggested fix


def test_the_excepthook_explains_uncaught_exceptions_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = sys.excepthook
    client, model = make_client(_reply)
    session = arbor.autogen.init("Unit conversion helpers", client=client, explain_exceptions=True)
    assert sys.excepthook is not original
    exc, _ = _fail(tmp_path)
    files, entries, module = _state(tmp_path, session)
    capsys.readouterr()

    sys.excepthook(type(exc), exc, exc.__traceback__)  # what the interpreter does at exit

    err = capsys.readouterr().err
    assert "Traceback (most recent call last):" in err  # the usual report comes first
    assert err.index("ZeroDivisionError: float division by zero") < err.index(
        "arbor.autogen explains"
    )
    assert "Suggested fix:" in err
    assert len(model.calls) == 2
    _check_prompt(model.calls[1])
    assert _state(tmp_path, session) == (files, entries, module)

    # KeyboardInterrupt is reported as usual and not sent to the model
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as interrupt:
        sys.excepthook(KeyboardInterrupt, interrupt, interrupt.__traceback__)
    assert len(model.calls) == 2

    arbor.autogen.reset()
    assert sys.excepthook is original
    with pytest.raises(RuntimeError, match="init"):
        arbor.autogen.explain(exc)


def test_the_hook_is_installed_only_when_asked_and_replaced_by_a_new_init(
    tmp_path: Path,
) -> None:
    original = sys.excepthook
    client, _ = make_client(_reply)
    arbor.autogen.init("Unit conversion helpers", client=client)
    assert sys.excepthook is original
    first = arbor.autogen.init("Unit conversion helpers", client=client, explain_exceptions=True)
    assert sys.excepthook == first._hook
    second = arbor.autogen.init("Unit conversion helpers", client=client, explain_exceptions=True)
    assert sys.excepthook == second._hook  # not chained through the first session's hook
    assert second._previous_hook is original
    arbor.autogen.reset()
    assert sys.excepthook is original


def test_a_failing_explanation_is_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = {"n": 0}

    def reply(req: ChatRequest) -> str:
        calls["n"] += 1
        if req.messages[0].content == EXPLAIN_SYSTEM:
            raise RuntimeError("upstream exploded")
        return fenced(MATHX)

    client, _ = make_client(reply)
    arbor.autogen.init("Unit conversion helpers", client=client, explain_exceptions=True)
    exc, _ = _fail(tmp_path)
    capsys.readouterr()
    sys.excepthook(type(exc), exc, exc.__traceback__)
    err = capsys.readouterr().err
    assert "ZeroDivisionError: float division by zero" in err
    assert "could not explain it: RuntimeError: upstream exploded" in err
    assert calls["n"] == 2
