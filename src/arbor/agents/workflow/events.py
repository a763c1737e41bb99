"""Run events: the one place their types are listed, and live delivery to watchers.

Every event of a run is persisted with a dense per-run ``seq`` (1, 2, 3…) before anyone sees
it; :func:`watch_events` (behind ``CheckpointStore.watch``) replays the stored ones after a
given ``seq`` and then follows new ones until the run ends. The ``seq`` is what an SSE client
sends back as ``Last-Event-ID``.

Live delivery does not poll the database in a tight loop: a store publishes the events it
has just committed to its :class:`EventHub`, which wakes that run's watchers; a watcher takes
the published events when they continue its sequence and re-reads the store when they do not
(so nothing is lost or repeated: it deduplicates by ``seq``). Events written by another
process reach a watcher through a slow fallback poll (``poll_interval``, 1 s by default), or
at once when the hubs are fanned out through Redis (``_redis_hub.RedisEventHub``).
A service shares one hub between the runner's store and its HTTP handlers' stores.

Event types (``RunEvent.type``) and what ``data`` holds:

=====================  ===============================================================
``run_started``        a run began at its entry node
``run_resumed``        a run continued from its last checkpoint
``node_started``       ``{"visit": int}``
``node_finished``      ``{"changed": [state keys]}``
``llm_call``           :class:`LLMCallData` (an agent's or a node's model call)
``tool_call``          :class:`ToolCallData`
``approval_requested``  ``{"prompt": str, "visit": int}``
``approval_decided``   ``{"approved": bool, "reason": str, "visit": int}``
``run_finished``       ``{"status": "ok"}`` (terminal)
``run_failed``         ``{"error": str}`` (terminal)
``run_cancelled``      ``{}`` (terminal)
=====================  ===============================================================
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, TypedDict

__all__ = [
    "EVENT_TYPES",
    "TERMINAL_EVENTS",
    "EventHub",
    "EventType",
    "LLMCallData",
    "RunEvent",
    "ToolCallData",
    "watch_events",
]

EventType = Literal[
    "run_started",
    "run_resumed",
    "node_started",
    "node_finished",
    "llm_call",
    "tool_call",
    "approval_requested",
    "approval_decided",
    "run_finished",
    "run_failed",
    "run_cancelled",
]
EVENT_TYPES: Final[tuple[str, ...]] = EventType.__args__  # type: ignore[attr-defined]
#: A watcher stops after one of these: the run will write nothing more.
TERMINAL_EVENTS: Final[frozenset[str]] = frozenset({"run_finished", "run_failed", "run_cancelled"})
#: Run statuses after which no event follows (a watcher also stops on them).
_TERMINAL_STATUSES: Final[frozenset[str]] = frozenset({"succeeded", "failed", "cancelled"})
#: Events a slow watcher may have waiting before it falls back to reading the store.
_BACKLOG = 1000


@dataclass(slots=True)
class RunEvent:
    """One event of a run. ``type`` is one of :data:`EVENT_TYPES` (callers may add their own,
    e.g. the CLI's options record); ``seq`` is assigned by the store."""

    type: str
    node: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    seq: int = 0


class LLMCallData(TypedDict):
    """``data`` of an ``llm_call`` event."""

    agent: str | None
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    cached: bool


class ToolCallData(TypedDict):
    """``data`` of a ``tool_call`` event; ``error`` is None when ``ok``."""

    agent: str
    tool: str
    call_id: str
    ok: bool
    error: str | None
    latency_ms: float


class _Subscription:
    __slots__ = ("backlog", "overflowed", "wake")

    def __init__(self) -> None:
        self.backlog: deque[RunEvent] = deque()
        self.overflowed = False
        self.wake = asyncio.Event()

    def take(self) -> list[RunEvent] | None:
        """The published events since the last take, or None when some were dropped."""
        self.wake.clear()
        if self.overflowed:
            self.overflowed = False
            self.backlog.clear()
            return None
        events = list(self.backlog)
        self.backlog.clear()
        return events


class EventHub:
    """Wakes a run's watchers when its events are committed, in this process.

    Not a registry: each store gets its own hub unless one is passed in to share.
    """

    __slots__ = ("_subs",)

    def __init__(self) -> None:
        self._subs: dict[str, set[_Subscription]] = {}

    def watching(self, run_id: str) -> bool:
        """Whether anyone watches ``run_id`` (stores skip building events otherwise)."""
        return run_id in self._subs

    def watchers(self) -> int:
        """How many watchers are subscribed, over all runs."""
        return sum(len(s) for s in self._subs.values())

    def publish(self, run_id: str, events: Sequence[RunEvent]) -> None:
        """Hand committed ``events`` (with their ``seq``) to the run's watchers."""
        subs = self._subs.get(run_id)
        if not subs or not events:
            return
        for sub in subs:
            if len(sub.backlog) + len(events) > _BACKLOG:
                sub.overflowed = True
            else:
                sub.backlog.extend(events)
            sub.wake.set()

    def _subscribe(self, run_id: str) -> _Subscription:
        sub = _Subscription()
        self._subs.setdefault(run_id, set()).add(sub)
        return sub

    def _unsubscribe(self, run_id: str, sub: _Subscription) -> None:
        subs = self._subs.get(run_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[run_id]


class EventSource(Protocol):
    """What :func:`watch_events` reads: a store's persisted events and its run status."""

    async def events(self, run_id: str, after_seq: int = 0) -> list[RunEvent]: ...

    async def status(self, run_id: str) -> str: ...


async def watch_events(
    source: EventSource,
    hub: EventHub,
    run_id: str,
    after_seq: int = 0,
    *,
    follow: bool = True,
    poll_interval: float = 1.0,
) -> AsyncIterator[RunEvent]:
    """The run's events with ``seq > after_seq`` in order, each once; then (``follow``) new
    ones as they land, until a terminal event or a terminal run status.

    NotFoundError for an unknown run. Close the iterator (``aclosing``) when leaving early:
    it holds only a subscription (no task), released on close.
    """
    if poll_interval <= 0:
        raise ValueError(f"poll_interval must be positive, not {poll_interval}")
    last = after_seq
    sub = hub._subscribe(run_id) if follow else None  # before reading: nothing slips by
    try:
        await source.status(run_id)  # NotFoundError for an unknown run
        batch, over = await source.events(run_id, last), sub is None
        while True:
            for event in batch:
                if event.seq <= last:
                    continue  # published and read from the store both: once is enough
                if event.seq != last + 1:
                    break  # never for a dense log; the next wake or poll fills it in
                yield event
                last = event.seq
                if event.type in TERMINAL_EVENTS:
                    return
            if over:
                return
            assert sub is not None
            batch, over = await _next_batch(source, sub, run_id, last, poll_interval)
    finally:
        if sub is not None:
            hub._unsubscribe(run_id, sub)


async def _next_batch(
    source: EventSource, sub: _Subscription, run_id: str, last: int, poll_interval: float
) -> tuple[list[RunEvent], bool]:
    """Wait for a wake-up or the fallback poll; the events after ``last`` and whether the
    run is over."""
    try:
        async with asyncio.timeout(poll_interval):
            await sub.wake.wait()
    except TimeoutError:
        # Another process may be writing. Status first: a run that ends after this read
        # still has its terminal event in the read below (the runner stores it first).
        status = await source.status(run_id)
        return await source.events(run_id, last), status in _TERMINAL_STATUSES
    published = sub.take()
    fresh = [] if published is None else _after(published, last)
    if published is None or (fresh and fresh[0].seq != last + 1):
        fresh = await source.events(run_id, last)  # a gap: the store has it all
    return fresh, False


def _after(events: list[RunEvent], last: int) -> list[RunEvent]:
    return sorted((e for e in events if e.seq > last), key=lambda e: e.seq)
