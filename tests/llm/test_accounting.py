"""The attribution chat and embeddings calls share: budget scopes and the usage row."""

from __future__ import annotations

from arbor.llm._accounting import budget_scopes, record_usage
from arbor.llm.types import CallContext, Usage
from arbor.llm.usage import MemoryUsageSink, UsageRecord


def test_budget_scopes_name_each_attributed_owner() -> None:
    assert budget_scopes(CallContext()) == ["global"]
    ctx = CallContext(key_id="key_1", agent_id="agt_1", run_id="run_1", batch_id="bat_1")
    assert budget_scopes(ctx) == ["global", "key:key_1", "run:run_1", "batch:bat_1"]
    assert budget_scopes(CallContext(run_id="run_2")) == ["global", "run:run_2"]


def test_record_usage_splits_the_model_and_copies_the_context() -> None:
    sink = MemoryUsageSink()
    usage = Usage(input_tokens=12, output_tokens=5, cached_input_tokens=4, estimated=True)
    ctx = CallContext(key_id="key_1", agent_id="agt_1", run_id="run_1", batch_id="bat_1")
    seen: list[UsageRecord] = []
    record_usage(
        sink,
        [seen.append],
        "openai:gpt-4o",
        ctx,
        usage,
        cost=0.25,
        latency_ms=8.5,
        status="ok",
        cached=True,
        response_id="resp_1",
    )
    [row] = sink.records
    assert seen == [row]  # the observers get the very row the sink got
    assert (row.provider, row.model) == ("openai", "gpt-4o")
    assert (row.input_tokens, row.output_tokens, row.cached_input_tokens) == (12, 5, 4)
    assert (row.cost_usd, row.latency_ms, row.status) == (0.25, 8.5, "ok")
    assert row.cached and row.estimated and row.request_id == "resp_1"
    assert (row.key_id, row.agent_id, row.run_id, row.batch_id) == (
        "key_1",
        "agt_1",
        "run_1",
        "bat_1",
    )


def test_record_usage_without_a_sink_still_reaches_the_observers() -> None:
    seen: list[UsageRecord] = []
    usage = Usage(input_tokens=3)
    record_usage(
        None, [seen.append], "test:a", CallContext(), usage, cost=0.0, latency_ms=1.0, status="x"
    )
    assert [(r.provider, r.model, r.input_tokens, r.status) for r in seen] == [
        ("test", "a", 3, "x")
    ]
