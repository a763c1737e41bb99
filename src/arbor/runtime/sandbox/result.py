"""What a sandboxed run produced, and which limit (if any) stopped it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["KillReason", "SandboxResult"]

#: ``wall_time``: the run's timeout killed the group; ``cpu``: RLIMIT_CPU or the run-wide CPU
#: watchdog; ``file_size``: RLIMIT_FSIZE (SIGXFSZ). The memory limit kills nothing: an
#: allocation past RLIMIT_AS fails inside the program (``MemoryError``, ``ENOMEM``).
KillReason = Literal["cpu", "file_size", "wall_time"]


class SandboxResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    argv: tuple[str, ...]
    #: The exit status; negative is the signal that ended it (as in ``asyncio``).
    exit_code: int
    stdout: str
    stderr: str
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    wall_seconds: float
    #: CPU seconds of the run's processes as last sampled by the watchdog.
    cpu_seconds: float
    killed_by: KillReason | None = None
    #: False only when the configuration allowed an unisolated run and isolation was missing.
    isolated: bool
    #: The unprivileged uid the run had (``None`` when unisolated); no process keeps it after.
    uid: int | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed_by is None
