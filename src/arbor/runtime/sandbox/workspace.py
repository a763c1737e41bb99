"""One directory per run that generated files are written into, and only through here.

Every path is checked (``_paths``), every write is atomic (a temporary file in the same
directory, fsync, rename, fsync of the directory) so a reader or a crash never sees half a
file, and every write is reported to an ``on_write`` callback so the run can record it as an
event. Size limits hold per file and for the whole tree, counting what sandboxed code wrote.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import stat
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel, ConfigDict, Field

from arbor.runtime.sandbox._paths import check_relative, entry_kind, open_parent
from arbor.runtime.sandbox.errors import WorkspaceLimitError, WorkspacePathError

__all__ = ["Workspace", "WorkspaceLimits", "WriteEvent"]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class WorkspaceLimits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    file_bytes: int = Field(default=1024 * 1024, ge=1)
    total_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    files: int = Field(default=2000, ge=1)


@dataclass(frozen=True)
class WriteEvent:
    """One completed write: the relative path, its size and content hash."""

    path: str
    size: int
    sha256: str
    created: bool
    at: datetime


@dataclass(frozen=True)
class _Entry:
    path: str
    size: int


class Workspace:
    """A validated view of one run's directory."""

    def __init__(
        self,
        root: Path | str,
        *,
        limits: WorkspaceLimits | None = None,
        on_write: Callable[[WriteEvent], None] | None = None,
    ) -> None:
        root_path = Path(root)
        if root_path.is_symlink() or not root_path.is_dir():
            raise WorkspacePathError(f"workspace root {str(root)!r} is not a directory")
        self.root = root_path.resolve()
        self.limits = limits or WorkspaceLimits()
        self._on_write = on_write

    @classmethod
    def create(
        cls,
        base: Path | str,
        run_id: str,
        *,
        limits: WorkspaceLimits | None = None,
        on_write: Callable[[WriteEvent], None] | None = None,
    ) -> Workspace:
        """The directory ``base/run_id`` (made if missing); ``run_id`` must be one plain name."""
        if not _RUN_ID.fullmatch(run_id) or run_id in (".", ".."):
            raise WorkspacePathError(f"run id {run_id[:80]!r} is not a plain name", path=run_id)
        root = Path(base) / run_id
        root.mkdir(parents=True, exist_ok=True, mode=0o755)
        return cls(root, limits=limits, on_write=on_write)

    def _root_fd(self) -> int:
        return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)

    def write(self, path: str, content: str | bytes) -> WriteEvent:
        """Atomically write one file; refuses bad paths and anything over a limit."""
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        parts = check_relative(path)
        rel = "/".join(parts)
        if len(data) > self.limits.file_bytes:
            raise WorkspaceLimitError(
                f"{rel!r} is {len(data)} bytes; the limit per file is {self.limits.file_bytes}",
                path=rel,
            )
        entries = {e.path: e.size for e in self._entries()}
        previous = entries.get(rel)
        total = sum(entries.values()) - (previous or 0) + len(data)
        if total > self.limits.total_bytes:
            raise WorkspaceLimitError(
                f"writing {rel!r} would make the workspace {total} bytes; "
                f"the limit is {self.limits.total_bytes}",
                path=rel,
            )
        if previous is None and len(entries) + 1 > self.limits.files:
            raise WorkspaceLimitError(
                f"the workspace already holds {len(entries)} files (the limit)", path=rel
            )
        root_fd = self._root_fd()
        try:
            dir_fd = open_parent(root_fd, parts, rel, create=True)
        finally:
            os.close(root_fd)
        try:
            created = self._replace(dir_fd, parts[-1], data, rel)
        finally:
            os.close(dir_fd)
        event = WriteEvent(
            path=rel,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            created=created,
            at=datetime.now(UTC),
        )
        if self._on_write is not None:
            self._on_write(event)
        return event

    @staticmethod
    def _replace(dir_fd: int, name: str, data: bytes, rel: str) -> bool:
        kind = entry_kind(dir_fd, name)
        if kind not in ("file", "missing entry"):
            raise WorkspacePathError(f"workspace path {rel!r} refused: it is a {kind}", path=rel)
        tmp = f".{name[:200]}.{secrets.token_hex(6)}.tmp"
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd
        )
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            os.unlink(tmp, dir_fd=dir_fd)
            raise
        os.fsync(dir_fd)
        return kind == "missing entry"

    def read(self, path: str) -> bytes:
        """A regular file's bytes; symlinks, devices and fifos are refused, never opened."""
        parts = check_relative(path)
        rel = "/".join(parts)
        root_fd = self._root_fd()
        try:
            dir_fd = open_parent(root_fd, parts, rel, create=False)
        finally:
            os.close(root_fd)
        try:
            kind = entry_kind(dir_fd, parts[-1])
            if kind != "file":
                raise WorkspacePathError(
                    f"workspace path {rel!r} refused: it is a {kind}", path=rel
                )
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise WorkspacePathError(f"workspace path {rel!r} refused: not a file", path=rel)
            return f.read()

    def _entries(self) -> Iterator[_Entry]:
        """Regular files under the root, never following links."""
        stack = [(str(self.root), "")]
        while stack:
            directory, prefix = stack.pop()
            with os.scandir(directory) as it:
                for entry in it:
                    rel = f"{prefix}{entry.name}"
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, rel + "/"))
                    elif entry.is_file(follow_symlinks=False):
                        yield _Entry(rel, entry.stat(follow_symlinks=False).st_size)

    def files(self) -> list[str]:
        """Relative paths of the regular files, sorted."""
        return sorted(e.path for e in self._entries())

    def total_bytes(self) -> int:
        return sum(e.size for e in self._entries())

    def write_zip(self, target: BinaryIO) -> int:
        """Write the regular files as a zip archive; symlinks and special files are left out."""
        count = 0
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for rel in self.files():
                archive.writestr(rel, self.read(rel))
                count += 1
        return count

    def zip_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self.write_zip(buffer)
        return buffer.getvalue()
