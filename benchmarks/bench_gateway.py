"""Gateway benchmark: Arbor's server vs LiteLLM's proxy in front of the same mock upstream.

Three targets answer the same OpenAI-compatible requests: the mock upstream itself ("direct"),
``arbor serve`` and LiteLLM's proxy, each gateway forwarding to that mock; each runs in its own
process with one worker and no response cache. One load generator (aiohttp, keep-alive, in this
process) measures every target the same way, in rounds that take the targets in turn:

- sequential non-streaming latency → added p50 = gateway p50 - direct p50;
- throughput with 50 requests in flight for a fixed time, the median of the rounds (plus the
  gateway's CPU per request, read from /proc, which does not depend on how the load
  generator shares the cores);
- streaming time to first content chunk → added TTFT = gateway TTFT p50 - direct TTFT p50.

Usage::

    arbor bench gateway --out benchmarks/results/gateway.json [--quick] [--only direct,arbor]

Output follows the "Benchmark output" shape in INTERFACES.md; targets come from this run.
Nothing leaves loopback: LiteLLM reads its bundled cost map (``LITELLM_LOCAL_MODEL_COST_MAP``),
has telemetry off and no database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp

MODEL = "mock-1"
CHUNKS = 16
CONCURRENCY = 50
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Name three prime numbers and explain why they are prime."},
]
TARGETS = ("direct", "arbor", "litellm")
Session = aiohttp.ClientSession
Figures = dict[str, dict[str, float]]  # target name -> figure name -> value
SRC = Path(__file__).resolve().parents[1] / "src"
NOTE = (
    "All processes share this machine's {cpus} CPU(s): the load generator competes with the "
    "gateway and the mock upstream for cores, so absolute throughput is lower than on a "
    "dedicated client machine. The same generator drives every target, in rounds that take "
    "the targets in turn, so the ratios are fair; throughput is the median round. "
    "gateway_cpu_us_per_request is the gateway process's own CPU time under load, which "
    "does not depend on how the cores are shared."
)


class BenchError(RuntimeError):
    """A target failed to start or answered wrongly; the benchmark stops with this message."""


@dataclass(frozen=True, slots=True)
class Target:
    """One endpoint under test: where to send requests, as which model, with which key."""

    name: str
    base_url: str  # ``http://HOST:PORT/v1``
    model: str
    key: str
    pid: int | None = None  # the gateway process, for its CPU time

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}

    def body(self, *, stream: bool) -> bytes:
        data: dict[str, Any] = {"model": self.model, "messages": MESSAGES}
        if stream:
            data |= {"stream": True, "stream_options": {"include_usage": True}}
        return json.dumps(data).encode()


# ---- processes ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Poll ``url`` until it answers 200; fail with the log's tail if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{log.stem} exited ({proc.returncode}) before ready:\n{_tail(log)}")
        with contextlib.suppress(OSError, urllib.error.URLError):
            with urllib.request.urlopen(url, timeout=1) as r:  # loopback only
                if r.status == 200:
                    return
        time.sleep(0.1)
    raise BenchError(f"{log.stem}: {url} not ready within {timeout:.0f}s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def _process(
    cmd: list[str],
    env: dict[str, str],
    cwd: Path,
    log: Path,
    ready_url: str,
    timeout: float,
    stop: signal.Signals = signal.SIGTERM,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server, wait for ``ready_url``, and stop it with ``stop`` (then kill) on exit."""
    with log.open("wb") as out:
        try:
            proc = subprocess.Popen(
                cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        except OSError as exc:
            raise BenchError(f"cannot start {cmd[0]}: {exc}") from exc
    try:
        _wait_ready(ready_url, proc, log, timeout)
        yield proc
    finally:
        proc.send_signal(stop)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _clean_env() -> dict[str, str]:
    """This environment without Arbor's, LiteLLM's or database settings (the tests' services
    must not leak into a server under test), and with nothing that could reach the network."""
    drop = ("ARBOR_", "LITELLM_", "DATABASE_URL", "REDIS_", "OPENAI_", "PROMETHEUS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    return env


@contextlib.contextmanager
def litellm_proxy(upstream: str, work: Path) -> Iterator[Target]:
    """LiteLLM's proxy, one uvicorn worker, no cache, no database, telemetry off, a master key
    (so it authenticates like Arbor does) and no access log (its quietest configuration)."""
    port, key = _free_port(), "sk-bench-" + secrets.token_hex(16)
    config = work / "litellm.yaml"
    config.write_text(
        json.dumps(  # JSON is YAML; no yaml writer needed
            {
                "model_list": [
                    {
                        "model_name": MODEL,
                        "litellm_params": {
                            "model": f"openai/{MODEL}",
                            "api_base": upstream,
                            "api_key": "sk-upstream",
                        },
                    }
                ],
                "litellm_settings": {"cache": False, "telemetry": False, "num_retries": 0},
                "general_settings": {"master_key": key},
            },
            indent=2,
        )
    )
    log_config = work / "litellm-logging.json"
    log_config.write_text(
        json.dumps(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "loggers": {
                    "uvicorn": {"level": "WARNING"},
                    "uvicorn.access": {"level": "WARNING", "propagate": False},
                },
            }
        )
    )
    env = _clean_env() | {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true",
        "NO_DOCKER": "1",
    }
    exe = shutil.which("litellm", path=str(Path(sys.executable).parent)) or shutil.which("litellm")
    if exe is None:
        raise BenchError("LiteLLM's proxy is not installed: `uv sync --group bench`")
    cmd = [exe, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--num_workers", "1", "--telemetry", "False", "--log_config", str(log_config)]
    ready = f"http://127.0.0.1:{port}/health/liveliness"
    with _process(cmd, env, work, work / "litellm.log", ready, timeout=120) as proc:
        yield Target("litellm", f"http://127.0.0.1:{port}/v1", MODEL, key, proc.pid)


@contextlib.contextmanager
def arbor_server(upstream: str, work: Path, profile: Path | None = None) -> Iterator[Target]:
    """``arbor serve``: one worker, a fresh SQLite home, the ``openai:`` provider pointed at
    the mock, the LLM cache off, and a bootstrap admin key; under cProfile with ``profile``
    (the stats are written when the server exits on SIGTERM)."""
    port, key = _free_port(), "arbor-bench-" + secrets.token_hex(16)
    home = work / "arbor-home"
    home.mkdir()
    env = _clean_env() | {
        "ARBOR_HOME": str(home),
        "ARBOR_CONFIG": str(work / "arbor.toml"),  # absent: no repository config applies
        "ARBOR_HOST": "127.0.0.1",
        "ARBOR_PORT": str(port),
        "ARBOR_OPENAI_BASE_URL": upstream,
        "ARBOR_OPENAI_API_KEY": "sk-upstream",
        "ARBOR_ADMIN_KEY": key,
        "ARBOR_DEFAULT_MODEL": f"openai:{MODEL}",
        "ARBOR_LLM__CACHE__ENABLED": "false",
        "ARBOR_LOG_LEVEL": "warning",
    }
    prof = ["-m", "cProfile", "-o", str(profile.resolve())] if profile else []
    cmd = [sys.executable, *prof, "-m", "arbor.cli", "serve"]
    ready = f"http://127.0.0.1:{port}/healthz"
    # uvicorn re-raises SIGTERM after its graceful shutdown, which kills the process before
    # cProfile writes its stats; SIGINT ends it with KeyboardInterrupt, which cProfile survives.
    stop = signal.SIGINT if profile else signal.SIGTERM
    with _process(cmd, env, work, work / "arbor.log", ready, timeout=60, stop=stop) as proc:
        yield Target("arbor", f"http://127.0.0.1:{port}/v1", f"openai:{MODEL}", key, proc.pid)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its threads (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# ---- the load generator ------------------------------------------------------------------
def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


async def _complete(session: Session, t: Target, body: bytes) -> None:
    try:
        async with session.post(
            t.base_url + "/chat/completions", data=body, headers=t.headers
        ) as r:
            payload = await r.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise BenchError(f"{t.name}: request failed: {type(exc).__name__}: {exc}") from exc
    if r.status != 200:
        raise BenchError(f"{t.name}: HTTP {r.status}: {payload[:300]!r}")
    if b'"choices"' not in payload:
        raise BenchError(f"{t.name}: not a chat completion: {payload[:300]!r}")


@dataclass(slots=True)
class _Samples:
    """Everything measured for one target, gathered over the rounds."""

    seq_ms: list[float] = field(default_factory=list)
    round_rps: list[float] = field(default_factory=list)
    loaded_ms: list[float] = field(default_factory=list)
    loaded_seconds: float = 0.0
    cpu_seconds: float = 0.0
    generator_cpu_seconds: float = 0.0
    ttft_ms: list[float] = field(default_factory=list)
    chunks: int = 0

    def figures(self, has_cpu: bool) -> dict[str, float]:
        c = CONCURRENCY
        out = {
            "seq_p50_ms": _pct(self.seq_ms, 50),
            "seq_p99_ms": _pct(self.seq_ms, 99),
            f"throughput_c{c}_rps": statistics.median(self.round_rps),
            f"throughput_c{c}_rps_min": min(self.round_rps),
            f"throughput_c{c}_rps_max": max(self.round_rps),
            f"c{c}_p50_ms": _pct(self.loaded_ms, 50),
            f"c{c}_p99_ms": _pct(self.loaded_ms, 99),
            f"c{c}_requests": float(len(self.loaded_ms)),
            "stream_ttft_p50_ms": _pct(self.ttft_ms, 50),
            "stream_ttft_p99_ms": _pct(self.ttft_ms, 99),
            "stream_content_chunks": self.chunks / len(self.ttft_ms),
            "generator_cpu_us_per_request": self.generator_cpu_seconds / len(self.loaded_ms) * 1e6,
        }
        if has_cpu:
            out["gateway_cpu_us_per_request"] = self.cpu_seconds / len(self.loaded_ms) * 1e6
        return out


async def _sequential(session: Session, t: Target, n: int, into: _Samples) -> None:
    body = t.body(stream=False)
    for _ in range(n):
        start = time.perf_counter()
        await _complete(session, t, body)
        into.seq_ms.append((time.perf_counter() - start) * 1000)


async def _throughput(session: Session, t: Target, seconds: float, into: _Samples) -> None:
    """``CONCURRENCY`` workers send back to back until the deadline; every answer is checked."""
    body = t.body(stream=False)
    done: list[float] = []

    async def worker(deadline: float) -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await _complete(session, t, body)
            done.append((time.perf_counter() - start) * 1000)

    cpu0, own0 = (_cpu_seconds(t.pid) if t.pid else 0.0), time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(worker(start + seconds) for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - start
    into.cpu_seconds += (_cpu_seconds(t.pid) if t.pid else 0.0) - cpu0
    into.generator_cpu_seconds += time.process_time() - own0
    into.round_rps.append(len(done) / elapsed)
    into.loaded_ms += done
    into.loaded_seconds += elapsed


async def _one_stream(session: Session, t: Target, body: bytes) -> tuple[float, int]:
    """Time to the first chunk carrying content, and the number of content chunks."""
    start = time.perf_counter()
    ttft, chunks, done = 0.0, 0, False
    async with session.post(t.base_url + "/chat/completions", data=body, headers=t.headers) as r:
        if r.status != 200:
            raise BenchError(f"{t.name}: stream HTTP {r.status}: {(await r.read())[:300]!r}")
        async for raw in r.content:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                continue
            choices = json.loads(data).get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                if not chunks:
                    ttft = (time.perf_counter() - start) * 1000
                chunks += 1
    if not done or not chunks:
        raise BenchError(f"{t.name}: stream ended without content or [DONE] ({chunks} chunks)")
    return ttft, chunks


async def _streaming(session: Session, t: Target, n: int, into: _Samples) -> None:
    body = t.body(stream=True)
    for _ in range(n):
        try:
            ttft, chunks = await _one_stream(session, t, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BenchError(f"{t.name}: stream failed: {type(exc).__name__}: {exc}") from exc
        into.ttft_ms.append(ttft)
        into.chunks += chunks


async def _warm(session: Session, t: Target, n: int) -> None:
    """Connections open, code paths imported and caches filled before anything is timed."""
    body, scratch = t.body(stream=False), _Samples()
    await asyncio.gather(*(_complete(session, t, body) for _ in range(CONCURRENCY)))
    await _sequential(session, t, n, scratch)
    await _streaming(session, t, max(1, n // 4), scratch)


async def measure(targets: list[Target], n: dict[str, float]) -> Figures:
    """Every measurement of every target, in rounds that take the targets in turn (a
    different one first each round), so a burst of load from elsewhere on the machine is
    spread over all of them instead of landing on one. One keep-alive session per target."""
    rounds = max(1, int(n["rounds"]))
    samples = {t.name: _Samples() for t in targets}
    timeout = aiohttp.ClientTimeout(total=60)
    async with contextlib.AsyncExitStack() as stack:
        sessions = {}
        for t in targets:
            connector = aiohttp.TCPConnector(limit=CONCURRENCY)
            session = Session(connector=connector, timeout=timeout)
            sessions[t.name] = await stack.enter_async_context(session)
            await _warm(sessions[t.name], t, int(n["warmup"]))

        def turns(r: int) -> list[Target]:
            k = r % len(targets)
            return targets[k:] + targets[:k]

        for phase in ("seq", "tp", "stream"):
            for r in range(rounds):
                for t in turns(r):
                    gc.collect()
                    session, into = sessions[t.name], samples[t.name]
                    if phase == "seq":
                        await _sequential(session, t, int(n["seq"]) // rounds, into)
                    elif phase == "tp":
                        await _throughput(session, t, n["tp_seconds"] / rounds, into)
                    else:
                        await _streaming(session, t, int(n["stream"]) // rounds, into)
            print(f"bench gateway: {phase} done", file=sys.stderr, flush=True)
    return {
        t.name: {k: round(v, 4) for k, v in samples[t.name].figures(t.pid is not None).items()}
        for t in targets
    }


# ---- the run -----------------------------------------------------------------------------
def _targets(c: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    rows: list[tuple[str, float, str, float]] = []
    tp, ttft = f"throughput_c{CONCURRENCY}_rps", "stream_ttft_p50_ms"
    if "arbor" in c and "litellm" in c:
        ratio = c["arbor"][tp] / c["litellm"][tp]
        rows.append((f"throughput_c{CONCURRENCY}_vs_litellm", ratio, ">=", 4.0))
    if "arbor" in c and "direct" in c:
        a, d = c["arbor"], c["direct"]
        rows.append(("added_p50_ms", a["seq_p50_ms"] - d["seq_p50_ms"], "<=", 1.5))
        rows.append(("added_stream_ttft_ms", a[ttft] - d[ttft], "<=", 2.0))
    return [
        {
            "name": name,
            "value": round(value, 4),
            "op": op,
            "limit": limit,
            "met": value <= limit if op == "<=" else value >= limit,
        }
        for name, value, op, limit in rows
    ]


def _added(c: Figures) -> None:
    """Each gateway's added latency over direct, and Arbor's CPU per request against
    LiteLLM's (how many Arbor requests one LiteLLM request's CPU pays for), next to the raw
    figures."""
    if "arbor" in c and "litellm" in c:
        cpu = "gateway_cpu_us_per_request"
        c["arbor"]["cpu_per_request_vs_litellm"] = round(c["litellm"][cpu] / c["arbor"][cpu], 4)
    d = c.get("direct")
    for name in ("arbor", "litellm"):
        if d is not None and name in c:
            g = c[name]
            g["added_p50_ms"] = round(g["seq_p50_ms"] - d["seq_p50_ms"], 4)
            g["added_stream_ttft_ms"] = round(g["stream_ttft_p50_ms"] - d["stream_ttft_p50_ms"], 4)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


@contextlib.contextmanager
def _target(name: str, upstream: str, work: Path, profile: Path | None) -> Iterator[Target]:
    if name == "arbor":
        with arbor_server(upstream, work, profile) as target:
            yield target
    elif name == "litellm":
        with litellm_proxy(upstream, work) as target:
            yield target
    else:
        yield Target("direct", upstream, MODEL, "sk-upstream")


def _loop_run(coro: Coroutine[Any, Any, Figures]) -> Figures:
    """uvloop when installed (a cheaper generator leaves more CPU to the servers), else
    asyncio; the same loop drives every target either way."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _start_all(
    starting: list[contextlib.AbstractContextManager[Target]], stack: contextlib.ExitStack
) -> list[Target]:
    """Start the targets side by side (each waits for its own readiness in a thread, so the
    slow imports overlap) and leave every started one for ``stack`` to stop. All stay up
    for the whole run: idle, a gateway takes no measurable CPU."""
    failure: Exception | None = None
    targets = []
    with ThreadPoolExecutor(max_workers=len(starting)) as pool:
        futures = [pool.submit(cm.__enter__) for cm in starting]
        for cm, future in zip(starting, futures, strict=True):
            try:
                targets.append(future.result())
            except Exception as exc:  # still collect the others, so each one is stopped
                failure = failure or exc
            else:
                stack.push(cm.__exit__)
    if failure is not None:
        raise failure
    return targets


def run(quick: bool, only: list[str] | None, profile: Path | None = None) -> dict[str, Any]:
    from arbor.testing.mock_upstream import spawn_mock_upstream

    n: dict[str, float] = (
        {"rounds": 1, "warmup": 10, "seq": 60, "tp_seconds": 1.0, "stream": 20}
        if quick
        else {"rounds": 5, "warmup": 200, "seq": 2000, "tp_seconds": 15.0, "stream": 500}
    )
    names = [name for name in TARGETS if not only or name in only]
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="arbor-bench-gw-")))
        upstream = stack.enter_context(spawn_mock_upstream(chunks=CHUNKS))
        print(f"bench gateway: starting {', '.join(names)}", file=sys.stderr, flush=True)
        targets = _start_all([_target(name, upstream, tmp, profile) for name in names], stack)
        clients = _loop_run(measure(targets, n))
    _added(clients)
    cpus = os.cpu_count()
    return {
        "bench": "gateway",
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": cpus, "python": platform.python_version()},
        "versions": {d: _version(d) for d in ("arbor", "litellm", "aiohttp", "uvicorn", "fastapi")},
        "settings": n | {"concurrency": CONCURRENCY, "stream_chunks": CHUNKS, "model": MODEL},
        "note": NOTE.format(cpus=cpus),
        "clients": clients,
        "targets": _targets(clients),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="a smoke run: few requests")
    parser.add_argument("--only", nargs="*", choices=TARGETS, help="a subset of the targets")
    parser.add_argument(
        "--profile-arbor", type=Path, help="run arbor serve under cProfile, stats to this file"
    )
    args = parser.parse_args()
    try:
        result = run(args.quick, args.only, args.profile_arbor)
    except BenchError as exc:
        print(f"bench gateway: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, figures in result["clients"].items():
        shown = ", ".join(f"{k}={v}" for k, v in figures.items())
        print(f"{name:8s} {shown}")
    for t in result["targets"]:
        mark = "met" if t["met"] else "MISSED"
        print(f"{t['name']:40s} {t['value']:>10} {t['op']} {t['limit']:<6} {mark}")


if __name__ == "__main__":
    main()
