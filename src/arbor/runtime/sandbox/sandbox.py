"""Run a command under the operating system's isolation, without blocking the event loop.

The command runs in its own session (process group) through ``_launcher.py``, which applies
the namespaces, mounts, rlimits and uid switch before ``exec``. This side reads bounded
output, enforces the wall clock and a run-wide CPU budget (RLIMIT_CPU is per process, so a
fork bomb would otherwise spread its CPU across children) and kills every process of the run
when a limit is hit or the command ends, so nothing outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import orjson

from arbor.runtime.sandbox._launcher import chown_tree
from arbor.runtime.sandbox._procs import RunProcesses
from arbor.runtime.sandbox.config import SandboxConfig
from arbor.runtime.sandbox.errors import SandboxError, SandboxUnavailableError
from arbor.runtime.sandbox.result import KillReason, SandboxResult

__all__ = ["Sandbox"]

_LAUNCHER = str(Path(__file__).with_name("_launcher.py"))
_SETUP_FAILED = 125
_POLL_SECONDS = 0.1
_DRAIN_SECONDS = 5.0


async def _read_bounded(stream: asyncio.StreamReader | None, limit: int) -> tuple[bytes, bool]:
    """Keep the first ``limit`` bytes; drain the rest so the writer never blocks."""
    if stream is None:
        return b"", False
    kept = bytearray()
    truncated = False
    while chunk := await stream.read(65536):
        room = limit - len(kept)
        if len(chunk) > room:
            truncated = True
        kept += chunk[: max(room, 0)]
    return bytes(kept), truncated


def _directories(
    workspace: Path | str, cwd: Path | str | None, config: SandboxConfig
) -> tuple[Path, Path]:
    root = Path(workspace).resolve()
    if not root.is_dir():
        raise SandboxError(f"workspace {str(root)!r} is not a directory")
    # The workspace becomes writable and is handed to the run's uid: never a system tree.
    protected = {"/", *config.hide, *config.expose, sys.prefix, sys.base_prefix}
    for path in protected:
        if Path(path).resolve().is_relative_to(root):
            raise SandboxError(f"workspace {str(root)!r} holds {path!r}; use a run directory")
    workdir = (root / cwd).resolve() if cwd is not None else root
    if not workdir.is_relative_to(root) or not workdir.is_dir():
        raise SandboxError(f"cwd {str(cwd)!r} is not a directory inside the workspace")
    return root, workdir


async def _feed(pipe: asyncio.StreamWriter | None, data: bytes | None) -> None:
    """Write stdin beside the watchdog: a child that never reads must not stall it."""
    if pipe is None:
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        if data:
            pipe.write(data)
            await pipe.drain()
        pipe.close()


class Sandbox:
    """Runs commands in a workspace directory; one instance per configuration."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self._isolation: str | None = None  # "" when available, else the reason

    async def isolation_problem(self) -> str | None:
        """Why OS isolation is unavailable here, or ``None`` when it works (probed once)."""
        if self._isolation is None:
            self._isolation = await self._probe()
        return self._isolation or None

    async def _probe(self) -> str:
        if not sys.platform.startswith("linux"):
            return f"OS isolation needs Linux namespaces; this is {sys.platform}"
        if os.geteuid() != 0:
            return "OS isolation needs root (network/mount namespaces and a per-run uid)"
        spec: dict[str, object] = {"probe": True}
        code, message = await self._launch_helper(spec)
        return "" if code == 0 else (message or f"namespace probe exited {code}")

    async def _launch_helper(self, spec: dict[str, object]) -> tuple[int, str]:
        """Run the launcher in a helper mode (probe, kill) and return its exit and status."""
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-S",
                _LAUNCHER,
                orjson.dumps({**spec, "status_fd": write_fd}).decode(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                pass_fds=(write_fd,),
                env={},
            )
            os.close(write_fd)
            write_fd = -1
            code = await proc.wait()
            return code, os.read(read_fd, 4096).decode(errors="replace")
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)

    def _env(self, workspace: Path, extra: Mapping[str, str] | None) -> dict[str, str]:
        env = {k: os.environ[k] for k in self.config.env_allow if k in os.environ}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env.update({"HOME": str(workspace), "TMPDIR": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"})
        env.update(extra or {})
        return env

    async def run(
        self,
        argv: Sequence[str],
        workspace: Path | str,
        *,
        cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
    ) -> SandboxResult:
        """Run ``argv`` with ``workspace`` as its only writable directory.

        Raises :class:`SandboxUnavailableError` when isolation is missing and the
        configuration does not allow an unisolated run, :class:`SandboxError` when the
        isolation could not be set up or the command could not be started.
        """
        if not argv:
            raise SandboxError("nothing to run: argv is empty")
        root, workdir = await asyncio.to_thread(_directories, workspace, cwd, self.config)
        problem = await self.isolation_problem()
        if problem and not self.config.allow_unisolated:
            raise SandboxUnavailableError(
                f"refusing to run unisolated: {problem} (set allow_unisolated to run anyway)"
            )
        isolate = problem is None
        uid = self.config.uid or 200_000 + secrets.randbelow(800_000)
        gid = self.config.gid or uid
        limits = self.config.limits
        spec = {
            "argv": list(argv),
            "cwd": str(workdir),
            "env": self._env(root, env),
            "workspace": str(root),
            "isolate": isolate,
            "uid": uid,
            "gid": gid,
            "hide": list(self.config.hide),
            "expose": list(self.config.expose),
            "tmp_bytes": limits.tmp_bytes,
            "nice": limits.nice,
            "limits": {
                "cpu_seconds": limits.cpu_seconds,
                "memory_bytes": limits.memory_bytes,
                "processes": limits.processes,
                "file_size_bytes": limits.file_size_bytes,
                "open_files": limits.open_files,
            },
        }
        st = await asyncio.to_thread(os.stat, root)
        owner = (st.st_uid, st.st_gid)
        return await self._run(spec, tuple(argv), stdin, uid if isolate else None, owner)

    async def _run(
        self,
        spec: dict[str, object],
        argv: tuple[str, ...],
        stdin: bytes | None,
        uid: int | None,
        owner: tuple[int, int],
    ) -> SandboxResult:
        limits = self.config.limits
        read_fd, write_fd = os.pipe()
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-S",
                _LAUNCHER,
                orjson.dumps({**spec, "status_fd": write_fd}).decode(),
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(write_fd,),
                env={},
                start_new_session=True,
            )
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            raise SandboxError(f"cannot start the sandbox launcher: {exc}") from exc
        os.close(write_fd)
        procs = RunProcesses(uid=uid, pgid=proc.pid)
        feed = asyncio.ensure_future(_feed(proc.stdin, stdin))
        readers = asyncio.gather(
            _read_bounded(proc.stdout, limits.output_bytes),
            _read_bounded(proc.stderr, limits.output_bytes),
        )
        try:
            killed_by, cpu = await self._watch(proc, procs, started)
            await self._kill_all(procs)
            code = await proc.wait()
            # Only an escaped process (unisolated runs) could still hold the pipes open.
            (out, out_cut), (err, err_cut) = await asyncio.wait_for(readers, _DRAIN_SECONDS)
            status = os.read(read_fd, 4096).decode(errors="replace")
        except TimeoutError as exc:
            raise SandboxError("a process that left the run still holds its output") from exc
        finally:
            os.close(read_fd)
            feed.cancel()
            readers.cancel()
            if proc.returncode is None:
                await self._kill_all(procs)
                await proc.wait()
            if uid is not None:  # give the tree back to the workspace's owner
                await asyncio.to_thread(chown_tree, str(spec["workspace"]), *owner)
        if code == _SETUP_FAILED and status:
            raise SandboxError(status)
        if killed_by is None and (
            # RLIMIT_CPU's soft signal, or its hard kill (the last CPU sample may lag the
            # kernel's count by a poll on a loaded machine)
            code == -signal.SIGXCPU or (code == -signal.SIGKILL and cpu >= limits.cpu_seconds - 1.0)
        ):
            killed_by = "cpu"
        if killed_by is None and code == -signal.SIGXFSZ:
            killed_by = "file_size"
        return SandboxResult(
            argv=argv,
            exit_code=code,
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
            stdout_truncated=out_cut,
            stderr_truncated=err_cut,
            wall_seconds=time.monotonic() - started,
            cpu_seconds=cpu,
            killed_by=killed_by,
            isolated=uid is not None,
            uid=uid,
        )

    async def _watch(
        self, proc: asyncio.subprocess.Process, procs: RunProcesses, started: float
    ) -> tuple[KillReason | None, float]:
        """Wait for the command; stop it at the wall clock or the run-wide CPU budget."""
        limits = self.config.limits
        cpu = 0.0
        while True:
            try:
                await asyncio.wait_for(proc.wait(), timeout=_POLL_SECONDS)
                return None, cpu
            except TimeoutError:
                pass
            cpu = max(cpu, await asyncio.to_thread(procs.cpu_seconds))
            if cpu >= limits.cpu_seconds:
                return "cpu", cpu
            if time.monotonic() - started >= limits.wall_seconds:
                return "wall_time", cpu

    async def _kill_all(self, procs: RunProcesses) -> None:
        """Kill until no process of the run is left (a fork bomb races the first sweep)."""
        if await asyncio.to_thread(procs.kill) == 0:
            return
        if procs.uid is not None:
            await self._launch_helper({"kill_uid": procs.uid})
        for _ in range(250):  # at most ~5 s
            if await asyncio.to_thread(procs.kill) == 0:
                return
            await asyncio.sleep(0.02)
