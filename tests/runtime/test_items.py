"""ItemMeter: one batch item's calls go through a view stamped with the batch and are
summed from the pipeline's own usage records, failed calls and nested views included."""

from __future__ import annotations

import pytest

from arbor.core.config import Settings
from arbor.core.errors import ProviderHTTPError
from arbor.llm.client import LLMClient
from arbor.llm.types import ChatRequest, Message
from arbor.llm.usage import MemoryUsageSink
from arbor.runtime.items import ItemMeter
from arbor.testing import ScriptedModel


async def test_the_meter_sums_every_call_of_the_item_and_stamps_the_batch() -> None:
    settings = Settings(
        llm={
            "cache": {"enabled": False},
            "prices": {"test:a": {"input": 1.0, "output": 1.0}},
            "retry": {"max_attempts": 1},
        }
    )
    failure = ProviderHTTPError("HTTP 500", status_code=500)
    model = ScriptedModel(["one two", failure, "three", "not the item's"])
    sink = MemoryUsageSink()
    async with LLMClient(settings, models={"test:a": model}, usage_sink=sink) as base:
        meter = ItemMeter(base.view(key_id="k"), "bat_1")
        first = await meter.client.complete(model="test:a", messages="q1")
        with pytest.raises(ProviderHTTPError):
            await meter.client.complete(model="test:a", messages="q2")
        nested = meter.client.view(agent_id="agent")  # an agent's own view of the item
        third = await nested.complete(model="test:a", messages="q3")
        await base.complete(ChatRequest(model="test:a", messages=[Message.user("x")]))
    outcome = meter.outcome("done")
    assert outcome.input_tokens == first.usage.input_tokens + third.usage.input_tokens
    assert outcome.output_tokens == first.usage.output_tokens + third.usage.output_tokens > 0
    assert outcome.cost_usd == pytest.approx(first.cost_usd + third.cost_usd)
    assert [(r.key_id, r.batch_id, r.status) for r in sink.records[:3]] == [
        ("k", "bat_1", "ok"),
        ("k", "bat_1", "http"),
        ("k", "bat_1", "ok"),
    ]
    assert meter.client.context.batch_id == "bat_1"
