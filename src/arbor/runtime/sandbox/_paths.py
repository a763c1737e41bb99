"""Workspace path checks, done on the text first and then on the file system without
following links: every directory is opened relative to its parent with ``O_NOFOLLOW``, so a
symlink planted by generated code (``out -> /etc``) is refused and cannot be raced."""

from __future__ import annotations

import os
import stat
import unicodedata
from pathlib import PurePosixPath

from arbor.runtime.sandbox.errors import WorkspacePathError

__all__ = ["MAX_NAME_BYTES", "MAX_PATH_CHARS", "check_relative", "entry_kind", "open_parent"]

MAX_NAME_BYTES = 255
MAX_PATH_CHARS = 1024
MAX_DEPTH = 32


def _refuse(path: str, why: str) -> WorkspacePathError:
    return WorkspacePathError(f"workspace path {path[:200]!r} refused: {why}", path=path[:200])


def check_relative(path: str) -> tuple[str, ...]:
    """The components of a safe relative path, or :class:`WorkspacePathError` naming why not."""
    if not isinstance(path, str) or not path.strip():
        raise _refuse(str(path), "empty")
    if "\x00" in path:
        raise _refuse(path, "contains a NUL byte")
    if len(path) > MAX_PATH_CHARS:
        raise _refuse(path, f"longer than {MAX_PATH_CHARS} characters")
    if "\\" in path:
        raise _refuse(path, "contains a backslash (use / as the separator)")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise _refuse(path, "absolute paths are not allowed")
    parts = tuple(p for p in PurePosixPath(path).parts if p != ".")
    if not parts:
        raise _refuse(path, "names no file")
    if len(parts) > MAX_DEPTH:
        raise _refuse(path, f"deeper than {MAX_DEPTH} directories")
    for part in parts:
        if part == "..":
            raise _refuse(path, "'..' is not allowed")
        if len(part.encode("utf-8", errors="surrogateescape")) > MAX_NAME_BYTES:
            raise _refuse(path, f"a name is longer than {MAX_NAME_BYTES} bytes")
        if any(unicodedata.category(ch) == "Cc" for ch in part):
            raise _refuse(path, "contains a control character")
    return parts


def open_parent(root_fd: int, parts: tuple[str, ...], path: str, *, create: bool) -> int:
    """A descriptor of the directory holding ``parts[-1]``; creates missing ones if asked."""
    fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise _refuse(path, f"directory {part!r} does not exist") from None
                os.mkdir(part, 0o755, dir_fd=fd)
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except (NotADirectoryError, OSError) as exc:
                kind = _kind(fd, part)
                raise _refuse(path, f"{part!r} is a {kind}, not a directory") from exc
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _kind(dir_fd: int, name: str) -> str:
    try:
        mode = os.lstat(name, dir_fd=dir_fd).st_mode
    except OSError:
        return "missing entry"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file"
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return "special file"
    return "file" if stat.S_ISREG(mode) else "directory"


def entry_kind(dir_fd: int, name: str) -> str:
    """What ``name`` is inside ``dir_fd`` without following it (``missing entry`` if absent)."""
    return _kind(dir_fd, name)
