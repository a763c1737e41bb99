"""arbor.runtime.sandbox.workspace: every path attack refused with nothing outside the
workspace changed, limits, atomic writes reported as events, the zip download."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

import pytest

from arbor.runtime.sandbox import (
    Workspace,
    WorkspaceLimitError,
    WorkspaceLimits,
    WorkspacePathError,
    WriteEvent,
)


def snapshot(*roots: Path) -> dict[str, tuple[int, int, int]]:
    seen: dict[str, tuple[int, int, int]] = {}
    for root in roots:
        for base, dirs, files in os.walk(root):
            for name in dirs + files:
                st = os.lstat(os.path.join(base, name))
                seen[os.path.join(base, name)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return seen


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret.txt").write_text("do not touch")
    return directory


@pytest.fixture
def ws(tmp_path: Path, outside: Path) -> Workspace:
    workspace = Workspace.create(tmp_path / "runs", "run-1")
    root = workspace.root
    (root / "out").symlink_to(outside)
    (root / "passwd").symlink_to("/etc/passwd")
    (root / "inner").mkdir()
    (root / "inner" / "up").symlink_to("../..")
    os.mkfifo(root / "pipe")
    if os.geteuid() == 0:
        os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    return workspace


ATTACKS = [
    "/etc/passwd",
    "/tmp/x",
    "../outside/secret.txt",
    "a/../../outside/secret.txt",
    "./../x",
    "a\x00b",
    "x" * 256,
    "a/" * 40 + "f",
    "d/" * 600,
    "C:\\Windows\\x",
    "a\\..\\b",
    "",
    "   ",
    ".",
    "line\nbreak",
    "out/secret.txt",
    "out/new.txt",
    "passwd",
    "inner/up/outside/secret.txt",
    "pipe",
    "null",
    "inner",
]


@pytest.mark.parametrize("path", ATTACKS, ids=lambda p: repr(p[:30]))
def test_every_path_attack_is_refused_and_nothing_outside_changes(
    ws: Workspace, tmp_path: Path, path: str
) -> None:
    if path == "null" and os.geteuid() != 0:
        pytest.skip("making a device file needs root")
    events: list[WriteEvent] = []
    ws = Workspace(ws.root, on_write=events.append)
    before = snapshot(tmp_path, Path("/etc"))
    with pytest.raises(WorkspacePathError) as info:
        ws.write(path, "pwned")
    assert "refused" in str(info.value) or "not a" in str(info.value)
    with pytest.raises(WorkspacePathError):
        ws.read(path)
    assert snapshot(tmp_path, Path("/etc")) == before
    assert events == []


def test_refusals_name_the_reason(ws: Workspace) -> None:
    reasons = {
        "/etc/passwd": "absolute",
        "../x": "'..'",
        "a\x00b": "NUL",
        "x" * 256: "longer than 255 bytes",
        "out/x": "symlink",
        "passwd": "symlink",
        "pipe": "special file",
    }
    if os.geteuid() == 0:
        reasons["null"] = "device file"
    for path, reason in reasons.items():
        with pytest.raises(WorkspacePathError, match=reason):
            ws.write(path, "x")


def test_writes_are_atomic_events(tmp_path: Path) -> None:
    events: list[WriteEvent] = []
    ws = Workspace.create(tmp_path, "run-2", on_write=events.append)
    first = ws.write("pkg/mod.py", "one")
    link = tmp_path / "hardlink"
    os.link(ws.root / "pkg" / "mod.py", link)
    second = ws.write("./pkg/mod.py", b"two")
    # Replaced by rename: a hard link to the old file still holds the old bytes.
    assert link.read_text() == "one"
    assert ws.read("pkg/mod.py") == b"two"
    assert events == [first, second]
    assert (first.path, first.size, first.created) == ("pkg/mod.py", 3, True)
    assert (second.created, len(second.sha256)) == (False, 64)
    assert ws.files() == ["pkg/mod.py"]  # no temporary files left behind
    assert sorted(os.listdir(ws.root / "pkg")) == ["mod.py"]


def test_size_and_count_limits(tmp_path: Path) -> None:
    limits = WorkspaceLimits(file_bytes=10, total_bytes=25, files=3)
    ws = Workspace.create(tmp_path, "run-3", limits=limits)
    with pytest.raises(WorkspaceLimitError, match="limit per file is 10"):
        ws.write("big.txt", "x" * 11)
    ws.write("a.txt", "x" * 10)
    ws.write("b.txt", "x" * 10)
    with pytest.raises(WorkspaceLimitError, match="the limit is 25"):
        ws.write("c.txt", "x" * 6)
    ws.write("b.txt", "x" * 5)  # replacing counts only the difference
    ws.write("c.txt", "x" * 10)
    with pytest.raises(WorkspaceLimitError, match="holds 3 files"):
        ws.write("d.txt", "")
    assert ws.total_bytes() == 25
    assert ws.files() == ["a.txt", "b.txt", "c.txt"]


def test_files_written_by_other_code_count_toward_the_total(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path, "run-4", limits=WorkspaceLimits(total_bytes=100))
    (ws.root / "made-by-tests.bin").write_bytes(b"x" * 95)
    with pytest.raises(WorkspaceLimitError):
        ws.write("more.txt", "x" * 6)


def test_zip_holds_the_regular_files_only(ws: Workspace) -> None:
    ws.write("README.md", "# hi\n")
    ws.write("src/app/__init__.py", "X = 1\n")
    archive = zipfile.ZipFile(io.BytesIO(ws.zip_bytes()))
    assert sorted(archive.namelist()) == ["README.md", "src/app/__init__.py"]
    assert archive.read("src/app/__init__.py") == b"X = 1\n"
    target = io.BytesIO()
    assert ws.write_zip(target) == 2


def test_one_directory_per_run_and_bad_run_ids(tmp_path: Path) -> None:
    a = Workspace.create(tmp_path, "run-a")
    b = Workspace.create(tmp_path, "run-b")
    a.write("f.txt", "a")
    assert b.files() == []
    for bad in ("../x", "a/b", "", ".hidden", "x" * 200, "/abs"):
        with pytest.raises(WorkspacePathError, match="not a plain name"):
            Workspace.create(tmp_path, bad)
    (tmp_path / "link").symlink_to(tmp_path / "run-a")
    with pytest.raises(WorkspacePathError, match="not a directory"):
        Workspace(tmp_path / "link")
