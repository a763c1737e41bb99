"""``arbor.autogen``: functions written by an LLM when they are first imported.

>>> from arbor.autogen import init                      # doctest: +SKIP
>>> init("Cryptographic utility library")                # doctest: +SKIP
>>> from arbor.autogen.tokens import generate_token      # doctest: +SKIP

A thin face over :mod:`arbor.apps.autogen`: ``init`` installs the import hook for the
``arbor.autogen.`` prefix (replacing any earlier ``init``), ``explain`` asks the model about an
exception, ``reset`` removes the hook and the generated modules. Nothing is installed until
``init`` is called.
"""

from __future__ import annotations

import atexit
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from arbor.apps.autogen import AutogenSession
    from arbor.core.config import Settings
    from arbor.llm.client import LLMClient

__all__ = ["explain", "init", "reset"]

_active: list[AutogenSession] = []


def init(
    description: str,
    *,
    model: str | None = None,
    client: LLMClient | None = None,
    settings: Settings | None = None,
    retries: int = 2,
    smoke: bool = False,
    allow_unisolated: bool = False,
    allow_imports: Iterable[str] = (),
    cache: bool = True,
    context_tokens: int = 2000,
    max_tokens: int | None = None,
    explain_exceptions: bool = False,
) -> AutogenSession:
    """Describe the library; from now on ``arbor.autogen.<module>`` imports are generated.

    ``client`` (an :class:`~arbor.llm.client.LLMClient` the caller owns) or ``settings``
    choose the model's pipeline; by default one is built from ``ARBOR_*`` settings, with usage
    recorded in the configured database. ``smoke`` runs each new module in the OS sandbox
    before it is imported; ``allow_imports`` lifts entries of the import policy;
    ``explain_exceptions`` prints the model's explanation of uncaught exceptions;
    ``max_tokens`` caps each reply (``None``: :class:`~arbor.apps.autogen.AutogenConfig`'s
    default, enough for a module; small local models answer faster with less).
    """
    from arbor.apps.autogen import AutogenConfig, AutogenRuntime, AutogenSession

    config = AutogenConfig(
        description=description,
        model=model,
        retries=retries,
        smoke=smoke,
        allow_unisolated=allow_unisolated,
        allow_imports=tuple(allow_imports),
        cache=cache,
        context_tokens=context_tokens,
        **({"max_tokens": max_tokens} if max_tokens is not None else {}),
    )
    reset()
    session = AutogenSession(
        AutogenRuntime(config, settings=settings, client=client),
        explain_exceptions=explain_exceptions,
    )
    session.install()
    if not _active:
        atexit.register(reset)
    _active.append(session)
    return session


def explain(exc: BaseException) -> str:
    """Print and return the model's explanation of ``exc`` with a suggested fix; changes
    nothing. Needs :func:`init` first."""
    if not _active:
        raise RuntimeError("call arbor.autogen.init(...) before explain()")
    return _active[-1].explain(exc)


def reset() -> None:
    """Remove the import hook and explainer, drop the generated modules, close the client."""
    while _active:
        _active.pop().uninstall()
