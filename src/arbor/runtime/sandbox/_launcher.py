"""The sandbox's first process: isolates itself, drops root, then ``exec``s the command.

Run as a standalone script (``python -I -S _launcher.py SPEC_JSON``) so it starts in
milliseconds and imports only the standard library. As root it enters a new network
namespace (only its own loopback) and a private mount namespace where every host mount is
read-only, the home directories are hidden behind empty tmpfs (the interpreter prefix is bound
back read-only), ``/tmp`` is a fresh size-capped tmpfs, ``/proc`` shows only the run's own
processes and the workspace is the one writable bind mount. It then sets the rlimits and
switches to a per-run uid with no capabilities and ``no_new_privs``: a process that is still
root could remount, ``setns`` back into the host's network or ignore ``RLIMIT_NPROC``. A setup
failure is written to the status descriptor (close-on-exec, so it reads empty once the command
runs) and exits 125: fail closed.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import resource
import signal
import socket
import struct
import sys
from typing import Any

__all__ = ["chown_tree", "main"]

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
PR_SET_NO_NEW_PRIVS = 38
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
SETUP_FAILED = 125
# statvfs flag -> mount flag, kept when a mount is remounted read-only.
_KEPT_FLAGS = {
    os.ST_NOSUID: MS_NOSUID,
    os.ST_NODEV: MS_NODEV,
    os.ST_NOEXEC: MS_NOEXEC,
    os.ST_NOATIME: MS_NOATIME,
    os.ST_NODIRATIME: MS_NODIRATIME,
    os.ST_RELATIME: MS_RELATIME,
}
_RLIMITS = {
    "cpu_seconds": resource.RLIMIT_CPU,
    "memory_bytes": resource.RLIMIT_AS,
    "processes": resource.RLIMIT_NPROC,
    "file_size_bytes": resource.RLIMIT_FSIZE,
    "open_files": resource.RLIMIT_NOFILE,
}


class SetupError(Exception):
    """Isolation could not be set up; the command must not run."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(errno)}")


def _mount(
    libc: ctypes.CDLL,
    src: str | None,
    dst: str,
    fstype: str | None,
    flags: int,
    data: str | None = None,
) -> None:
    enc = [None if s is None else s.encode() for s in (src, dst, fstype, data)]
    _check(libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {dst}")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return field.encode().decode("unicode_escape").encode("latin-1").decode()


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [_unescape(line.split()[4]) for line in f]


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _remount(libc: ctypes.CDLL, path: str, *, readonly: bool) -> None:
    kept = 0
    flags = os.statvfs(path).f_flag
    for st_flag, ms_flag in _KEPT_FLAGS.items():
        if flags & st_flag:
            kept |= ms_flag
    ro = MS_RDONLY if readonly else 0
    _mount(libc, None, path, None, MS_REMOUNT | MS_BIND | ro | kept)


def _loopback_up() -> None:
    """The new namespace's own loopback, so local servers in tests work; it reaches nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def chown_tree(root: str, uid: int, gid: int) -> None:
    """Give the workspace to ``uid``; links are not followed and a file with other hard links
    (possibly a host file) is left alone."""
    os.chown(root, uid, gid, follow_symlinks=False)
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(base, name)
            st = os.lstat(path)
            if st.st_nlink > 1 and not os.path.isdir(path):
                continue
            os.chown(path, uid, gid, follow_symlinks=False)


def _isolate(spec: dict[str, Any]) -> None:
    libc = _libc()
    workspace: str = spec["workspace"]
    hidden: list[str] = [p for p in spec["hide"] if os.path.isdir(p)]
    hidden_files: list[str] = [p for p in spec["hide"] if os.path.isfile(p)]
    # The interpreter may live under a hidden directory or under /tmp (a checkout there, its
    # .venv): both are replaced below, so it is bound back read-only.
    replaced = [*hidden, "/tmp"]
    exposed: list[str] = [p for p in spec["expose"] if _under(p, replaced) and os.path.isdir(p)]
    chown_tree(workspace, spec["uid"], spec["gid"])
    host_mounts = _mount_points()
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET), "unshare(CLONE_NEWNS|CLONE_NEWNET)")
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    _loopback_up()
    for path in host_mounts:  # what is replaced below (/tmp, /proc, hidden) needs no remount
        if not _under(path, ["/tmp", "/proc", *hidden]) and not _under(path, [workspace]):
            _remount(libc, path, readonly=True)
    fds = {p: os.open(p, os.O_RDONLY | os.O_DIRECTORY) for p in [*exposed, workspace]}
    os.umask(0o022)
    tmp_opts = f"size={spec['tmp_bytes']},mode=1777"
    _mount(libc, "tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, tmp_opts)
    for path in hidden:
        os.makedirs(path, exist_ok=True)  # it may sit under the new /tmp or another hidden dir
        _mount(libc, "tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    hidden_files = [p for p in hidden_files if os.path.isfile(p)]  # else already out of sight
    for path in hidden_files:
        _mount(libc, "/dev/null", path, None, MS_BIND)
    for path, fd in fds.items():
        os.makedirs(path, exist_ok=True)
        _mount(libc, f"/proc/self/fd/{fd}", path, None, MS_BIND)
        os.close(fd)
    for path in [*hidden, *hidden_files, *exposed]:
        _remount(libc, path, readonly=True)
    # A fresh /proc where the run sees only its own uid's processes, not the host's.
    _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible")
    _remount(libc, workspace, readonly=False)


def _drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    _check(_libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def _set_limits(limits: dict[str, int | None]) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core in the workspace
    for name, value in limits.items():
        if value is None:
            continue
        if name == "cpu_seconds":
            # SIGXCPU at the limit names the cause in the exit status; a process that ignores
            # it gets SIGKILL one CPU second later.
            resource.setrlimit(resource.RLIMIT_CPU, (value, value + 1))
        else:
            resource.setrlimit(_RLIMITS[name], (value, value))


def _kill_uid(uid: int) -> int:
    """``kill(-1)`` as the run's uid: the kernel signals all its processes under the task
    list lock, so a fork bomb cannot add a child the signal misses."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return 0


def _setup(spec: dict[str, Any]) -> None:
    if spec["isolate"]:
        _isolate(spec)
    os.nice(spec["nice"])
    _set_limits(spec["limits"])
    if spec["isolate"]:
        _drop_privileges(spec["uid"], spec["gid"])
    try:
        os.chdir(spec["cwd"])
    except PermissionError as exc:
        raise SetupError(
            f"the run's uid cannot reach {spec['cwd']!r}: a parent directory is not searchable"
            " by others (make it 0755, or list it in the sandbox's hide directories)"
        ) from exc


def main(argv: list[str]) -> int:
    spec: dict[str, Any] = json.loads(argv[1])
    status_fd: int = spec["status_fd"]
    os.set_inheritable(status_fd, False)  # closed by exec: empty means the command started
    try:
        if "kill_uid" in spec:
            return _kill_uid(spec["kill_uid"])
        if spec.get("probe"):
            _check(_libc().unshare(CLONE_NEWNS | CLONE_NEWNET), "unshare")
            return 0
        _setup(spec)
    except (SetupError, OSError) as exc:
        os.write(status_fd, f"sandbox setup failed: {exc}".encode())
        return SETUP_FAILED
    # Python ignores these at start-up and ignored signals survive exec: give them back.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    try:
        os.execvpe(spec["argv"][0], spec["argv"], spec["env"])
    except OSError as exc:
        os.write(status_fd, f"cannot execute {spec['argv'][0]!r}: {exc.strerror}".encode())
        return SETUP_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv))
