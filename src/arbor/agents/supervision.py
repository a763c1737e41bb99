"""Supervision: agents that keep failing are taken out of service.

:class:`Supervisor` counts an agent's failures in the store (``agents.failures``);
``threshold`` failures within ``window`` set its status to ``disabled_flapping``, as
Arboretum does for its GenServers, until someone re-enables it (``arbor agents enable``).
:meth:`Supervisor.supervise` is the runtime guard: it refuses to run a disabled agent and
counts a failure when a run raises. Agents not stored under their name run unsupervised.

This module builds stored agents from their definitions, so it imports
:mod:`arbor.agents.definitions`; definitions know nothing of supervision.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from arbor.agents.agent import Agent
from arbor.agents.definitions import AgentDefinition
from arbor.agents.tools import Tool
from arbor.core.errors import ArborError, NotFoundError

if TYPE_CHECKING:  # the store pulls in SQLAlchemy; agents import this module
    from arbor.store.agents import AgentRecord, AgentRepository

__all__ = ["AgentDisabledError", "Supervisor"]

T = TypeVar("T")


class AgentDisabledError(ArborError):
    """The agent is disabled (by hand, or for flapping); re-enable it to run it again."""

    kind = "agent_disabled"

    def __init__(self, message: str, *, agent: str, status: str) -> None:
        super().__init__(message)
        self.agent = agent
        self.status = status


class Supervisor:
    """Disables agents that keep failing: ``threshold`` failures within ``window`` set the
    stored status to ``disabled_flapping`` (re-enabled only by a command)."""

    def __init__(
        self,
        repo: AgentRepository,
        threshold: int = 3,
        window: timedelta = timedelta(minutes=5),
    ) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be at least 1, not {threshold}")
        if window <= timedelta(0):
            raise ValueError("window must be positive")
        self.repo = repo
        self.threshold = threshold
        self.window = window

    async def record_failure(self, name: str, *, now: datetime | None = None) -> AgentRecord:
        """Count one failure of agent ``name``; returns the agent as it now is."""
        record = await self.repo.get_by_name(name)
        return await self.repo.record_failure(
            record.id, threshold=self.threshold, window=self.window, now=now
        )

    async def check_enabled(self, name: str) -> AgentRecord:
        """The agent, or :class:`AgentDisabledError` if it may not run."""
        record = await self.repo.get_by_name(name)
        if record.status == "disabled_flapping":
            raise AgentDisabledError(
                f"agent {name!r} is disabled_flapping: it failed {self.threshold} times "
                f"within {_span(self.window)}; re-enable it with `arbor agents enable {name}`",
                agent=name,
                status=record.status,
            )
        if record.status != "enabled":
            raise AgentDisabledError(
                f"agent {name!r} is {record.status}; enable it with `arbor agents enable {name}`",
                agent=name,
                status=record.status,
            )
        return record

    async def supervise(self, name: str, run: Callable[[], Awaitable[T]]) -> T:
        """``run()`` as agent ``name``: AgentDisabledError (nothing run) when it is disabled;
        a failure is counted when ``run`` raises, and the error re-raised. An agent not
        stored under ``name`` just runs."""
        try:
            await self.check_enabled(name)
        except NotFoundError:
            return await run()
        try:
            return await run()
        except Exception as exc:
            record = await self.record_failure(name)
            if record.status == "disabled_flapping" and isinstance(exc, ArborError):
                exc.message = (
                    f"{exc.message} (agent {name!r} is now disabled_flapping: "
                    f"{self.threshold} failures within {_span(self.window)})"
                )
            raise

    async def build_agent(
        self, name: str, tools: Mapping[str, Tool] | Sequence[Tool] = ()
    ) -> Agent[Any]:
        """The stored agent ``name`` built from its definition (its tool names resolved
        against ``tools``); AgentDisabledError if it may not run."""
        record = await self.check_enabled(name)
        return AgentDefinition.from_record(record).build(tools)

    async def enable(self, name: str) -> AgentRecord:
        """Re-enable (also after flapping); the failure history starts afresh."""
        record = await self.repo.get_by_name(name)
        return await self.repo.set_status(record.id, "enabled")

    async def disable(self, name: str) -> AgentRecord:
        record = await self.repo.get_by_name(name)
        return await self.repo.set_status(record.id, "disabled")


def _span(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"
