"""Running generated code safely: the OS sandbox and the per-run workspace.

Generated code is never trusted: it runs in a separate process group under rlimits, with a
scrubbed environment, no network and the workspace as its only writable directory
(:class:`Sandbox`); files reach the workspace only through validated, size-limited, atomic
writes (:class:`Workspace`).
"""

from __future__ import annotations

from arbor.runtime.sandbox.config import SandboxConfig, SandboxLimits
from arbor.runtime.sandbox.errors import (
    SandboxError,
    SandboxUnavailableError,
    WorkspaceError,
    WorkspaceLimitError,
    WorkspacePathError,
)
from arbor.runtime.sandbox.junit import (
    TestCaseResult,
    TestReport,
    parse_junit,
    run_pytest,
)
from arbor.runtime.sandbox.result import KillReason, SandboxResult
from arbor.runtime.sandbox.sandbox import Sandbox
from arbor.runtime.sandbox.workspace import Workspace, WorkspaceLimits, WriteEvent

__all__ = [
    "KillReason",
    "Sandbox",
    "SandboxConfig",
    "SandboxError",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailableError",
    "TestCaseResult",
    "TestReport",
    "Workspace",
    "WorkspaceError",
    "WorkspaceLimitError",
    "WorkspaceLimits",
    "WorkspacePathError",
    "WriteEvent",
    "parse_junit",
    "run_pytest",
]
