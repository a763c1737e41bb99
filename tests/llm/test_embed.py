"""Embeddings through the LLM pipeline, over real HTTP against the mock upstream."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from arbor.core.config import ModelLimits, Settings
from arbor.core.errors import BudgetExceededError, ProviderHTTPError, RateLimitedError
from arbor.llm.client import LLMClient
from arbor.llm.model import EmbeddingModel, EmbeddingsNotSupportedError
from arbor.llm.types import EmbeddingRequest
from arbor.llm.usage import MemoryUsageSink
from arbor.testing import ScriptedModel
from arbor.testing.mock_upstream import MockConfig, MockUpstream

API_KEY = "sk-embed-secret-0123456789abcdef"


def _settings(url: str, **llm: Any) -> Settings:
    base: dict[str, Any] = {"cache": {"enabled": False}}
    base.update(llm)
    return Settings(
        providers={"mock": {"base_url": url, "api_key": API_KEY}},  # type: ignore[dict-item]
        llm=base,
    )


@pytest.fixture
async def mock() -> AsyncIterator[MockUpstream]:
    async with MockUpstream(MockConfig(port=0)) as server:
        yield server


async def test_vectors_in_input_order_with_usage_recorded(mock: MockUpstream) -> None:
    sink = MemoryUsageSink()
    async with LLMClient(_settings(mock.url), usage_sink=sink) as client:
        reply = await client.embed(model="mock:mock-embedding", input=["alpha", "beta", "alpha"])
        single = await client.embed(model="mock:mock-embedding", input="beta")
    assert len(reply.vectors) == 3 and len(reply.vectors[0]) == 16
    assert reply.vectors[0] == reply.vectors[2] != reply.vectors[1]  # deterministic per text
    assert single.vectors == [reply.vectors[1]]
    assert math.isclose(sum(x * x for x in reply.vectors[0]), 1.0, rel_tol=1e-5)
    assert reply.usage.input_tokens == 3 and not reply.usage.estimated
    assert reply.model == "mock:mock-embedding"
    record = sink.records[0]
    assert (record.provider, record.model, record.status) == ("mock", "mock-embedding", "ok")
    assert record.input_tokens == 3 and record.output_tokens == 0


async def test_dimensions_and_context_reach_the_upstream(mock: MockUpstream) -> None:
    sink = MemoryUsageSink()
    request = EmbeddingRequest.model_validate(
        {
            "model": "mock:mock-embedding",
            "input": ["x"],
            "dimensions": 5,
            "context": {"key_id": "key_1"},
        }
    )
    async with LLMClient(_settings(mock.url), usage_sink=sink) as client:
        reply = await client.embed(request)
    assert len(reply.vectors[0]) == 5
    assert sink.records[0].key_id == "key_1"


async def test_server_errors_are_retried_then_raised(mock: MockUpstream) -> None:
    await mock.stop()
    async with MockUpstream(MockConfig(port=0, fail_rate=1.0, fail_mode="500")) as failing:
        settings = _settings(failing.url, retry={"max_attempts": 2, "base_delay": 0.0})
        sink = MemoryUsageSink()
        async with LLMClient(settings, usage_sink=sink) as client:
            with pytest.raises(ProviderHTTPError) as err:
                await client.embed(model="mock:mock-embedding", input="x")
        assert failing.stats.requests == 2
    assert err.value.status_code == 500
    assert sink.records[0].status == "http"


async def test_upstream_429_is_a_rate_limited_error(mock: MockUpstream) -> None:
    await mock.stop()
    async with MockUpstream(MockConfig(port=0, fail_rate=1.0, fail_mode="429")) as limited:
        settings = _settings(limited.url, retry={"max_attempts": 1})
        async with LLMClient(settings) as client:
            with pytest.raises(RateLimitedError) as err:
                await client.embed(model="mock:mock-embedding", input="x")
    assert err.value.retry_after == 1


async def test_per_key_rpm_applies_to_embeddings(mock: MockUpstream) -> None:
    async with LLMClient(_settings(mock.url)) as client:
        client.set_key_limits("k", ModelLimits(rpm=1))
        request = EmbeddingRequest.model_validate(
            {"model": "mock:mock-embedding", "input": ["x"], "context": {"key_id": "k"}}
        )
        await client.embed(request)
        with pytest.raises(TimeoutError):  # the second call waits for the next minute
            async with asyncio.timeout(0.3):
                await client.embed(request)
    assert mock.stats.requests == 1


async def test_budget_refuses_before_sending(mock: MockUpstream) -> None:
    settings = _settings(mock.url, prices={"mock:mock-embedding": {"input": 1e6, "output": 0}})
    async with LLMClient(settings) as client:
        client.budgets.set_limit("key:poor", 0.5)
        request = EmbeddingRequest.model_validate(
            {"model": "mock:mock-embedding", "input": ["a b c"], "context": {"key_id": "poor"}}
        )
        with pytest.raises(BudgetExceededError):
            await client.embed(request)
    assert mock.stats.requests == 0


async def test_a_chat_only_model_says_it_has_no_embeddings() -> None:
    scripted = ScriptedModel([])
    assert not isinstance(scripted, EmbeddingModel)
    async with LLMClient(Settings(), models={"test:chat": scripted}) as client:
        with pytest.raises(EmbeddingsNotSupportedError, match="test:chat does not support"):
            await client.embed(model="test:chat", input="x")
    assert scripted.calls == []


async def test_input_is_required() -> None:
    async with LLMClient(Settings()) as client:
        with pytest.raises(TypeError, match="input="):
            await client.embed(model="test:chat")
