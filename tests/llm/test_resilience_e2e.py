"""The whole pipeline over real HTTP against the mock upstream (loopback only)."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from arbor.core.clock import FakeClock
from arbor.core.config import Settings
from arbor.core.errors import (
    ArborError,
    CircuitOpenError,
    LLMTimeoutError,
    ProviderHTTPError,
)
from arbor.core.logging import configure_logging
from arbor.llm.client import LLMClient
from arbor.llm.types import ChatRequest, Message
from arbor.llm.usage import MemoryUsageSink
from arbor.testing.mock_upstream import MockConfig, MockUpstream

API_KEY = "sk-e2e-secret-0123456789abcdef"


async def _mock(**knobs: Any) -> MockUpstream:
    server = MockUpstream(MockConfig(**knobs))
    await server.start()
    return server


def _settings(url: str, **llm: Any) -> Settings:
    base: dict[str, Any] = {"cache": {"enabled": False}}
    base.update(llm)
    return Settings(
        providers={"mock": {"base_url": url, "api_key": API_KEY}},  # type: ignore[dict-item]
        llm=base,
    )


def _req(text: str = "hello", **kw: Any) -> ChatRequest:
    return ChatRequest(model="mock:mock-1", messages=[Message.user(text)], **kw)


@pytest.fixture
async def mock() -> AsyncIterator[MockUpstream]:
    server = await _mock()
    yield server
    await server.stop()


async def test_plain_and_streamed_calls(mock: MockUpstream) -> None:
    async with LLMClient(_settings(mock.url)) as client:
        reply = await client.complete(_req("what is arbor"))
        chunks = [c async for c in client.stream(_req("what is arbor"))]
    assert reply.text.startswith("Mock reply")
    assert reply.usage.input_tokens > 0 and not reply.usage.estimated
    streamed = "".join(c.content or "" for c in chunks)
    assert streamed == reply.text
    assert chunks[-1].usage == reply.usage


async def test_400_is_one_upstream_call(mock: MockUpstream) -> None:
    async with LLMClient(_settings(mock.url)) as client:
        with pytest.raises(ProviderHTTPError) as err:
            await client.complete(_req("/status 400"))
    assert err.value.status_code == 400
    assert mock.stats.requests == 1


async def test_503_is_retried_up_to_max_attempts(mock: MockUpstream) -> None:
    settings = _settings(mock.url, retry={"max_attempts": 3, "base_delay": 0.01})
    async with LLMClient(settings) as client:
        with pytest.raises(ProviderHTTPError):
            await client.complete(_req("/status 503"))
    assert mock.stats.requests == 3


async def test_rate_limited_upstream_is_retried_after_retry_after() -> None:
    server = await _mock(rpm=60)  # one request per 1-second window
    try:
        async with LLMClient(_settings(server.url)) as client:
            loop = asyncio.get_running_loop()
            start = loop.time()
            await client.complete(_req("one"))
            await client.complete(_req("two"))  # 429 + Retry-After: 1, then OK
            elapsed = loop.time() - start
        assert server.stats.by_status.get("429", 0) >= 1
        assert server.stats.by_status["200"] == 2
        assert elapsed >= 0.5
    finally:
        await server.stop()


async def test_hung_upstream_fails_within_timeout_and_leaks_no_tasks() -> None:
    server = await _mock(fail_rate=1.0, fail_mode="hang")
    try:
        settings = _settings(server.url, timeouts={"total": 1.0}, retry={"max_attempts": 1})
        client = LLMClient(settings)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(LLMTimeoutError):
            await client.complete(_req())
        assert loop.time() - start < 1.0 + 5  # slack for a loaded machine; the upstream hangs
        await client.aclose()
        await asyncio.sleep(0.05)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert [t for t in others if "arbor" in repr(t.get_coro())] == []
    finally:
        await server.stop()


async def test_breaker_sends_nothing_while_open(mock: MockUpstream) -> None:
    settings = _settings(
        mock.url, retry={"max_attempts": 1}, breaker={"failure_threshold": 5, "reset_timeout": 30}
    )
    # The breaker's time is a test clock: it stays open for the 50 calls however slowly a
    # loaded machine makes them, and reopens for trials when the test says.
    clock = FakeClock()
    async with LLMClient(settings, clock=clock) as client:
        for _ in range(5):
            with pytest.raises(ProviderHTTPError):
                await client.complete(_req("/status 500"))
        assert mock.stats.requests == 5
        for _ in range(50):
            with pytest.raises(CircuitOpenError):
                await client.complete(_req("fine"))
        assert mock.stats.requests == 5
        clock.advance(31)
        for _ in range(3):  # half-open trials succeed and close it
            await client.complete(_req("fine"))
        assert client.breakers.state("mock:mock-1") == "closed"
        assert mock.stats.requests == 8


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["500", "disconnect"])
async def test_2000_calls_with_30pct_faults_are_all_accounted_for(mode: str) -> None:
    server = await _mock(fail_rate=0.3, fail_mode=mode, seed=7)
    sink = MemoryUsageSink()
    # Failures here are random and independent, so consecutive-failure breaking would trip
    # on noise; the breaker has its own tests.
    settings = _settings(
        server.url,
        retry={"max_attempts": 8, "base_delay": 0.001, "max_delay": 0.01},
        breaker={"failure_threshold": 1000},
    )
    outcomes: dict[str, int] = {"ok": 0, "error": 0}
    try:
        async with LLMClient(settings, usage_sink=sink) as client:
            sem = asyncio.Semaphore(50)

            async def one(i: int) -> None:
                async with sem:
                    try:
                        await client.complete(_req(f"item {i}"))
                        outcomes["ok"] += 1
                    except ArborError:
                        outcomes["error"] += 1

            await asyncio.gather(*(one(i) for i in range(2000)))
        stats = server.stats
    finally:
        await server.stop()
    assert outcomes["ok"] + outcomes["error"] == 2000
    assert outcomes["ok"] >= 0.99 * 2000
    assert len(sink.records) == 2000  # one usage record per call, success or not
    assert sum(r.status == "ok" for r in sink.records) == outcomes["ok"]
    assert stats.requests > 2000  # faults were really injected and retried


async def test_no_secret_reaches_the_logs(mock: MockUpstream) -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", secrets=[API_KEY], stream=stream)
    try:
        settings = _settings(mock.url, retry={"max_attempts": 2, "base_delay": 0.0})
        async with LLMClient(settings) as client:
            await client.complete(_req("hi"))
            for status in ("401", "500"):
                with pytest.raises(ProviderHTTPError) as err:
                    await client.complete(_req(f"/status {status}"))
                assert API_KEY not in str(err.value) and API_KEY not in err.value.body
                logging.getLogger("arbor.test").error("call failed: %r %s", err.value, API_KEY)
    finally:
        root = logging.getLogger()
        for h in list(root.handlers):
            if getattr(h, "_arbor", False):
                root.removeHandler(h)
    out = stream.getvalue()
    assert "llm.retry" in out  # the run really logged
    assert API_KEY not in out
    assert API_KEY[:12] not in out
