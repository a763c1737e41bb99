"""What a sandboxed run may use: resource limits and the isolation policy.

The environment is an allow-list: only the variables named in ``env_allow`` are copied from
the host, so a new secret variable (``ARBOR_*``, ``OPENAI_*``, a cloud token) never leaks by
default. Unisolated runs must be asked for by name (``allow_unisolated``) and are reported.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["SandboxConfig", "SandboxLimits"]

_MIB = 1024 * 1024


class SandboxLimits(BaseModel):
    """rlimits for every process of the run, plus the run's wall clock and output caps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: CPU seconds per process (RLIMIT_CPU) and for the whole run (a watchdog sums them).
    cpu_seconds: int = Field(default=30, ge=1)
    wall_seconds: float = Field(default=60.0, gt=0)
    #: Address space per process (RLIMIT_AS).
    memory_bytes: int = Field(default=1024 * _MIB, ge=16 * _MIB)
    #: Processes of the run's uid (RLIMIT_NPROC; enforced because the run has its own uid).
    processes: int = Field(default=64, ge=1)
    file_size_bytes: int = Field(default=16 * _MIB, ge=1)
    open_files: int = Field(default=256, ge=16)
    #: Bytes kept of each of stdout and stderr; the rest is drained and dropped.
    output_bytes: int = Field(default=256 * 1024, ge=1)
    #: Scheduling niceness, so generated code yields the CPU to the service supervising it.
    nice: int = Field(default=10, ge=0, le=19)
    #: Size of the run's private ``/tmp`` (a tmpfs discarded when the run ends).
    tmp_bytes: int = Field(default=64 * _MIB, ge=_MIB)


def _interpreter_roots() -> tuple[str, ...]:
    roots = {sys.base_prefix, sys.prefix, str(Path(sys.executable).resolve().parent.parent)}
    return tuple(sorted(roots))


class SandboxConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    limits: SandboxLimits = SandboxLimits()
    #: Host variables copied into the run (names, exact). Everything else is dropped.
    env_allow: tuple[str, ...] = ("LANG", "LC_ALL", "LC_CTYPE", "PATH", "TZ")
    #: Run without namespaces when they are unavailable; the result says ``isolated=False``.
    allow_unisolated: bool = False
    #: Directories replaced by an empty read-only tmpfs inside the run (home directories,
    #: ``ARBOR_HOME``), and files replaced by an empty one (a ``.env``). A workspace inside a
    #: hidden directory stays reachable.
    hide: tuple[str, ...] = ("/home", "/root")
    #: Directories under ``hide`` bound back read-only (the interpreter the run may need).
    expose: tuple[str, ...] = Field(default_factory=_interpreter_roots)
    #: The run's uid/gid; ``None`` picks a fresh one per run so runs cannot signal each other.
    uid: int | None = Field(default=None, ge=1000)
    gid: int | None = Field(default=None, ge=1000)

    @field_validator("hide", "expose")
    @classmethod
    def _absolute(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        for path in paths:
            if not Path(path).is_absolute():
                raise ValueError(f"{path!r} is not an absolute path")
        return tuple(str(Path(p).resolve()) for p in paths)
