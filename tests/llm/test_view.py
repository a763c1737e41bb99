"""Views of an LLMClient: fronts over the same pipeline parts that stamp call context on
requests and meter each call's usage through the pipeline's own accounting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from arbor.core.config import ModelLimits, Settings
from arbor.core.errors import BudgetExceededError, ProviderHTTPError
from arbor.core.tracing import make_tracer
from arbor.llm.client import LLMClient
from arbor.llm.ratelimit import TokenLimitError
from arbor.llm.types import CallContext, ChatRequest, EmbeddingRequest, Message, Usage
from arbor.llm.usage import MemoryUsageSink, UsageRecord
from arbor.testing import FunctionModel, ScriptedModel

LONG = "word " * 200
PRICES = {"test:a": {"input": 1.0, "output": 2.0}, "test:emb": {"input": 1.0, "output": 0.0}}


@dataclass
class EmbeddingFunctionModel(FunctionModel):
    """A FunctionModel that also embeds: one 1-d vector per text, 2 tokens per text."""

    embedded: list[list[str]] = field(default_factory=list)

    async def embed(
        self, inputs: list[str], *, dimensions: int | None = None
    ) -> tuple[list[list[float]], Usage]:
        self.embedded.append(list(inputs))
        return [[float(len(t))] for t in inputs], Usage(input_tokens=2 * len(inputs))


def _settings(**llm: object) -> Settings:
    return Settings(llm={"cache": {"enabled": False}, "prices": PRICES, **llm})


@pytest.fixture
def sink() -> MemoryUsageSink:
    return MemoryUsageSink()


@pytest.fixture
async def base(sink: MemoryUsageSink) -> AsyncIterator[LLMClient]:
    models = {
        "test:a": FunctionModel(lambda r: "ok"),
        "test:emb": EmbeddingFunctionModel(lambda r: "unused"),
    }
    async with LLMClient(_settings(), models=models, usage_sink=sink) as client:
        yield client


def _contexts(sink: MemoryUsageSink) -> list[tuple[str | None, ...]]:
    return [(r.key_id, r.agent_id, r.run_id, r.batch_id) for r in sink.records]


# ---- stamps -------------------------------------------------------------------------------
async def test_requests_carry_the_key_unless_they_name_one(
    base: LLMClient, sink: MemoryUsageSink
) -> None:
    model = base.model("test:a")
    assert isinstance(model, FunctionModel)
    keyed = base.view(key_id="key_1")
    await keyed.complete(model="test:a", messages="hi")
    own = ChatRequest(
        model="test:a", messages=[Message.user("hi")], context=CallContext(key_id="key_2")
    )
    await keyed.complete(own)
    chunks = [c async for c in keyed.stream(model="test:a", messages="hi")]
    assert chunks[-1].usage is not None
    await keyed.embed(model="test:emb", input="x")
    await keyed.embed(
        EmbeddingRequest(model="test:emb", input=["y"], context=CallContext(key_id="key_3"))
    )
    assert [c.context.key_id for c in model.calls] == ["key_1", "key_2", "key_1"]
    assert [r.key_id for r in sink.records] == ["key_1", "key_2", "key_1", "key_1", "key_3"]
    assert own.context.key_id == "key_2"  # the caller's request is never changed


async def test_a_view_fills_only_the_fields_a_request_leaves_empty(
    base: LLMClient, sink: MemoryUsageSink
) -> None:
    view = base.view(key_id="k", batch_id="b")
    named = CallContext(batch_id="own", agent_id="agent")
    await view.complete(ChatRequest(model="test:a", messages=[Message.user("x")], context=named))
    await view.complete(model="test:a", messages="y")
    await base.complete(model="test:a", messages="z")  # the base stamps nothing
    assert _contexts(sink) == [
        ("k", "agent", None, "own"),
        ("k", None, None, "b"),
        (None, None, None, None),
    ]


async def test_a_view_of_a_view_stamps_both(base: LLMClient, sink: MemoryUsageSink) -> None:
    keyed = base.view(key_id="k1")
    item = keyed.view(batch_id="b1", run_id="r1")
    rekeyed = item.view(key_id="k2")
    await item.complete(model="test:a", messages="x")
    await rekeyed.embed(model="test:emb", input="y")
    assert _contexts(sink) == [("k1", None, "r1", "b1"), ("k2", None, "r1", "b1")]
    assert item.context == CallContext(key_id="k1", run_id="r1", batch_id="b1")
    assert keyed.context == CallContext(key_id="k1")  # the inner view is unchanged
    assert base.context == CallContext()


# ---- one pipeline -------------------------------------------------------------------------
async def test_a_view_shares_every_part_of_its_base(base: LLMClient) -> None:
    view = base.view(key_id="k").view(batch_id="b")
    for part in ("settings", "clock", "metrics", "registry", "cache", "limiter", "breakers"):
        assert getattr(view, part) is getattr(base, part), part
    for part in ("budgets", "prices", "retry", "tracer", "usage_sink"):
        assert getattr(view, part) is getattr(base, part), part
    assert view.model("test:a") is base.model("test:a")


async def test_the_keys_limits_apply_and_are_set_on_the_shared_parts(base: LLMClient) -> None:
    keyed = base.view(key_id="key_1")
    keyed.view(batch_id="b").set_key_limits("key_1", ModelLimits(tpm=20))  # any front
    with pytest.raises(TokenLimitError):
        await keyed.complete(model="test:a", messages=LONG)
    reply = await base.complete(model="test:a", messages=LONG)  # no key, no key limit
    assert reply.message.content == "ok"
    assert base.key_limits("test:a", "key_1")[0][1].tpm == 20


async def test_a_call_through_a_view_counts_against_the_base_limits() -> None:
    settings = _settings(limits={"test:a": {"rpm": 1}})
    model = FunctionModel(lambda r: "ok")
    async with LLMClient(settings, models={"test:a": model}) as base:
        await base.view(batch_id="b").complete(model="test:a", messages="first")
        with pytest.raises(TimeoutError):  # the base waits for the next minute
            async with asyncio.timeout(0.3):
                await base.complete(model="test:a", messages="second")
    assert len(model.calls) == 1


async def test_a_call_through_a_view_spends_the_base_budget(base: LLMClient) -> None:
    base.budgets.set_limit("batch:b1", 1.0)
    view = base.view(batch_id="b1")
    reply = await view.complete(model="test:a", messages=LONG)
    assert reply.cost_usd > 0
    assert base.budgets.spent("batch:b1") == pytest.approx(reply.cost_usd)
    assert base.budgets.spent("global") == pytest.approx(reply.cost_usd)
    base.budgets.set_limit("batch:b1", reply.cost_usd)  # spent in full now
    with pytest.raises(BudgetExceededError):
        await base.view(batch_id="b1").complete(model="test:a", messages="more")
    assert (await base.complete(model="test:a", messages="more")).text == "ok"  # no batch


async def test_a_view_reads_and_fills_the_base_cache() -> None:
    model = ScriptedModel(["cached answer"])
    settings = Settings(llm={"cache": {"enabled": True, "disk": False}})
    async with LLMClient(settings, models={"test:a": model}) as base:
        req = ChatRequest(model="test:a", messages=[Message.user("q")], temperature=0)
        first = await base.view(key_id="k").complete(req)
        second = await base.complete(req)
        third = await base.view(batch_id="b").complete(req)
    assert not first.cached and second.cached and third.cached
    assert len(model.calls) == 1


async def test_closing_a_view_leaves_the_base_open(base: LLMClient) -> None:
    async with base.view(key_id="key_1") as view:
        assert (await view.complete(model="test:a", messages="x")).text == "ok"
    await view.view(batch_id="b").aclose()
    assert (await base.complete(model="test:a", messages="still open")).text == "ok"


# ---- usage observers ----------------------------------------------------------------------
async def test_the_observer_sees_plain_streamed_cached_and_failed_calls() -> None:
    model = ScriptedModel(["plain reply", "streamed reply here", _http_500()])
    settings = Settings(
        llm={
            "cache": {"enabled": True, "disk": False},
            "prices": PRICES,
            "retry": {"max_attempts": 1},
        }
    )
    sink = MemoryUsageSink()
    seen: list[UsageRecord] = []
    async with LLMClient(settings, models={"test:a": model}, usage_sink=sink) as base:
        view = base.view(batch_id="b", on_usage=seen.append)
        plain = await view.complete(_req("p", temperature=0))
        chunks = [c async for c in view.stream(_req("s"))]
        cached = await view.complete(_req("p", temperature=0))
        with pytest.raises(ProviderHTTPError):
            await view.complete(_req("f"))
        await base.complete(_req("p", temperature=0))  # the base has no observer
    assert [(r.status, r.cached) for r in seen] == [
        ("ok", False),
        ("ok", False),
        ("ok", True),
        ("http", False),
    ]
    assert seen == sink.records[:4]  # the very rows the sink got
    assert seen[0].cost_usd == plain.cost_usd > 0
    assert seen[0].output_tokens == plain.usage.output_tokens > 0
    assert chunks[-1].cost_usd and seen[1].cost_usd == chunks[-1].cost_usd
    assert cached.cached and seen[2].cost_usd == 0.0
    assert seen[3].cost_usd == 0.0 and seen[3].input_tokens == 0
    assert {r.batch_id for r in seen} == {"b"} and len(sink.records) == 5


async def test_the_observer_sees_what_a_cut_off_stream_used(base: LLMClient) -> None:
    seen: list[UsageRecord] = []
    view = base.view(on_usage=seen.append)
    async with aclosing(view.stream(model="test:a", messages=LONG)) as chunks:
        async for _ in chunks:
            break  # the consumer stops after the first chunk
    [record] = seen
    assert record.status == "cancelled" and record.estimated
    assert record.input_tokens > 0 and record.output_tokens > 0 and record.cost_usd > 0


async def test_a_view_of_a_view_reports_to_both_observers(base: LLMClient) -> None:
    outer: list[UsageRecord] = []
    inner: list[UsageRecord] = []
    item = base.view(batch_id="b", on_usage=inner.append).view(agent_id="a", on_usage=outer.append)
    await item.complete(model="test:a", messages="x")
    await item.embed(model="test:emb", input=["x", "y"])
    assert len(inner) == 2 and inner == outer
    assert [(r.batch_id, r.agent_id) for r in inner] == [("b", "a"), ("b", "a")]


# ---- embeddings, same accounting ------------------------------------------------------------
async def test_embeddings_go_through_the_same_accounting(
    base: LLMClient, sink: MemoryUsageSink
) -> None:
    seen: list[UsageRecord] = []
    base.budgets.set_limit("key:k", 1.0)
    reply = await base.view(key_id="k", on_usage=seen.append).embed(
        model="test:emb", input=["ab", "cde"]
    )
    assert reply.vectors == [[2.0], [3.0]] and reply.usage.input_tokens == 4
    assert reply.cost_usd == pytest.approx(4 / 1e6) and reply.latency_ms > 0
    [record] = sink.records
    assert seen == [record]
    assert (record.status, record.input_tokens, record.output_tokens) == ("ok", 4, 0)
    assert record.cost_usd == reply.cost_usd and record.key_id == "k"
    assert base.budgets.spent("key:k") == pytest.approx(reply.cost_usd)
    assert base.budgets.reserved("key:k") == 0.0
    text = base.metrics.render().decode()
    assert 'arbor_llm_requests_total{model="emb",provider="test",status="ok"} 1.0' in text
    assert 'arbor_llm_tokens_total{direction="input",model="emb",provider="test"} 4.0' in text


async def test_a_failed_embedding_is_accounted_as_a_failure(sink: MemoryUsageSink) -> None:
    class Broken(EmbeddingFunctionModel):
        async def embed(
            self, inputs: list[str], *, dimensions: int | None = None
        ) -> tuple[list[list[float]], Usage]:
            raise _http_500()

    settings = _settings(retry={"max_attempts": 1})
    seen: list[UsageRecord] = []
    models = {"test:emb": Broken(lambda r: "unused")}
    async with LLMClient(settings, models=models, usage_sink=sink) as base:
        base.budgets.set_limit("key:k", 1.0)
        with pytest.raises(ProviderHTTPError):
            await base.view(key_id="k", on_usage=seen.append).embed(model="test:emb", input="x")
        text = base.metrics.render().decode()
        assert base.budgets.reserved("key:k") == 0.0  # the reservation was given back
    assert [r.status for r in seen] == ["http"] and seen == sink.records
    assert 'arbor_llm_errors_total{kind="http",model="emb",provider="test"} 1.0' in text


async def test_an_embedding_reply_missing_vectors_is_charged_and_refused(
    sink: MemoryUsageSink,
) -> None:
    class Short(EmbeddingFunctionModel):
        async def embed(
            self, inputs: list[str], *, dimensions: int | None = None
        ) -> tuple[list[list[float]], Usage]:
            return [[1.0]], Usage(input_tokens=6)

    async with LLMClient(
        _settings(), models={"test:emb": Short(lambda r: "")}, usage_sink=sink
    ) as c:
        c.budgets.set_limit("key:k", 1.0)
        request = EmbeddingRequest(
            model="test:emb", input=["a", "b"], context=CallContext(key_id="k")
        )
        with pytest.raises(Exception, match="got 1 vector"):
            await c.embed(request)
        assert c.budgets.reserved("key:k") == 0.0
        assert c.budgets.spent("key:k") == pytest.approx(6 / 1e6)
    [record] = sink.records
    assert (record.status, record.input_tokens) == ("provider", 6)


def _req(text: str, **kw: object) -> ChatRequest:
    return ChatRequest(model="test:a", messages=[Message.user(text)], **kw)


def _http_500() -> ProviderHTTPError:
    return ProviderHTTPError("HTTP 500", status_code=500)


async def test_an_embedding_call_is_traced_like_a_chat_call() -> None:
    exporter = InMemorySpanExporter()
    tracer = make_tracer(processors=[SimpleSpanProcessor(exporter)])
    models = {"test:emb": EmbeddingFunctionModel(lambda r: "unused")}
    async with LLMClient(_settings(), models=models, tracer=tracer) as client:
        await client.view(key_id="k").embed(model="test:emb", input=["a", "b"])
    (span,) = exporter.get_finished_spans()
    attrs = dict(span.attributes or {})
    assert span.name == "embeddings emb"
    assert attrs["gen_ai.operation.name"] == "embeddings"
    assert attrs["gen_ai.usage.input_tokens"] == 4 and attrs["gen_ai.usage.output_tokens"] == 0
