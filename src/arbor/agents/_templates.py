"""Rendering an agent's instructions: Jinja2 in a sandbox, with strict undefined variables.

Sandboxed because instructions may come from YAML files or the store, not only from code;
strict because a missing variable is a bug, not an empty string in a prompt.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

__all__ = ["render_instructions"]


@functools.cache
def _environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)


@functools.lru_cache(maxsize=256)
def _template(source: str) -> jinja2.Template:
    return _environment().from_string(source)


def render_instructions(source: str, variables: Mapping[str, Any]) -> str:
    """Render a Jinja2 template; raises jinja2 errors (the caller adds context)."""
    if "{" not in source:  # the common case of plain text skips Jinja entirely
        return source
    return _template(source).render(**variables)
