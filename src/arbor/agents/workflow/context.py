"""``NodeContext``: what a workflow node gets besides the state.

A protocol, so that the graph, plugins and the durable journal type their nodes and hooks
against it without importing the runner that implements it
(:class:`~arbor.agents.workflow.runner.WorkflowRunner` hands every node visit its own).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from arbor.agents.hooks import CallPlugin
    from arbor.agents.memory import Memory
    from arbor.agents.results import AgentResult
    from arbor.agents.spec import AgentSpec
    from arbor.agents.workflow.checkpoints import CheckpointStore
    from arbor.agents.workflow.events import RunEvent
    from arbor.llm.client import LLMClient
    from arbor.llm.types import ChatRequest, ChatResponse

__all__ = ["NodeContext"]

T = TypeVar("T")
OutputT = TypeVar("OutputT")


class NodeContext(Protocol):
    """Ids of the node visit, the LLM client and store, and exactly-once helpers."""

    @property
    def run_id(self) -> str: ...

    @property
    def node(self) -> str: ...

    @property
    def visit(self) -> int:
        """1 on the node's first run in this workflow run, 2 on its second, ..."""
        ...

    @property
    def store(self) -> CheckpointStore: ...

    @property
    def client(self) -> LLMClient | None: ...

    def key(self, name: str) -> str:
        """An idempotency key unique to this node visit."""
        ...

    async def once(self, name: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` once per node visit, even across a crash and resume: a result already
        recorded under ``name`` is returned instead (it must be JSON-serialisable)."""
        ...

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """An LLM call that happens exactly once for this node visit."""
        ...

    async def run_agent(
        self,
        agent: AgentSpec[OutputT],
        prompt: str,
        *,
        deps: Any = None,
        memory: Memory | None = None,
        plugins: Sequence[CallPlugin] = (),
    ) -> AgentResult[OutputT]:
        """Run ``agent`` durably: each of its LLM and tool calls happens once across crash
        and resume, hooked by the runner's plugins and ``plugins``."""
        ...

    async def emit(self, event: RunEvent) -> None:
        """Append an event of this node (live: watchers see it at once)."""
        ...
