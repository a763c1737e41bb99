"""The official ``openai`` SDK, sync and async, against a real server: uvicorn serving the app
on a loopback socket (in a thread with its own event loop), the mock upstream in its own
process as the provider. Also shows streams really are incremental over the wire."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn
from _openai import UPSTREAM_KEY, echo_or_review, provider_settings

from arbor.core.config import ProviderSettings, load_settings
from arbor.service.app import create_app
from arbor.service.context import open_context
from arbor.store.agents import AgentRepository
from arbor.testing import FunctionModel
from arbor.testing.mock_upstream import MockConfig, MockUpstream, spawn_mock_upstream

MODEL = "mock:mock-1"
#: The slow upstream's stream: 200 chunks 50 ms apart, 10 s, longer than any stall of a
#: loaded machine, so "still sending" and "stopped early" cannot be confused.
SLOW_CHUNKS = 200
HELLO: Any = [{"role": "user", "content": "What does a gateway add to a call?"}]


@dataclass
class LiveServer:
    """The app under uvicorn on ``127.0.0.1:<free port>``, with an admin key and an agent."""

    settings: Any
    #: A slow upstream served on the server's own loop (``slow:`` provider), whose
    #: in-flight count shows whether a client's hang-up reaches it.
    slow_mock: MockUpstream | None = None
    port: int = 0
    key: str = ""
    error: BaseException | None = None
    _server: uvicorn.Server | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        self._ready.wait(30)
        while not (self._server is not None and self._server.started):
            if self.error is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {self.error!r}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)

    def _run(self, sock: socket.socket) -> None:
        try:
            asyncio.run(self._main(sock))
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    async def _main(self, sock: socket.socket) -> None:
        models = {"test:echo": FunctionModel(echo_or_review, name="echo")}
        self.slow_mock = MockUpstream(MockConfig(port=0, chunks=SLOW_CHUNKS, chunk_delay_ms=50))
        await self.slow_mock.start()
        slow = ProviderSettings(base_url=self.slow_mock.url)
        providers = {**self.settings.providers, "slow": slow}
        settings = self.settings.model_copy(update={"providers": providers})
        ctx = await open_context(settings, models=models)
        try:
            self.key = (await ctx.keys.create("sync-sdk", scopes=["admin"])).key
            await AgentRepository(ctx.db).create(
                "helper", {"instructions": "Answer {{ task }}", "model": "test:echo"}
            )
            config = uvicorn.Config(create_app(ctx), log_level="warning", access_log=False)
            self._server = uvicorn.Server(config)
            self._ready.set()
            await self._server.serve(sockets=[sock])
        finally:
            await ctx.aclose()
            await self.slow_mock.stop()


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with spawn_mock_upstream(chunks=10, chunk_delay_ms=40) as url:
        yield url


@pytest.fixture(scope="module")
def live(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home: Path = tmp_path_factory.mktemp("live")
    settings = load_settings(
        home=home,
        database_url=f"sqlite+aiosqlite:///{home / 'live.db'}",
        default_model="test:echo",
        **provider_settings(upstream_url),
    )
    server = LiveServer(settings)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sdk(live: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=live.key, base_url=live.base_url, max_retries=0) as client:
        yield client


def test_sync_plain_and_streamed_agree(sdk: openai.OpenAI) -> None:
    plain = sdk.chat.completions.create(model=MODEL, messages=HELLO)
    text = plain.choices[0].message.content
    assert text is not None and text.startswith("Mock reply")
    stream = sdk.chat.completions.create(
        model=MODEL, messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage


def _upstream_done(mock: MockUpstream, within: float) -> float:
    """Seconds until ``mock`` has no request in flight (at most ``within``)."""
    started = time.perf_counter()
    while mock.in_flight and time.perf_counter() - started < within:
        time.sleep(0.01)
    return time.perf_counter() - started


def test_sync_stream_arrives_incrementally(live: LiveServer, sdk: openai.OpenAI) -> None:
    """The slow upstream streams for 10 s: its first chunks must reach the client while it
    is still sending (a buffering gateway would deliver them all at once, at the end)."""
    assert live.slow_mock is not None
    received = 0
    with sdk.chat.completions.create(model="slow:mock-1", messages=HELLO, stream=True) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received += 1
                if received == 3:
                    break
        assert live.slow_mock.in_flight == 1  # still sending
    _upstream_done(live.slow_mock, 30)  # the hang-up ends it; the next test starts clean


def test_a_client_hanging_up_stops_the_upstream_stream(
    live: LiveServer, sdk: openai.OpenAI
) -> None:
    """The slow upstream streams for 10 s. Closing after the first content chunk must end
    the upstream request at once, not when the upstream finishes."""
    assert live.slow_mock is not None
    with sdk.chat.completions.create(model="slow:mock-1", messages=HELLO, stream=True) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        assert live.slow_mock.in_flight == 1
    took = _upstream_done(live.slow_mock, 8)
    assert live.slow_mock.in_flight == 0
    assert took < 5  # slack for a loaded machine; the upstream would go on for ~10 s


def test_sync_tools_models_embeddings_and_agents(sdk: openai.OpenAI) -> None:
    tools: Any = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    called = sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": '/tool lookup {"q": "x"}'}],
        tools=tools,
    )
    calls = called.choices[0].message.tool_calls
    assert calls is not None and calls[0].type == "function"
    assert calls[0].function.name == "lookup" and calls[0].function.arguments == '{"q": "x"}'
    ids = {m.id for m in sdk.models.list()}
    assert {MODEL, "agent:helper", "workflow:review-loop"} <= ids
    vectors = sdk.embeddings.create(model="mock:mock-embedding", input=["a", "b"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 16
    answer = sdk.chat.completions.create(model="agent:helper", messages=HELLO)
    assert answer.choices[0].message.content == f"echo: {HELLO[0]['content']}"
    streamed = sdk.chat.completions.create(model="agent:helper", messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == (
        answer.choices[0].message.content
    )


def test_sync_errors(live: LiveServer, sdk: openai.OpenAI) -> None:
    with openai.OpenAI(api_key="arb_wrong", base_url=live.base_url, max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="mock-1", messages=HELLO)
    with pytest.raises(openai.BadRequestError, match="base_url"):
        sdk.chat.completions.create(
            model=MODEL, messages=HELLO, extra_body={"base_url": "http://127.0.0.1:9/v1"}
        )
    with pytest.raises(openai.InternalServerError) as err:
        sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "/status 503"}]
        )
    assert err.value.status_code == 502 and UPSTREAM_KEY not in err.value.response.text


async def test_async_sdk_over_the_socket(live: LiveServer) -> None:
    async with openai.AsyncOpenAI(api_key=live.key, base_url=live.base_url, max_retries=0) as sdk:
        plain = await sdk.chat.completions.create(model=MODEL, messages=HELLO)
        stream = await sdk.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == plain.choices[0].message.content
