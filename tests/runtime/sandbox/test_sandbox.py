"""Containment of arbor.runtime.sandbox.sandbox, each with a number: CPU and fork bombs
stopped within the CPU limit + 2 s, a 2 GB allocation refused, no connection reaching a
loopback canary, no secret in the environment, no write outside the workspace."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from arbor.runtime.sandbox import (
    Sandbox,
    SandboxConfig,
    SandboxError,
    SandboxLimits,
)

PY = sys.executable
# One xdist worker runs these one after another, so CPU-bound runs do not compete.
pytestmark = [pytest.mark.usefixtures("isolation"), pytest.mark.xdist_group("sandbox")]


def sandbox(**limits: float) -> Sandbox:
    return Sandbox(SandboxConfig(limits=SandboxLimits(**limits)))  # type: ignore[arg-type]


def processes_of(uid: int) -> list[int]:
    """Live (not zombie) processes of ``uid``."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                if os.stat(f"/proc/{name}").st_uid == uid and state not in "ZX":
                    pids.append(int(name))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return pids


def present(paths: list[str]) -> dict[str, bool]:
    return {p: os.path.lexists(p) for p in paths}


def resolved(path: Path) -> Path:
    return path.resolve()


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``roots`` (not following links) with its size and mtime."""
    seen: dict[str, tuple[int, int]] = {}
    for root in roots:
        for base, dirs, files in os.walk(root):
            for name in dirs + files:
                st = os.lstat(os.path.join(base, name))
                seen[os.path.join(base, name)] = (st.st_size, st.st_mtime_ns)
    return seen


async def test_runs_isolated_as_an_unprivileged_uid(tmp_path: Path) -> None:
    result = await sandbox().run([PY, "-c", "import os; print(os.getuid(), os.getcwd())"], tmp_path)
    assert result.ok and result.isolated
    uid, cwd = result.stdout.split()
    assert int(uid) == result.uid and result.uid is not None and result.uid >= 1000
    assert cwd == str(resolved(tmp_path))


# The limits an operator sets: CPU seconds, with the wall clock one second later as the
# backstop for a machine so busy that the run cannot even use its CPU allowance.
LIMITS = {"cpu_seconds": 2, "wall_seconds": 3, "nice": 0}
BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"


async def test_an_infinite_loop_is_killed_within_the_cpu_limit_plus_2s(tmp_path: Path) -> None:
    started = time.monotonic()
    result = await sandbox(**LIMITS).run([PY, "-c", "while True: pass"], tmp_path)
    elapsed = time.monotonic() - started
    assert result.killed_by in ("cpu", "wall_time")
    assert result.exit_code < 0
    assert elapsed < 2 + 2, elapsed


async def test_a_fork_bomb_is_killed_within_the_cpu_limit_plus_2s(tmp_path: Path) -> None:
    started = time.monotonic()
    result = await sandbox(**LIMITS, processes=32).run([PY, "-c", BOMB], tmp_path)
    elapsed = time.monotonic() - started
    assert result.killed_by in ("cpu", "wall_time")
    assert elapsed < 2 + 2, elapsed
    assert result.uid is not None
    assert processes_of(result.uid) == []


@pytest.mark.parametrize("program", ["while True: pass", BOMB], ids=["loop", "fork-bomb"])
async def test_the_cpu_limit_alone_stops_the_run(tmp_path: Path, program: str) -> None:
    """Without a near wall clock, the CPU budget (per process and run-wide) does the kill."""
    result = await sandbox(cpu_seconds=2, wall_seconds=60, processes=32, nice=0).run(
        [PY, "-c", program], tmp_path
    )
    assert result.killed_by == "cpu"
    assert 1.5 <= result.cpu_seconds <= 2.6, result.cpu_seconds
    assert result.wall_seconds < 60
    assert result.uid is not None and processes_of(result.uid) == []


async def test_the_wall_clock_kills_the_whole_run_including_detached_children(
    tmp_path: Path,
) -> None:
    script = "import os,time\nif os.fork()==0:\n    os.setsid(); time.sleep(60)\ntime.sleep(60)\n"
    started = time.monotonic()
    result = await sandbox(wall_seconds=1).run([PY, "-c", script], tmp_path)
    assert result.killed_by == "wall_time"
    assert time.monotonic() - started < 3
    assert result.uid is not None and processes_of(result.uid) == []


async def test_a_2gb_allocation_fails_under_the_memory_limit(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "small = bytearray(64 * 1024**2)\n"  # well under the limit: works
        "try:\n"
        "    big = bytearray(2 * 1024**3)\n"
        "except MemoryError:\n"
        "    print('MemoryError'); sys.exit(3)\n"
        "print('allocated')\n"
    )
    result = await sandbox(memory_bytes=512 * 1024**2).run([PY, "-c", script], tmp_path)
    assert (result.exit_code, result.stdout.strip()) == (3, "MemoryError")


async def test_no_connection_reaches_a_loopback_canary(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as canary:
        canary.settimeout(0.5)
        port = canary.getsockname()[1]
        # Control: the canary does accept connections from outside the sandbox.
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            conn, _ = canary.accept()
            conn.close()
        script = (
            "import socket\n"
            f"for host in ('127.0.0.1', '10.0.0.1', '1.1.1.1'):\n"
            "    try:\n"
            f"        socket.create_connection((host, {port}), timeout=2).close()\n"
            "        print(host, 'connected')\n"
            "    except OSError as e:\n"
            "        print(host, 'refused', e.errno)\n"
        )
        result = await sandbox().run([PY, "-c", script], tmp_path)
        with pytest.raises(TimeoutError):
            canary.accept()
    assert result.exit_code == 0, result.stderr
    assert "connected" not in result.stdout
    assert result.stdout.count("refused") == 3


async def test_the_environment_holds_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "ARBOR_OPENAI_API_KEY": "sk-arbor-secret-1",
        "OPENAI_API_KEY": "sk-secret-2",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-3",
        "SOME_NEW_TOKEN": "tok-secret-4",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    script = (
        "import json, os, sys\n"
        "try:\n"
        f"    parent = open('/proc/{os.getpid()}/environ', 'rb').read().decode()\n"
        "except OSError as e:\n"
        "    parent = 'unreadable'\n"
        "print(json.dumps({'env': dict(os.environ), 'parent': parent}))\n"
    )
    result = await sandbox().run([PY, "-c", script], tmp_path)
    seen = json.loads(result.stdout)
    assert set(seen["env"]) <= {
        "HOME",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "PATH",
        "TZ",
        "TMPDIR",
        "PYTHONDONTWRITEBYTECODE",
    }
    assert seen["parent"] == "unreadable"
    for value in secrets.values():
        assert value not in result.stdout


async def test_writes_outside_the_workspace_fail(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    outside = tmp_path / "outside"
    workspace.mkdir()
    outside.mkdir()
    (outside / "keep.txt").write_text("unchanged")
    host_tmp_name = f"/tmp/arbor-canary-{os.getpid()}"
    targets = [
        str(outside / "new.txt"),
        str(outside / "keep.txt"),
        "/etc/arbor-canary",
        "/var/tmp/arbor-canary",
        "/root/arbor-canary",
        "/dev/shm/arbor-canary",
        str(Path(sys.prefix) / "arbor-canary"),
    ]
    script = (
        "import json, subprocess, sys\n"
        "results = {}\n"
        "for path in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        open(path, 'a').write('x'); results[path] = 'written'\n"
        "    except OSError as e:\n"
        "        results[path] = e.strerror\n"
        "open('inside.txt', 'w').write('ok')\n"
        f"open({host_tmp_name!r}, 'w').write('private tmp')\n"
        "remount = subprocess.run(['mount', '-o', 'remount,rw', '/'], capture_output=True)\n"
        "results['remount'] = remount.returncode\n"
        "print(json.dumps(results))\n"
    )
    existed = present(targets)
    before = snapshot(outside, Path("/etc"))
    result = await sandbox().run([PY, "-c", script, json.dumps(targets)], workspace)
    assert result.exit_code == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome.pop("remount") != 0
    assert outcome == {p: outcome[p] for p in targets}
    assert "written" not in outcome.values(), outcome
    assert (workspace / "inside.txt").read_text() == "ok"
    assert not resolved(Path(host_tmp_name)).exists()  # its /tmp was private and is gone
    assert snapshot(outside, Path("/etc")) == before
    assert present(targets) == existed


async def test_output_is_bounded_and_the_rest_drained(tmp_path: Path) -> None:
    script = "import sys; sys.stdout.write('x' * 5_000_000); sys.stderr.write('e' * 10)"
    result = await sandbox(output_bytes=1000).run([PY, "-c", script], tmp_path)
    assert result.exit_code == 0
    assert (len(result.stdout), result.stdout_truncated) == (1000, True)
    assert (result.stderr, result.stderr_truncated) == ("e" * 10, False)


async def test_file_size_and_open_file_limits(tmp_path: Path) -> None:
    big = await sandbox(file_size_bytes=1024 * 1024).run(
        ["sh", "-c", "exec head -c 3000000 /dev/zero > big.bin"], tmp_path
    )
    assert big.killed_by == "file_size"
    assert (tmp_path / "big.bin").stat().st_size == 1024 * 1024
    script = (
        "files = []\n"
        "try:\n"
        "    for i in range(200): files.append(open('/dev/null'))\n"
        "except OSError as e:\n"
        "    print(len(files), e.errno)\n"
    )
    many = await sandbox(open_files=32).run([PY, "-c", script], tmp_path)
    opened, errno = many.stdout.split()
    assert int(opened) < 32 and int(errno) == 24  # EMFILE


async def test_stdin_and_exit_code_pass_through(tmp_path: Path) -> None:
    result = await sandbox().run(
        [PY, "-c", "import sys; data = sys.stdin.read(); print(data[::-1]); sys.exit(7)"],
        tmp_path,
        stdin=b"abc",
    )
    assert (result.exit_code, result.stdout, result.ok) == (7, "cba\n", False)


async def test_bad_requests_are_clear_errors(tmp_path: Path) -> None:
    box = sandbox()
    with pytest.raises(SandboxError, match="cannot execute 'no-such-binary'"):
        await box.run(["no-such-binary"], tmp_path)
    with pytest.raises(SandboxError, match="not a directory inside the workspace"):
        await box.run([PY, "-c", "pass"], tmp_path, cwd="../")
    with pytest.raises(SandboxError, match="is not a directory"):
        await box.run([PY, "-c", "pass"], tmp_path / "missing")
    with pytest.raises(SandboxError, match="argv is empty"):
        await box.run([], tmp_path)


async def test_host_processes_and_files_are_out_of_reach(tmp_path: Path) -> None:
    script = (
        "import os, json\n"
        "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        "try:\n"
        "    os.link('/etc/hostname', 'hostname-link'); linked = True\n"
        "except OSError:\n"
        "    linked = False\n"
        "print(json.dumps({'pids': len(pids), 'root': os.listdir('/root'), 'linked': linked}))\n"
    )
    result = await sandbox().run([PY, "-c", script], tmp_path)
    seen = json.loads(result.stdout)
    assert seen["pids"] <= 2  # the run's own processes only; the host has many
    assert len([p for p in os.listdir("/proc") if p.isdigit()]) > 10
    assert set(seen["root"]) <= {".pyenv"}  # the home is hidden; only the interpreter shows
    assert seen["linked"] is False  # no hard link to a host file across the mount


async def test_unread_stdin_does_not_stall_the_wall_clock(tmp_path: Path) -> None:
    started = time.monotonic()
    result = await sandbox(wall_seconds=1).run(
        [PY, "-c", "import time; time.sleep(60)"], tmp_path, stdin=b"x" * 10_000_000
    )
    assert result.killed_by == "wall_time"
    assert time.monotonic() - started < 3


async def test_the_workspace_is_given_back_to_the_caller(tmp_path: Path) -> None:
    result = await sandbox().run([PY, "-c", "import os; os.mkdir('d'); open('d/f', 'w')"], tmp_path)
    assert result.exit_code == 0 and result.uid is not None
    owners = {os.lstat(p).st_uid for p in (tmp_path, tmp_path / "d", tmp_path / "d" / "f")}
    assert owners == {os.geteuid()}


@pytest.fixture
def var_tmp() -> Iterator[Path]:
    """A directory outside /tmp (the run's /tmp is private, so that would prove nothing)."""
    directory = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="arbor-test-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


async def test_hidden_directories_and_files_are_empty_inside(var_tmp: Path) -> None:
    home = var_tmp / "arbor-home"
    workspace = home / "workspaces" / "run-1"
    workspace.mkdir(parents=True)
    (home / "arbor.db").write_text("keys")
    env_file = var_tmp / "services.env"
    env_file.write_text("REDIS_PASSWORD=hunter2")
    config = SandboxConfig(hide=(*SandboxConfig().hide, str(home), str(env_file)))
    script = (
        "import os, json\n"
        f"print(json.dumps([os.listdir({str(home)!r}), open({str(env_file)!r}).read(),\n"
        f"                  os.listdir({str(var_tmp)!r})]))\n"
        "open('out.txt', 'w').write('still writable')\n"
    )
    result = await Sandbox(config).run([PY, "-c", script], workspace)
    assert result.exit_code == 0, result.stderr
    listing, env_text, siblings = json.loads(result.stdout)
    assert listing == ["workspaces"]  # only the path down to the workspace
    assert env_text == ""
    assert sorted(siblings) == ["arbor-home", "services.env"]  # the file is there, emptied
    assert (workspace / "out.txt").read_text() == "still writable"
    assert env_file.read_text() == "REDIS_PASSWORD=hunter2"  # the host's copy is untouched


async def test_an_unreachable_workspace_is_a_clear_error(var_tmp: Path) -> None:
    private = var_tmp / "private"
    (private / "ws").mkdir(parents=True)
    private.chmod(0o700)
    with pytest.raises(SandboxError, match="not searchable by others"):
        await sandbox().run([PY, "-c", "pass"], private / "ws")


async def test_a_system_tree_is_refused_as_workspace(tmp_path: Path) -> None:
    for bad in ("/", sys.prefix, "/root"):
        with pytest.raises(SandboxError, match="use a run directory"):
            await sandbox().run([PY, "-c", "pass"], bad)


async def test_cancelling_the_caller_kills_the_run(tmp_path: Path) -> None:
    uid = 4_000_000 + os.getpid() % 100_000
    box = Sandbox(SandboxConfig(uid=uid, gid=uid))
    script = "import os, time\nos.fork()\ntime.sleep(60)\n"
    task = asyncio.ensure_future(box.run([PY, "-c", script], tmp_path))
    for _ in range(100):  # until the run's processes exist
        await asyncio.sleep(0.05)
        if len(processes_of(uid)) == 2:
            break
    assert len(processes_of(uid)) == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert processes_of(uid) == []
    assert os.lstat(tmp_path).st_uid == os.geteuid()


@pytest.fixture
def tmp_tools() -> Iterator[Path]:
    """A directory under the host's /tmp, as a checkout's .venv there would be."""
    tools = Path(tempfile.mkdtemp(dir="/tmp", prefix="arbor-venv-"))
    tools.chmod(0o755)
    (tools / "marker.txt").write_text("interpreter files")
    (tools / "marker.txt").chmod(0o644)
    yield tools
    shutil.rmtree(tools)


async def test_an_exposed_directory_under_tmp_is_bound_back_read_only(
    tmp_path: Path, tmp_tools: Path
) -> None:
    """A checkout under /tmp keeps its .venv usable inside the run's private /tmp."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    config = SandboxConfig(expose=(*SandboxConfig().expose, str(tmp_tools)))
    script = (
        f"print(open({str(tmp_tools / 'marker.txt')!r}).read())\n"
        "try:\n"
        f"    open({str(tmp_tools / 'new.txt')!r}, 'w')\n"
        "except OSError as exc:\n"
        "    print('refused', exc.errno)\n"
    )
    result = await Sandbox(config).run([PY, "-c", script], workspace)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["interpreter files", "refused 30"]  # EROFS
    assert not (tmp_tools / "new.txt").exists()
