"""The opt-in exception explainer: a traceback and the source around each of its frames go to
the model; its explanation and suggested fix are printed. Nothing is changed: no file is
written and no module is regenerated."""

from __future__ import annotations

import linecache
import sys
import traceback
from typing import TextIO

from arbor.apps.autogen.runtime import AutogenRuntime
from arbor.core.errors import ArborError
from arbor.llm.types import ChatRequest, Message

__all__ = ["exception_prompt", "explain_exception"]

_FRAMES = 4
_AROUND = 8

SYSTEM = """You explain Python exceptions to the developer who hit them.
Say in a few sentences what went wrong and why, then give a suggested fix as a short code
change. Do not claim to have changed anything."""


def exception_prompt(exc: BaseException, description: str) -> list[Message]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    sources = []
    for frame in traceback.extract_tb(exc.__traceback__)[-_FRAMES:]:
        if not frame.lineno:
            continue
        lines = linecache.getlines(frame.filename)
        if not lines:
            continue
        lo = max(1, frame.lineno - _AROUND)
        hi = min(len(lines), frame.lineno + _AROUND)
        body = "".join(
            f"{'>' if n == frame.lineno else ' '}{n:>5}: {lines[n - 1]}" for n in range(lo, hi + 1)
        )
        sources.append(f"{frame.filename} ({frame.name}):\n{body}")
    text = f"Library description: {description}\n\nTraceback:\n{tb}"
    if sources:
        text += "\nThe source around each frame:\n\n" + "\n".join(sources)
    return [Message.system(SYSTEM), Message.user(text)]


async def _ask(runtime: AutogenRuntime, messages: list[Message]) -> str:
    generator = await runtime.generator()
    request = ChatRequest(
        model=generator.model,
        messages=messages,
        max_tokens=runtime.config.max_tokens,
        temperature=0.2,
        cache=False,
    )
    reply = await generator.client.complete(request)
    return reply.text.strip()


def explain_exception(
    runtime: AutogenRuntime, exc: BaseException, *, file: TextIO | None = None
) -> str:
    """Print (to stderr by default) and return the model's explanation of ``exc``."""
    out = file or sys.stderr
    try:
        text = runtime.run(_ask(runtime, exception_prompt(exc, runtime.config.description)))
    except ArborError as err:
        text = f"(no explanation: the model call failed: {err})"
    print(f"\n--- arbor.autogen explains {type(exc).__name__} ---\n{text}\n", file=out)
    return text
