"""Test doubles that ship with Arbor: scripted and function models, the mock upstream
server (an OpenAI-compatible HTTP server with fault injection), and a network guard for
test suites. The mock upstream's names load on first use (it pulls in aiohttp)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from arbor.core.lazy import lazy_exports
from arbor.testing.models import FunctionModel, ScriptedModel, ScriptError, Step
from arbor.testing.network import NetworkBlockedError, block_network

if TYPE_CHECKING:
    from arbor.testing.mock_upstream import MockConfig, MockUpstream, spawn_mock_upstream

__all__ = [
    "FunctionModel",
    "MockConfig",
    "MockUpstream",
    "NetworkBlockedError",
    "ScriptError",
    "ScriptedModel",
    "Step",
    "block_network",
    "spawn_mock_upstream",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        name: "arbor.testing.mock_upstream"
        for name in ("MockConfig", "MockUpstream", "spawn_mock_upstream")
    },
)
