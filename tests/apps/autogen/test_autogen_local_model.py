"""``arbor.autogen`` end to end on the embedded SmolLM2-135M (CPU): init with
``local:smollm2`` and import a simple function. A model this small often writes code that
fails validation; what must hold is that the import ends cleanly within bounded time, either
with a function that passed validation or with an :class:`AutogenImportError` naming the
reason, and that the module's token usage is recorded (in the usage records the store keeps,
attributed to ``autogen:textutil``, and in the cache entry when it succeeded)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from _autogen_helpers import run_script

import arbor.autogen
from arbor.apps.autogen import AutogenImportError
from arbor.core.config import Settings
from arbor.store import Database, UsageRepository
from arbor.store.usage import UsageSummaryRow

CALLER = """
from arbor.autogen.textutil import reverse_words

def shout_backwards(text: str) -> str:
    return reverse_words(text).upper()
"""


async def _usage_by_agent() -> dict[str | None, UsageSummaryRow]:
    db = Database.from_settings(Settings())
    try:
        return {row.group: row for row in await UsageRepository(db).summary("agent")}
    finally:
        await db.dispose()


@pytest.mark.model
def test_smollm2_writes_the_function_or_fails_with_a_clear_reason(tmp_path: Path) -> None:
    arbor.autogen.init(
        "Small text utilities for command-line tools",
        model="local:smollm2",
        retries=1,
        max_tokens=160,
        context_tokens=200,
    )
    started = time.monotonic()
    outcome: AutogenImportError | None = None
    try:
        out = run_script(tmp_path, "app.py", CALLER)
    except AutogenImportError as exc:
        outcome = exc
    elapsed = time.monotonic() - started
    print(f"smollm2 autogen: {elapsed:.1f}s, {'refused: ' + str(outcome) if outcome else 'ok'}")
    assert elapsed < 120, f"took {elapsed:.0f}s"

    if outcome is None:
        module = sys.modules["arbor.autogen.textutil"]
        assert callable(out["reverse_words"]) and module.reverse_words is out["reverse_words"]
        entry = module.__autogen_entry__
        assert entry.model == "local:smollm2" and "reverse_words" in entry.names
        assert 1 <= entry.usage.calls <= 2
        assert entry.usage.input_tokens > 0 and entry.usage.output_tokens > 0
        assert Path(module.__file__ or "").read_text("utf-8") == entry.code
    else:
        message = str(outcome)
        assert outcome.module == "textutil" and outcome.names == ["reverse_words"]
        assert outcome.reason and outcome.reason in message
        assert message.startswith(
            "arbor.autogen could not generate module 'textutil' defining reverse_words"
        )
        assert "arbor.autogen.textutil" not in sys.modules

    arbor.autogen.reset()  # closes the client: its usage records are flushed to the store
    rows = asyncio.run(_usage_by_agent())
    mine = rows.get("autogen:textutil")
    assert mine is not None, rows
    assert 1 <= mine.requests <= 2  # one per attempt (retries=1)
    assert mine.input_tokens > 0 and mine.output_tokens > 0
