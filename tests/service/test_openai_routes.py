"""``/v1/models``, ``/v1/chat/completions`` and ``/v1/embeddings`` for provider models, driven
by the official ``openai`` SDK (async) against the app, with the mock upstream (its own
process) as the configured provider."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from _openai import UPSTREAM_KEY, async_sdk, echo_or_review, provider_settings
from fastapi import FastAPI

from arbor.llm.model import Model
from arbor.llm.usage import StoreUsageSink
from arbor.service.context import ServiceContext
from arbor.store.agents import AgentRepository
from arbor.store.usage import UsageRepository
from arbor.testing import FunctionModel
from arbor.testing.mock_upstream import MockConfig, MockUpstream, spawn_mock_upstream

MODEL = "mock:mock-1"
HELLO = [{"role": "user", "content": "Tell me about arbor and its gateway"}]


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with spawn_mock_upstream(chunks=6) as url:
        yield url


@pytest.fixture
def service_settings_overrides(upstream_url: str) -> dict[str, Any]:
    return provider_settings(upstream_url)


@pytest.fixture
def service_models() -> dict[str, Model]:
    return {"test:echo": FunctionModel(echo_or_review, name="echo")}


@pytest.fixture
async def sdk(app: FastAPI, admin_key: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(app, admin_key) as client:
        yield client


# ---- models ---------------------------------------------------------------------------
async def test_models_lists_providers_enabled_agents_and_workflows(
    sdk: openai.AsyncOpenAI, service_ctx: ServiceContext
) -> None:
    repo = AgentRepository(service_ctx.db)
    await repo.create("helper", {"instructions": "Help."})
    await repo.create("retired", {"instructions": "Old."}, status="disabled")
    ids = [m.id async for m in sdk.models.list()]
    assert {"test:echo", "local:smollm2", MODEL} <= set(ids)
    assert "agent:helper" in ids and "agent:retired" not in ids
    assert "workflow:review-loop" in ids
    one = await sdk.models.retrieve("agent:helper")
    assert one.id == "agent:helper" and one.owned_by == "arbor"
    with pytest.raises(openai.NotFoundError):
        await sdk.models.retrieve("agent:nobody")


# ---- chat -----------------------------------------------------------------------------
async def test_streamed_content_concatenates_to_the_plain_reply(sdk: openai.AsyncOpenAI) -> None:
    plain = await sdk.chat.completions.create(model=MODEL, messages=HELLO)
    text = plain.choices[0].message.content
    assert text is not None and text.startswith("Mock reply")
    assert plain.object == "chat.completion" and plain.model == MODEL
    assert plain.choices[0].finish_reason == "stop"
    assert plain.usage is not None and plain.usage.prompt_tokens > 0

    stream = await sdk.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    content = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in content) == text
    assert len(content) > 2  # really streamed in pieces
    assert content[0].choices[0].delta.role == "assistant"
    assert content[-1].choices[0].finish_reason == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.model_dump() == plain.usage.model_dump()  # the same usage as plain
    assert all(c.usage is None for c in chunks[:-1])


async def test_without_include_usage_there_is_no_usage_chunk(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        stream=True,
    )
    chunks = [c async for c in stream]
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)


async def test_tool_definitions_and_calls_pass_through(sdk: openai.AsyncOpenAI) -> None:
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    ask = [{"role": "user", "content": '/tool get_weather {"city": "Oslo"}'}]
    plain = await sdk.chat.completions.create(model=MODEL, messages=ask, tools=tools)
    choice = plain.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city": "Oslo"}'

    stream = await sdk.chat.completions.create(
        model=MODEL,
        messages=ask,
        tools=tools,
        stream=True,
    )
    name, args, ids = "", "", set()
    async for chunk in stream:
        for d in chunk.choices[0].delta.tool_calls or []:
            if d.id:
                ids.add(d.id)
            if d.function is not None:
                name += d.function.name or ""
                args += d.function.arguments or ""
    assert (name, args) == ("get_weather", '{"city": "Oslo"}') and ids == {call.id}

    answer = await sdk.chat.completions.create(
        model=MODEL,
        messages=[
            *ask,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny and 21 C"},
        ],
        tools=tools,
    )
    assert "sunny and 21 C" in (answer.choices[0].message.content or "")


async def test_calls_are_attributed_to_the_calling_key(
    sdk: openai.AsyncOpenAI, service_ctx: ServiceContext, admin_key: str
) -> None:
    await sdk.chat.completions.create(model=MODEL, messages=HELLO)
    record = await service_ctx.keys.verify(admin_key)
    sink = service_ctx.client.usage_sink
    assert isinstance(sink, StoreUsageSink)
    await sink.flush()
    spent = await UsageRepository(service_ctx.db).total_cost(key_id=record.id)
    assert spent > 0  # mock:mock-1 is priced in the settings


# ---- embeddings ------------------------------------------------------------------------
async def test_embeddings_float_and_the_sdks_default_base64(sdk: openai.AsyncOpenAI) -> None:
    floats = await sdk.embeddings.create(
        model="mock:mock-embedding", input=["alpha", "beta"], encoding_format="float"
    )
    decoded = await sdk.embeddings.create(model="mock:mock-embedding", input=["alpha", "beta"])
    assert [d.index for d in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) == 16
    assert floats.data[0].embedding != floats.data[1].embedding
    for a, b in zip(floats.data, decoded.data, strict=True):  # the SDK decoded our base64
        assert a.embedding == pytest.approx(b.embedding, rel=1e-6)
    assert floats.usage.prompt_tokens == 2 and floats.model == "mock:mock-embedding"
    short = await sdk.embeddings.create(model="mock:mock-embedding", input="x", dimensions=4)
    assert len(short.data[0].embedding) == 4


async def test_embeddings_wire_base64_is_little_endian_float32(
    make_http: Any, admin_key: str
) -> None:
    async with make_http(admin_key) as http:
        reply = await http.post(
            "/v1/embeddings",
            json={"model": "mock:mock-embedding", "input": "x", "encoding_format": "base64"},
        )
        floats = await http.post(
            "/v1/embeddings", json={"model": "mock:mock-embedding", "input": "x"}
        )
    raw = base64.b64decode(reply.json()["data"][0]["embedding"])
    values = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    assert values == pytest.approx(floats.json()["data"][0]["embedding"], rel=1e-6)


async def test_a_model_without_embeddings_is_a_400(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await sdk.embeddings.create(model="local:smollm2", input="x")
    assert err.value.status_code == 400
    assert "local:smollm2 does not support embeddings" in err.value.message
    with pytest.raises(openai.BadRequestError, match="token ids"):
        await sdk.embeddings.create(model="mock:mock-embedding", input=[[1, 2, 3]])


# ---- errors ---------------------------------------------------------------------------
async def test_bad_key_is_401_and_missing_scope_403(
    app: FastAPI, service_ctx: ServiceContext
) -> None:
    async with async_sdk(app, "arb_not_a_real_key_0000000000000000") as bad:
        with pytest.raises(openai.AuthenticationError) as err:
            await bad.chat.completions.create(model=MODEL, messages=HELLO)
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()
    assert err.value.status_code == 401
    assert isinstance(err.value.body, dict) and err.value.body["type"] == "authentication_error"
    reader = (await service_ctx.keys.create("reader", scopes=["read"])).key
    async with async_sdk(app, reader) as read_only:
        assert [m.id async for m in read_only.models.list()]  # read scope may list
        with pytest.raises(openai.PermissionDeniedError):
            await read_only.chat.completions.create(model=MODEL, messages=HELLO)
        with pytest.raises(openai.PermissionDeniedError):
            await read_only.embeddings.create(model="mock:mock-embedding", input="x")


async def test_unknown_models_are_404(sdk: openai.AsyncOpenAI) -> None:
    for model in ("gpt-4o", "nowhere:model", "openai:gpt-4o", "agent:nobody", "workflow:nope"):
        with pytest.raises(openai.NotFoundError) as err:
            await sdk.chat.completions.create(model=model, messages=HELLO)
        assert err.value.status_code == 404, model
    # the upstream's own 404 (it does not know the model) stays a 404
    with pytest.raises(openai.NotFoundError):
        await sdk.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "/status 404"}],
        )


async def test_invalid_requests_are_400_naming_the_problem(
    sdk: openai.AsyncOpenAI, make_http: Any, admin_key: str
) -> None:
    with pytest.raises(openai.BadRequestError, match="temperature"):
        await sdk.chat.completions.create(model=MODEL, messages=HELLO, temperature=7)
    with pytest.raises(openai.BadRequestError, match="n"):
        await sdk.chat.completions.create(model=MODEL, messages=HELLO, n=2)
    with pytest.raises(openai.BadRequestError, match="image_url"):
        await sdk.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
                }
            ],
        )
    async with make_http(admin_key) as http:
        broken = await http.post(
            "/v1/chat/completions",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        empty = await http.post("/v1/chat/completions", json={"model": MODEL, "messages": []})
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "messages"


async def test_upstream_429_keeps_retry_after(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as err:
        await sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "/status 429"}]
        )
    assert err.value.status_code == 429
    assert err.value.response.headers["retry-after"] == "1"


async def test_upstream_failures_are_502_without_the_upstream_key(
    sdk: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        await sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "/status 500"}]
        )
    assert err.value.status_code == 502
    assert err.value.response.headers["x-should-retry"] == "false"
    assert UPSTREAM_KEY not in err.value.response.text


async def test_per_key_rate_limit_is_429_with_retry_after(
    app: FastAPI, service_ctx: ServiceContext
) -> None:
    key = (await service_ctx.keys.create("slow", scopes=["run"], rpm=1)).key
    async with async_sdk(app, key) as sdk:
        await sdk.chat.completions.create(model=MODEL, messages=HELLO)
        with pytest.raises(openai.RateLimitError) as err:
            await sdk.chat.completions.create(model=MODEL, messages=HELLO)
    assert int(err.value.response.headers["retry-after"]) >= 1


# ---- no request can redirect the upstream ---------------------------------------------
REDIRECTS = [
    {"api_base": "{evil}"},
    {"base_url": "{evil}"},
    {"api_key": "sk-attacker"},
    {"headers": {"Authorization": "Bearer sk-attacker"}},
    {"extra_headers": {"x-forwarded-host": "{evil}"}},
]


@pytest.mark.parametrize("fields", REDIRECTS, ids=lambda f: next(iter(f)))
async def test_redirect_fields_are_refused_and_nothing_reaches_them(
    sdk: openai.AsyncOpenAI, fields: dict[str, Any]
) -> None:
    async with MockUpstream(MockConfig(port=0)) as evil:
        body = {
            k: (v.replace("{evil}", evil.url) if isinstance(v, str) else v)
            for k, v in fields.items()
        }
        with pytest.raises(openai.BadRequestError) as err:
            await sdk.chat.completions.create(model=MODEL, messages=HELLO, extra_body=body)
        assert next(iter(fields)) in err.value.message
        with pytest.raises(openai.BadRequestError):
            await sdk.embeddings.create(model="mock:mock-embedding", input="x", extra_body=body)
        assert evil.stats.requests == 0


async def test_ignored_fields_and_headers_never_change_the_upstream(
    sdk: openai.AsyncOpenAI, upstream_url: str
) -> None:
    async with httpx.AsyncClient(base_url=upstream_url.removesuffix("/v1")) as stats_http:
        before = (await stats_http.get("/_stats")).json()["requests"]
    async with MockUpstream(MockConfig(port=0)) as evil:
        reply = await sdk.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            extra_body={"provider": {"base_url": evil.url}, "metadata": {"api_base": evil.url}},
            extra_headers={"X-Api-Base": evil.url, "OpenAI-Base-URL": evil.url},
        )
        assert evil.stats.requests == 0
    assert (reply.choices[0].message.content or "").startswith("Mock reply")
    async with httpx.AsyncClient(base_url=upstream_url.removesuffix("/v1")) as stats_http:
        after = (await stats_http.get("/_stats")).json()["requests"]
    assert after == before + 1  # it went to the configured upstream, once


async def test_a_url_as_model_id_reaches_nothing(sdk: openai.AsyncOpenAI) -> None:
    async with MockUpstream(MockConfig(port=0)) as evil:
        for model in (f"{evil.url}:mock-1", f"{evil.origin}/v1", f"mock:{evil.url}"):
            try:
                await sdk.chat.completions.create(model=model, messages=HELLO)
            except openai.NotFoundError:
                pass  # unknown provider ("http"): refused before anything is sent
            except openai.APIStatusError as exc:  # the configured upstream refused the name
                assert exc.status_code in (400, 404), model
        assert evil.stats.requests == 0


async def test_local_model_files_must_be_configured(
    sdk: openai.AsyncOpenAI, tmp_path: Path
) -> None:
    weights = tmp_path / "other.gguf"
    weights.write_bytes(b"GGUF")  # exists: a request must still not load or probe it
    for model in (f"local:{weights}", "local:/nonexistent/x.gguf", "local:../x.gguf"):
        with pytest.raises(openai.NotFoundError, match="must be configured") as err:
            await sdk.chat.completions.create(model=model, messages=HELLO)
        assert str(tmp_path) not in err.value.message.replace(model, "")
