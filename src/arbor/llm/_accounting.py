"""Who pays for a call: the budget scopes it draws on and the usage row it leaves.

A key's budget and its usage report must agree about which calls were its own, so the
scopes and the row are derived from the same :class:`~arbor.llm.types.CallContext`, by
these two helpers, for chat and embeddings calls alike (:class:`arbor.llm._calls.CallAccount`).
"""

from __future__ import annotations

from collections.abc import Sequence

from arbor.llm.types import CallContext, Usage
from arbor.llm.usage import UsageObserver, UsageRecord, UsageSink

__all__ = ["budget_scopes", "record_usage"]


def budget_scopes(ctx: CallContext) -> list[str]:
    """``global`` plus one scope for each of the call's key, run and batch."""
    scopes = ["global"]
    scopes += [f"key:{ctx.key_id}"] if ctx.key_id else []
    scopes += [f"run:{ctx.run_id}"] if ctx.run_id else []
    scopes += [f"batch:{ctx.batch_id}"] if ctx.batch_id else []
    return scopes


def record_usage(
    sink: UsageSink | None,
    observers: Sequence[UsageObserver],
    model: str,
    ctx: CallContext,
    usage: Usage,
    *,
    cost: float,
    latency_ms: float,
    status: str,
    cached: bool = False,
    response_id: str | None = None,
) -> None:
    """Hand one call's usage row to ``sink`` and then to each of ``observers`` (no row is
    made for neither); ``model`` is ``provider:name``."""
    if sink is None and not observers:
        return
    provider, _, name = model.partition(":")
    record = UsageRecord(
        provider=provider,
        model=name,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        cost_usd=cost,
        latency_ms=latency_ms,
        status=status,
        cached=cached,
        estimated=usage.estimated,
        key_id=ctx.key_id,
        agent_id=ctx.agent_id,
        run_id=ctx.run_id,
        batch_id=ctx.batch_id,
        request_id=response_id,
    )
    if sink is not None:
        sink.record(record)
    for observe in observers:
        observe(record)
