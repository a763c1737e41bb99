"""Shared by the autogen tests: a FunctionModel client and caller scripts run from files."""

from __future__ import annotations

import runpy
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from arbor.core.config import Settings
from arbor.llm.client import LLMClient
from arbor.llm.types import ChatRequest
from arbor.testing import FunctionModel

MODEL = "test:autogen"


def make_client(reply: Callable[[ChatRequest], str]) -> tuple[LLMClient, FunctionModel]:
    model = FunctionModel(reply, name="autogen")
    settings = Settings(default_model=MODEL, llm={"cache": {"enabled": False}})
    return LLMClient(settings, models={MODEL: model}), model


def fenced(code: str) -> str:
    return f"Here it is:\n```python\n{textwrap.dedent(code).strip()}\n```\n"


def run_script(folder: Path, name: str, code: str) -> dict[str, Any]:
    """Write ``code`` to ``folder/name`` and run it as a script (a real file: the caller)."""
    path = folder / name
    path.write_text(textwrap.dedent(code), encoding="utf-8")
    return runpy.run_path(str(path))


def prompt_text(request: ChatRequest) -> str:
    return "\n".join(m.content or "" for m in request.messages)


TOKENS_V1 = '''
import secrets

def generate_token(length: int = 16) -> str:
    """A random URL-safe token."""
    return secrets.token_urlsafe(length)
'''

TOKENS_V2 = (
    TOKENS_V1
    + '''

def token_bytes(n: int) -> bytes:
    """n random bytes."""
    return secrets.token_bytes(n)
'''
)
