"""Errors of the sandbox and the workspace.

::

    ArborError
    └── SandboxError                  the sandbox could not run a command
        ├── SandboxUnavailableError   OS isolation is missing and unisolated runs are not allowed
        └── WorkspaceError            a workspace operation was refused
            ├── WorkspacePathError    a path escapes, is malformed or names a special file
            └── WorkspaceLimitError   a per-file or total size limit would be exceeded
"""

from __future__ import annotations

from arbor.core.errors import ArborError

__all__ = [
    "SandboxError",
    "SandboxUnavailableError",
    "WorkspaceError",
    "WorkspaceLimitError",
    "WorkspacePathError",
]


class SandboxError(ArborError):
    kind = "sandbox"


class SandboxUnavailableError(SandboxError):
    kind = "sandbox_unavailable"


class WorkspaceError(SandboxError):
    kind = "workspace"

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        #: The path as the caller gave it (repr-safe in the message).
        self.path = path


class WorkspacePathError(WorkspaceError):
    kind = "workspace_path"


class WorkspaceLimitError(WorkspaceError):
    kind = "workspace_limit"
