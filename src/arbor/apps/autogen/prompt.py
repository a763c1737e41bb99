"""The messages that ask a model for a module, and for a corrected one after a refusal."""

from __future__ import annotations

from arbor.apps.autogen.caller import CallerContext
from arbor.llm.types import Message

__all__ = ["build_messages", "retry_message"]

_MAX_CALLER_CHARS = 12_000

SYSTEM = """You write Python modules that are imported as they are generated.
Reply with the complete source of the module in one ```python fenced block and nothing else.
Rules:
- Define every requested name at the top level of the module, with type hints and a short
  docstring; keep every function and class the module already has.
- Use the standard library only unless the project context shows a dependency it uses.
- Never run programs, open network connections, load code dynamically or delete files
  (no subprocess, socket, ctypes, os.system, eval, exec): such code is refused.
- No code runs at import time besides definitions and constants."""


def build_messages(
    *,
    description: str,
    module: str,
    names: list[str],
    requested: list[str],
    existing: str | None,
    caller: CallerContext | None,
    codebase: str,
) -> list[Message]:
    parts = [
        f"Library description: {description}",
        f"Module: arbor.autogen.{module}",
        f"Names to define: {', '.join(names)} (just requested: {', '.join(requested)})",
    ]
    if existing:
        parts.append(
            "The module's current code (keep everything it defines):\n"
            f"```python\n{existing.rstrip()}\n```"
        )
    if caller is not None and caller.source:
        where = str(caller.path) if caller.path else "the importing code"
        source = caller.source
        if len(source) > _MAX_CALLER_CHARS:
            source = source[:_MAX_CALLER_CHARS] + "\n# ... (cut)"
        parts.append(f"The code importing it ({where}):\n```python\n{source.rstrip()}\n```")
        if caller.sites:
            sites = "\n".join(f"{s.name}:\n{s.snippet}" for s in caller.sites)
            parts.append(f"Where the requested names are used:\n{sites}")
    if codebase:
        parts.append(f"Context from the caller's project:\n{codebase}")
    return [Message.system(SYSTEM), Message.user("\n\n".join(parts))]


def retry_message(problem: str) -> Message:
    return Message.user(
        f"That module was refused: {problem}\n"
        "Reply with the corrected complete module in one ```python fenced block."
    )
