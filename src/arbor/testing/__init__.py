"""Test doubles that ship with Arbor: scripted and function models, the mock upstream
server, and a network guard for test suites."""

from arbor.testing.models import FunctionModel, ScriptedModel, ScriptError, Step
from arbor.testing.network import NetworkBlockedError, block_network

__all__ = [
    "FunctionModel",
    "NetworkBlockedError",
    "ScriptError",
    "ScriptedModel",
    "Step",
    "block_network",
]
