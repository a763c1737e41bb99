"""The LLMClient pipeline with in-process test doubles (no HTTP)."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from arbor.core.clock import FakeClock
from arbor.core.config import Settings
from arbor.core.errors import (
    BudgetExceededError,
    CircuitOpenError,
    ContextTooLongError,
    LLMTimeoutError,
    ProviderConnectionError,
    ProviderHTTPError,
    RateLimitedError,
    UnknownModelError,
)
from arbor.core.metrics import Metrics
from arbor.core.tracing import make_tracer
from arbor.llm.client import LLMClient
from arbor.llm.types import CallContext, ChatRequest, Message
from arbor.llm.usage import MemoryUsageSink
from arbor.testing import FunctionModel, ScriptedModel


def _settings(**llm: object) -> Settings:
    base: dict[str, object] = {"cache": {"enabled": False}}
    base.update(llm)
    return Settings(llm=base)


def _client(models: dict[str, object], settings: Settings | None = None, **kw: object) -> LLMClient:
    return LLMClient(
        settings or _settings(),
        models=models,
        clock=kw.pop("clock", FakeClock()),
        **kw,  # type: ignore[arg-type]
    )


def _req(model: str = "test:a", text: str = "hi", **kw: object) -> ChatRequest:
    return ChatRequest(model=model, messages=[Message.user(text)], **kw)  # type: ignore[arg-type]


def _http(status: int, retry_after: float | None = None) -> ProviderHTTPError:
    cls = RateLimitedError if status == 429 else ProviderHTTPError
    return cls(f"HTTP {status}", status_code=status, retry_after=retry_after)


async def test_429_twice_with_retry_after_then_ok_is_three_calls() -> None:
    clock = FakeClock()
    model = ScriptedModel([_http(429, 1.0), _http(429, 1.0), "ok"])
    async with _client({"test:a": model}, clock=clock) as client:
        reply = await client.complete(_req())
    assert reply.text == "ok"
    assert len(model.calls) == 3
    assert clock.sleeps == [1.0, 1.0]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_client_errors_are_not_retried(status: int) -> None:
    model = ScriptedModel([_http(status)])
    async with _client({"test:a": model}) as client:
        with pytest.raises(ProviderHTTPError) as err:
            await client.complete(_req())
    assert err.value.status_code == status
    assert len(model.calls) == 1


async def test_retries_stop_at_max_attempts() -> None:
    model = ScriptedModel([ProviderConnectionError("reset")] * 3)
    settings = _settings(retry={"max_attempts": 3, "base_delay": 0.01})
    async with _client({"test:a": model}, settings) as client:
        with pytest.raises(ProviderConnectionError):
            await client.complete(_req())
    assert len(model.calls) == 3


async def test_context_too_long_truncates_once_and_retries() -> None:
    model = ScriptedModel([ContextTooLongError("too long", status_code=400), "short enough"])
    history = [Message.system("sys")]
    for i in range(10):
        history += [Message.user(f"q{i}"), Message.assistant(f"a{i}")]
    history.append(Message.user("final question"))
    async with _client({"test:a": model}) as client:
        reply = await client.complete(ChatRequest(model="test:a", messages=history))
    assert reply.text == "short enough"
    retried = model.calls[1].messages
    assert retried[0].content == "sys" and retried[-1].content == "final question"
    assert len(retried) < len(history)


async def test_context_too_long_with_error_strategy_raises() -> None:
    model = ScriptedModel([ContextTooLongError("too long", status_code=400)])
    settings = _settings(retry={"on_context_too_long": "error"})
    async with _client({"test:a": model}, settings) as client:
        with pytest.raises(ContextTooLongError):
            await client.complete(
                ChatRequest(model="test:a", messages=[Message.user("a"), Message.user("b")])
            )


async def test_breaker_opens_rejects_without_calls_and_recovers() -> None:
    clock = FakeClock()
    calls = 0
    healthy = False

    def reply(_: ChatRequest) -> str:
        nonlocal calls
        calls += 1
        if not healthy:
            raise _http(503)
        return "fine"

    settings = _settings(retry={"max_attempts": 1}, breaker={"failure_threshold": 5})
    async with _client({"test:a": FunctionModel(reply)}, settings, clock=clock) as client:
        for _ in range(5):
            with pytest.raises(ProviderHTTPError):
                await client.complete(_req())
        assert calls == 5
        for _ in range(20):
            with pytest.raises(CircuitOpenError):
                await client.complete(_req())
        assert calls == 5  # nothing reached the model while open
        gauge = 'arbor_llm_breaker_state{model="a",provider="test"} 2.0'
        assert gauge in client.metrics.render().decode()
        healthy = True
        clock.advance(61)
        for _ in range(3):  # half-open trial calls close it again
            assert (await client.complete(_req())).text == "fine"
        assert client.breakers.state("test:a") == "closed"


async def test_fallback_skips_open_circuit_and_uses_next_model() -> None:
    primary = FunctionModel(lambda r: (_ for _ in ()).throw(_http(500)))
    backup = FunctionModel(lambda r: "from backup")
    settings = _settings(
        retry={"max_attempts": 2, "base_delay": 0.0},
        breaker={"failure_threshold": 2},
        fallbacks={"test:a": ["test:b"]},
    )
    async with _client({"test:a": primary, "test:b": backup}, settings) as client:
        first = await client.complete(_req())
        assert first.text == "from backup"
        assert len(primary.calls) == 2
        second = await client.complete(_req())
        assert second.text == "from backup"
        assert len(primary.calls) == 2  # open circuit skipped without a call


async def test_no_fallback_on_bad_request() -> None:
    primary = ScriptedModel([_http(400)])
    backup = ScriptedModel([])
    settings = _settings(fallbacks={"test:a": ["test:b"]})
    async with _client({"test:a": primary, "test:b": backup}, settings) as client:
        with pytest.raises(ProviderHTTPError):
            await client.complete(_req())
    assert backup.calls == []


async def test_total_timeout_on_a_hung_model() -> None:
    async def hang(_: ChatRequest) -> str:
        await asyncio.sleep(3600)
        return "never"

    settings = _settings(timeouts={"total": 0.2}, retry={"max_attempts": 1})
    client = LLMClient(settings, models={"test:a": FunctionModel(hang)})
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(LLMTimeoutError):
        await client.complete(_req())
    assert loop.time() - start < 0.2 + 5  # slack for a loaded machine; the model hangs an hour
    await client.aclose()
    await asyncio.sleep(0)
    assert {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} == set()


async def test_usage_cost_and_metrics_are_recorded() -> None:
    sink = MemoryUsageSink()
    metrics = Metrics()
    settings = Settings(
        llm={"cache": {"enabled": False}, "prices": {"test:a": {"input": 1.0, "output": 2.0}}}
    )
    model = ScriptedModel(["a reply", _http(400)])
    client = _client({"test:a": model}, settings, usage_sink=sink, metrics=metrics)
    reply = await client.complete(_req(context=CallContext(key_id="k1", run_id="r1")))
    with pytest.raises(ProviderHTTPError):
        await client.complete(_req())
    await client.aclose()
    u = reply.usage
    assert reply.cost_usd == pytest.approx((u.input_tokens * 1.0 + u.output_tokens * 2.0) / 1e6)
    ok, failed = sink.records
    assert (ok.status, ok.key_id, ok.run_id, ok.cost_usd) == ("ok", "k1", "r1", reply.cost_usd)
    assert failed.status == "http"
    text = metrics.render().decode()
    assert 'arbor_llm_requests_total{model="a",provider="test",status="ok"} 1.0' in text
    assert 'arbor_llm_errors_total{kind="http",model="a",provider="test"} 1.0' in text


async def test_budget_blocks_calls_over_the_limit() -> None:
    settings = Settings(
        llm={"cache": {"enabled": False}, "prices": {"test:a": {"input": 1e6, "output": 1e6}}}
    )
    client = _client({"test:a": FunctionModel(lambda r: "x")}, settings)
    client.budgets.set_limit("key:k1", 0.5)
    with pytest.raises(BudgetExceededError):
        await client.complete(_req(context=CallContext(key_id="k1")))
    await client.aclose()


async def test_cache_hit_skips_the_model_and_replays_streams() -> None:
    model = ScriptedModel(["cached answer"])
    settings = Settings(llm={"cache": {"enabled": True, "disk": False}})
    async with _client({"test:a": model}, settings) as client:
        first = await client.complete(_req(temperature=0))
        second = await client.complete(_req(temperature=0))
        chunks = [c async for c in client.stream(_req(temperature=0))]
    assert not first.cached and second.cached and second.text == "cached answer"
    assert len(model.calls) == 1
    assert "".join(c.content or "" for c in chunks) == "cached answer"
    assert chunks[-1].usage is not None


async def test_sampling_requests_are_not_cached_unless_asked() -> None:
    model = ScriptedModel(["one", "two", "three"])
    settings = Settings(llm={"cache": {"enabled": True, "disk": False}})
    async with _client({"test:a": model}, settings) as client:
        assert (await client.complete(_req(temperature=0.7))).text == "one"
        assert (await client.complete(_req(temperature=0.7))).text == "two"
        assert (await client.complete(_req(temperature=0.7, cache=True))).text == "three"
        assert (await client.complete(_req(temperature=0.7, cache=True))).text == "three"


async def test_stream_yields_chunks_with_final_usage_and_cost() -> None:
    settings = Settings(
        llm={"cache": {"enabled": False}, "prices": {"test:a": {"input": 1.0, "output": 1.0}}}
    )
    sink = MemoryUsageSink()
    async with _client({"test:a": ScriptedModel(["a b c d e f"])}, settings, usage_sink=sink) as c:
        chunks = [ch async for ch in c.stream(_req())]
    assert "".join(ch.content or "" for ch in chunks) == "a b c d e f"
    assert chunks[-1].usage is not None and chunks[-1].cost_usd
    assert len(sink.records) == 1 and sink.records[0].status == "ok"


async def test_stream_retries_before_first_chunk() -> None:
    model = ScriptedModel([_http(503), "after retry"])
    async with _client({"test:a": model}) as client:
        text = "".join([c.content or "" async for c in client.stream(_req())])
    assert text == "after retry"
    assert len(model.calls) == 2


async def test_spans_carry_genai_attributes() -> None:
    exporter = InMemorySpanExporter()
    tracer = make_tracer(processors=[SimpleSpanProcessor(exporter)])
    async with _client({"test:a": ScriptedModel(["traced"])}, tracer=tracer) as client:
        await client.complete(_req(max_tokens=5))
    (span,) = exporter.get_finished_spans()
    attrs = dict(span.attributes or {})
    assert span.name == "chat a"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "a"
    assert attrs["gen_ai.request.max_tokens"] == 5
    assert attrs["gen_ai.usage.output_tokens"] > 0


async def test_two_clients_are_independent() -> None:
    a = _client({"test:a": ScriptedModel(["x"])})
    b = _client({"test:a": ScriptedModel(["y"])})
    assert (await a.complete(_req())).text == "x"
    assert (await b.complete(_req())).text == "y"
    assert a.metrics.registry is not b.metrics.registry
    await a.aclose()
    await b.aclose()


async def test_per_key_limits_apply_only_to_that_key() -> None:
    from arbor.core.config import ModelLimits

    clock = FakeClock()
    model = FunctionModel(lambda r: "ok")
    async with _client({"test:a": model}, clock=clock) as client:
        client.set_key_limits("k1", ModelLimits(rpm=2))
        for _ in range(5):  # no key: no limit, no waiting
            await client.complete(_req())
        assert clock.sleeps == []
        start = clock.monotonic()
        for _ in range(3):
            await client.complete(_req(context=CallContext(key_id="k1")))
        assert clock.monotonic() - start >= 59.0  # the third call waited for the window
        assert len(model.calls) == 8


async def test_model_limits_from_settings_hold_calls_back() -> None:
    clock = FakeClock()
    settings = _settings(limits={"test:*": {"rpm": 3}})
    async with _client({"test:a": FunctionModel(lambda r: "ok")}, settings, clock=clock) as c:
        for _ in range(6):
            await c.complete(_req())
    assert clock.monotonic() - 1_000.0 >= 59.0


async def test_arbitrary_model_ids_keep_per_model_state_bounded() -> None:
    """A caller naming a new model id per request must not grow memory or metric labels."""
    settings = Settings(
        default_model="test:main",
        llm={
            "cache": {"enabled": False},
            "max_models": 4,
            "prices": {"test:priced": {"input": 1, "output": 1}},
        },
    )
    metrics = Metrics(max_models=5)
    client = LLMClient(settings, metrics=metrics, clock=FakeClock())
    client.registry.register("test", lambda name: FunctionModel(lambda r: name, name=name))
    for i in range(60):
        reply = await client.complete(_req(f"test:random-{i}"))
        assert reply.text == f"random-{i}"
    await client.complete(_req("test:main"))
    assert len(client._parts.runners) <= 4 and len(client.registry._models) <= 4
    text = metrics.render().decode()
    assert 'model="random-4"' in text and 'model="random-5"' not in text
    assert 'model="other",provider="test",status="ok"} 55.0' in text
    assert 'model="main",provider="test",status="ok"} 1.0' in text  # configured: own label
    await client.aclose()


async def test_allowed_models_refuse_unlisted_ids() -> None:
    settings = Settings(
        default_model="test:main",
        llm={"cache": {"enabled": False}, "allowed_models": ["test:ok-*"]},
    )
    client = LLMClient(settings, clock=FakeClock())
    client.registry.register("test", lambda name: FunctionModel(lambda r: name, name=name))
    assert (await client.complete(_req("test:ok-1"))).text == "ok-1"
    assert (await client.complete(_req("test:main"))).text == "main"
    with pytest.raises(UnknownModelError, match="not allowed"):
        await client.complete(_req("test:nope"))
    await client.aclose()


async def test_a_keys_limits_span_every_model_it_calls() -> None:
    """Switching model ids must not buy a key a fresh requests/min allowance."""
    from arbor.core.config import ModelLimits

    clock = FakeClock()
    models = {f"test:{n}": FunctionModel(lambda r: "ok") for n in "abc"}
    async with _client(models, clock=clock) as client:
        client.set_key_limits("k1", ModelLimits(rpm=2))
        start = clock.monotonic()
        await client.complete(_req("test:a", context=CallContext(key_id="k1")))
        await client.complete(_req("test:b", context=CallContext(key_id="k1")))
        assert clock.monotonic() == start
        await client.complete(_req("test:c", context=CallContext(key_id="k1")))
        assert clock.monotonic() - start >= 59.0  # the third call, on a third model, waited
