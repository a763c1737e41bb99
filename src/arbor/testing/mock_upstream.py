"""An OpenAI-compatible HTTP server with limits and injected faults, for tests and benchmarks.

Provider adapters, retries, rate limiters and breakers are only trustworthy when exercised
against real HTTP: real status codes, ``Retry-After`` headers, cut streams and connections that
never answer. This server gives that on loopback, deterministically (replies are a function of
the request, faults follow ``random.Random(seed)``), and fast enough (a bare aiohttp low-level
server, bytes bodies) never to be the bottleneck of a benchmark.

Endpoints: ``POST /v1/chat/completions`` (plain and streamed), ``POST /v1/embeddings``,
``GET /v1/models``; ``GET /_stats`` and ``POST /_reset`` for the test harness. The reply rules
are in :mod:`arbor.testing._mock_replies`.

Limits are enforced in 1-second windows (``rpm // 60`` requests and ``tpm // 60`` tokens, at
least 1, a window opening at the first request after the previous one ended; a request costs
its prompt + completion tokens, so one costing more than a window holds is always refused, like
OpenAI's "request too large"); over → 429 with ``Retry-After`` and ``x-ratelimit-*`` headers.

Faults hit the N-th completion/embeddings request when the N-th draw of the seeded RNG is below
``fail_rate``; the mode decides what the client sees.

In-process, :meth:`MockUpstream.hold` keeps every reply waiting until
:meth:`MockUpstream.release`, so a test can keep work in flight for as long as it needs
instead of betting that a fixed latency outlasts a loaded machine.

Run it as ``arbor mock-upstream``, ``python -m arbor.testing.mock_upstream``, in-process with
``async with MockUpstream(MockConfig(port=0)) as mock``, or in a subprocess with
``with spawn_mock_upstream(chunks=16) as base_url``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from arbor.testing._mock_replies import (
    MODELS_BODY,
    ChatPlan,
    ErrorReply,
    chat_completion_body,
    dumps,
    embeddings_body,
    loads,
    plan_chat,
    plan_embeddings,
    stream_frames,
)

__all__ = [
    "FAIL_MODES",
    "MockConfig",
    "MockStats",
    "MockUpstream",
    "main",
    "run",
    "spawn_mock_upstream",
]

FAIL_MODES: tuple[str, ...] = ("500", "429", "hang", "disconnect", "midstream")
_MODULE = "arbor.testing.mock_upstream"
_JSON = {"Content-Type": "application/json"}
_SSE = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


@dataclass(frozen=True, slots=True)
class MockConfig:
    """The knobs of ``arbor mock-upstream``; ``None`` limits mean unlimited."""

    host: str = "127.0.0.1"
    port: int = 0
    latency_ms: float = 0.0
    rpm: int | None = None
    tpm: int | None = None
    fail_rate: float = 0.0
    fail_mode: str = "500"
    seed: int = 0
    chunks: int = 8
    chunk_delay_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.fail_mode not in FAIL_MODES:
            raise ValueError(f"fail_mode must be one of {FAIL_MODES}, got {self.fail_mode!r}")
        if not 0.0 <= self.fail_rate <= 1.0:
            raise ValueError(f"fail_rate must be within [0, 1], got {self.fail_rate}")
        if self.chunks < 1:
            raise ValueError(f"chunks must be >= 1, got {self.chunks}")
        if self.latency_ms < 0 or self.chunk_delay_ms < 0:
            raise ValueError("latency_ms and chunk_delay_ms must be >= 0")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")

    def to_argv(self) -> list[str]:
        """Command-line arguments that rebuild this config in ``main``."""
        argv = ["--host", self.host, "--port", str(self.port), "--latency-ms", str(self.latency_ms)]
        argv += ["--fail-rate", str(self.fail_rate), "--fail-mode", self.fail_mode]
        argv += ["--seed", str(self.seed), "--chunks", str(self.chunks)]
        argv += ["--chunk-delay-ms", str(self.chunk_delay_ms)]
        argv += ["--rpm", str(self.rpm)] if self.rpm is not None else []
        argv += ["--tpm", str(self.tpm)] if self.tpm is not None else []
        return argv


@dataclass(frozen=True, slots=True)
class MockStats:
    """Counts since start or the last reset: ``by_status`` keys are HTTP statuses as strings,
    or ``"hang"``, ``"disconnect"``, ``"midstream"`` for the faults that send no status."""

    requests: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "by_status": dict(self.by_status)}


class _Windows:
    """Request and token budgets of the current 1-second window."""

    __slots__ = ("max_requests", "max_tokens", "requests", "rpm", "start", "tokens", "tpm")

    def __init__(self, rpm: int | None, tpm: int | None) -> None:
        self.rpm, self.tpm = rpm, tpm
        self.max_requests = max(1, rpm // 60) if rpm else None
        self.max_tokens = max(1, tpm // 60) if tpm else None
        self.start = -math.inf
        self.requests = self.tokens = 0

    def admit(self, tokens: int) -> tuple[str | None, dict[str, str]]:
        """``(None, headers)`` when admitted, else ``("requests"|"tokens", headers)``."""
        now = time.monotonic()
        if now - self.start >= 1.0:
            self.start, self.requests, self.tokens = now, 0, 0
        over = None
        if self.max_requests is not None and self.requests >= self.max_requests:
            over = "requests"
        elif self.max_tokens is not None and self.tokens + tokens > self.max_tokens:
            over = "tokens"
        else:
            self.requests += 1
            self.tokens += tokens
        reset = f"{max(1, round((self.start + 1.0 - now) * 1000))}ms"
        headers: dict[str, str] = {}
        if self.max_requests is not None:
            headers["x-ratelimit-limit-requests"] = str(self.rpm)
            headers["x-ratelimit-remaining-requests"] = str(self.max_requests - self.requests)
            headers["x-ratelimit-reset-requests"] = reset
        if self.max_tokens is not None:
            headers["x-ratelimit-limit-tokens"] = str(self.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, self.max_tokens - self.tokens))
            headers["x-ratelimit-reset-tokens"] = reset
        if over is not None:
            headers["Retry-After"] = "1"  # a window is 1 s, so the next one is at most 1 s away
        return over, headers


class MockUpstream:
    """The server, in-process: ``async with MockUpstream(MockConfig(port=0)) as m: m.url``."""

    def __init__(self, config: MockConfig | None = None) -> None:
        self.config = config or MockConfig()
        self._runner: web.ServerRunner | None = None
        self._port = 0
        self._closing = asyncio.Event()
        self._released = asyncio.Event()
        self._released.set()
        self._in_flight = 0
        self._seq = 0
        self._requests = 0
        self._by_status: Counter[str] = Counter()
        self._windows = _Windows(None, None)
        self._limited = False
        self._rng = random.Random()
        self.reset()
        self._routes = {
            "/v1/chat/completions": ("POST", self._chat),
            "/chat/completions": ("POST", self._chat),
            "/v1/embeddings": ("POST", self._embeddings),
            "/embeddings": ("POST", self._embeddings),
            "/v1/models": ("GET", self._models),
            "/models": ("GET", self._models),
            "/_stats": ("GET", self._stats_route),
            "/_reset": ("POST", self._reset_route),
        }

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (``port=0`` picks a free port) and return once connections are accepted."""
        if self._runner is not None:
            raise RuntimeError("MockUpstream is already started")
        self._closing = asyncio.Event()
        held, self._released = not self._released.is_set(), asyncio.Event()  # this loop's
        if not held:
            self._released.set()
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port, backlog=1024)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening; hanging requests are cut, streams get at most a second to finish."""
        runner, self._runner = self._runner, None
        if runner is not None:
            self._closing.set()
            self._released.set()
            await runner.cleanup()

    def hold(self) -> None:
        """Keep completion and embeddings replies waiting (after their latency) until
        :meth:`release`; a client that hangs up meanwhile cancels its request as usual."""
        self._released.clear()

    def release(self) -> None:
        """Answer the held requests and stop holding new ones."""
        self._released.set()

    async def __aenter__(self) -> MockUpstream:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def origin(self) -> str:
        host = self.config.host
        return f"http://[{host}]:{self._port}" if ":" in host else f"http://{host}:{self._port}"

    @property
    def url(self) -> str:
        """The base URL an OpenAI client takes (``.../v1``)."""
        return self.origin + "/v1"

    @property
    def stats(self) -> MockStats:
        return MockStats(self._requests, dict(self._by_status))

    @property
    def in_flight(self) -> int:
        """Requests being handled now; a test checks it drops to 0 after clients go away."""
        return self._in_flight

    def reset(self) -> None:
        """Back to the state at start: zero stats, fresh limit windows, the RNG re-seeded."""
        self._requests = 0
        self._by_status = Counter()
        self._windows = _Windows(self.config.rpm, self.config.tpm)
        self._limited = self.config.rpm is not None or self.config.tpm is not None
        self._rng = random.Random(self.config.seed)

    # -- request handling ------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        route = self._routes.get(request.path)
        if route is None:
            return _error(ErrorReply(404, f"Unknown path {request.path}", "invalid_request_error"))
        method, handler = route
        if request.method != method:
            message = f"Use {method} for {request.path}"
            return _error(ErrorReply(405, message, "invalid_request_error"))
        self._in_flight += 1
        try:
            return await handler(request)
        finally:
            self._in_flight -= 1

    async def _models(self, request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=MODELS_BODY, headers=_JSON)

    async def _stats_route(self, request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=dumps(self.stats.to_dict()), headers=_JSON)

    async def _reset_route(self, request: web.BaseRequest) -> web.StreamResponse:
        self.reset()
        return web.Response(body=dumps(self.stats.to_dict()), headers=_JSON)

    def _count(self, key: str) -> None:
        self._by_status[key] += 1

    async def _admit(self, request: web.BaseRequest) -> tuple[Any, bool, web.StreamResponse | None]:
        """Count, draw the fault, parse: ``(body, faulty, early_answer)``."""
        self._requests += 1
        faulty = self.config.fail_rate > 0 and self._rng.random() < self.config.fail_rate
        try:
            body = loads(await request.read())
        except ValueError:
            self._count("400")
            bad = ErrorReply(
                400, "We could not parse the JSON body of your request.", "invalid_request_error"
            )
            return None, faulty, _error(bad)
        return body, faulty, None

    def _limit(self, tokens: int) -> tuple[web.StreamResponse | None, dict[str, str] | None]:
        """The 429 answer when over a window's budget, else the rate-limit headers to send."""
        if not self._limited:
            return None, None
        over, headers = self._windows.admit(tokens)
        if over is None:
            return None, headers
        self._count("429")
        limit = self._windows.max_requests if over == "requests" else self._windows.max_tokens
        message = f"Rate limit reached for {over}: limit {limit} per 1s window. Try again in 1s."
        reply = ErrorReply(429, message, "rate_limit_exceeded", "rate_limit_exceeded")
        return _error(reply, headers), None

    async def _chat(self, request: web.BaseRequest) -> web.StreamResponse:
        body, faulty, early = await self._admit(request)
        if early is not None:
            return early
        plan = plan_chat(body)
        limited, headers = self._limit(plan.tokens if isinstance(plan, ChatPlan) else 0)
        if limited is not None:
            return limited
        if faulty:
            return await self._fault(request, plan if isinstance(plan, ChatPlan) else None)
        if self.config.latency_ms:
            await asyncio.sleep(self.config.latency_ms / 1000)
        await self._released.wait()
        if isinstance(plan, ErrorReply):
            self._count(str(plan.status))
            return _error(plan, headers)
        self._count("200")
        if plan.stream:
            return await self._stream(request, self._frames(plan), headers)
        self._seq += 1
        body_bytes = chat_completion_body(plan, f"chatcmpl-mock{self._seq}", int(time.time()))
        return web.Response(body=body_bytes, headers=_JSON if headers is None else headers | _JSON)

    async def _embeddings(self, request: web.BaseRequest) -> web.StreamResponse:
        body, faulty, early = await self._admit(request)
        if early is not None:
            return early
        plan = plan_embeddings(body)
        limited, headers = self._limit(0 if isinstance(plan, ErrorReply) else plan.tokens)
        if limited is not None:
            return limited
        if faulty:
            return await self._fault(request, None)
        if self.config.latency_ms:
            await asyncio.sleep(self.config.latency_ms / 1000)
        await self._released.wait()
        if isinstance(plan, ErrorReply):
            self._count(str(plan.status))
            return _error(plan, headers)
        self._count("200")
        body_bytes = embeddings_body(plan)
        return web.Response(body=body_bytes, headers=_JSON if headers is None else headers | _JSON)

    async def _stream(
        self,
        request: web.BaseRequest,
        frames: Sequence[bytes],
        headers: dict[str, str] | None,
        *,
        cut_after: int | None = None,
    ) -> web.StreamResponse:
        """Write SSE frames; with ``cut_after``, close the connection after that many."""
        response = web.StreamResponse(headers=_SSE if headers is None else headers | _SSE)
        delay = self.config.chunk_delay_ms / 1000
        try:
            await response.prepare(request)
            for i, frame in enumerate(frames):
                if cut_after is not None and i == cut_after:
                    _close(request)
                    return response
                if delay and i:
                    await asyncio.sleep(delay)
                await response.write(frame)
            await response.write_eof()
        except ConnectionError:  # the client went away mid-stream: nothing left to do
            pass
        return response

    def _frames(self, plan: ChatPlan) -> list[bytes]:
        self._seq += 1
        rid = f"chatcmpl-mock{self._seq}"
        return stream_frames(plan, rid, int(time.time()), self.config.chunks)

    async def _fault(self, request: web.BaseRequest, plan: ChatPlan | None) -> web.StreamResponse:
        """Answer as ``fail_mode`` says; ``plan`` is the reply a stream fault starts to send."""
        mode = self.config.fail_mode
        if mode == "500":
            self._count("500")
            return _error(ErrorReply(500, "Injected fault: internal server error.", "server_error"))
        if mode == "429":
            self._count("429")
            reply = ErrorReply(
                429,
                "Injected fault: rate limited.",
                "rate_limit_exceeded",
                "rate_limit_exceeded",
                retry_after=1,
            )
            return _error(reply)
        if mode == "hang":
            self._count("hang")
            # Cancelled by aiohttp when the client disconnects (handler_cancellation=True);
            # released by stop() otherwise, so nothing outlives the connection or the server.
            await self._closing.wait()
        elif mode == "midstream" and plan is not None and plan.stream:
            self._count("midstream")  # the role delta and half the content, then the cut
            cut = 1 + max(1, self.config.chunks // 2)
            return await self._stream(request, self._frames(plan), None, cut_after=cut)
        else:
            self._count(mode)  # "disconnect", or "midstream" on a non-stream request
        _close(request)
        return web.Response()  # never written: the transport is closed


def _close(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()


def _error(reply: ErrorReply, headers: dict[str, str] | None = None) -> web.Response:
    all_headers = _JSON if headers is None else headers | _JSON
    if reply.retry_after is not None:
        all_headers = all_headers | {"Retry-After": str(reply.retry_after)}
    return web.Response(status=reply.status, body=reply.body(), headers=all_headers)


# -- process entry points ------------------------------------------------------------------


async def _serve(config: MockConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows has no signal handlers
            loop.add_signal_handler(sig, stop.set)
    async with MockUpstream(config) as server:
        print(f"listening {server.origin}", flush=True)
        await stop.wait()


def run(config: MockConfig) -> None:
    """Serve until SIGINT/SIGTERM; prints ``listening http://HOST:PORT`` once accepting."""
    asyncio.run(_serve(config))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m {_MODULE}", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8901)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--rpm", type=int, default=None)
    p.add_argument("--tpm", type=int, default=None)
    p.add_argument("--fail-rate", type=float, default=0.0)
    p.add_argument("--fail-mode", choices=FAIL_MODES, default="500")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunks", type=int, default=8)
    p.add_argument("--chunk-delay-ms", type=float, default=0.0)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m arbor.testing.mock_upstream``: the CLI without the ``arbor`` command."""
    args = _parser().parse_args(argv)
    try:
        config = MockConfig(**vars(args))
    except ValueError as exc:
        _parser().error(str(exc))
    run(config)


@contextlib.contextmanager
def spawn_mock_upstream(
    *,
    host: str = "127.0.0.1",
    latency_ms: float = 0.0,
    rpm: int | None = None,
    tpm: int | None = None,
    fail_rate: float = 0.0,
    fail_mode: str = "500",
    seed: int = 0,
    chunks: int = 8,
    chunk_delay_ms: float = 0.0,
    startup_timeout: float = 20.0,
) -> Iterator[str]:
    """Run the server in its own process and yield its base URL (``http://HOST:PORT/v1``).

    A benchmark measures its client, not the server: a separate process keeps the mock off the
    client's event loop and CPU core. The process is terminated on exit.
    """
    config = MockConfig(
        host, 0, latency_ms, rpm, tpm, fail_rate, fail_mode, seed, chunks, chunk_delay_ms
    )
    src = str(Path(__file__).resolve().parents[2])  # so the child imports this very arbor
    path = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    # -W: runpy warns when arbor.testing's __init__ has already imported this module.
    cmd = [sys.executable, "-W", "ignore::RuntimeWarning:runpy", "-m", _MODULE, *config.to_argv()]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": path},
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=startup_timeout)
        except queue.Empty:
            raise RuntimeError(f"mock upstream did not start within {startup_timeout}s") from None
        if not line.startswith("listening "):
            raise RuntimeError(f"mock upstream failed to start (exit code {proc.poll()})")
        yield line.split(None, 1)[1].strip() + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


if __name__ == "__main__":
    main()
