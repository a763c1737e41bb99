"""A workflow is a typed graph over a typed state.

A ``Workflow[S]`` runs over a pydantic model ``S``. Its nodes are async functions
``(state: S, ctx: NodeContext) -> update`` (agents run inside such functions); mypy checks a
node's state parameter against ``S`` at ``add_node`` and ``@node``, and what routers and loop
tests read of the state. A node's update is one of:

- ``None``: nothing changed;
- a partial update model: a pydantic model whose fields are fields of ``S``; only the fields
  the node set apply, so a default never overwrites the state;
- ``S`` itself: the fields the node set and changed apply;
- a mapping of field names to values: the older, untyped form, validated on merge.

::

    class Drafted(BaseModel):  # a partial update: two of Draft's fields
        code: str
        iterations: int

    @wf.node()
    async def write(state: Draft, ctx: NodeContext) -> Drafted:
        return Drafted(code=..., iterations=state.iterations + 1)

An update model with a field ``S`` lacks is a :class:`~arbor.core.errors.WorkflowError`
naming the node and the field, when the node is registered (if its return annotation names
the model) and when it returns one (see :mod:`arbor.agents.workflow._updates`). The runner
checkpoints the applied fields as JSON.

Edges are static (``edge``), conditional (``route``: a function of the state picks the next
node, e.g. on a reviewer's verdict or a confidence score) or parallel (``fan_out``: branches
run concurrently, then their ``join`` node once all have finished). Loops are ordinary edges
back to an earlier node; every node may carry ``max_visits`` and the whole run
``max_steps``, so no loop runs forever. Adaptive loops are first-class (``refine_until``:
back to a refining node until the state is good enough, or on to the next node once the
iteration cap is reached, without failing the run). ``approval`` nodes pause a run until
someone approves or rejects it.

The graph is pure data: :class:`~arbor.agents.workflow.runner.WorkflowRunner` executes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeAlias, TypeVar

from pydantic import BaseModel

from arbor.agents.workflow._updates import NodeUpdate, check_returns
from arbor.core.errors import WorkflowError

if TYPE_CHECKING:
    from arbor.agents.workflow.context import NodeContext

__all__ = ["END", "Edge", "NodeFn", "NodeSpec", "NodeUpdate", "Workflow"]

END = "__end__"

StateT = TypeVar("StateT", bound=BaseModel)
UpdateT = TypeVar("UpdateT", bound=NodeUpdate)
#: A node of a ``Workflow[StateT]``: the state and the node context in, an update out.
NodeFn: TypeAlias = Callable[[StateT, "NodeContext"], Awaitable[NodeUpdate]]


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    fn: NodeFn[Any] | None
    kind: Literal["function", "approval"] = "function"
    max_visits: int | None = None
    #: For approval nodes: what the approver is asked.
    prompt: str = ""


@dataclass(frozen=True, slots=True)
class Edge:
    kind: Literal["static", "route", "fan_out", "loop"]
    targets: tuple[str, ...]
    router: Callable[[Any], str] | None = None
    join: str | None = None
    #: For loops: the state is good enough (leave for ``targets[1]``).
    done: Callable[[Any], bool] | None = None
    #: For loops: how many times ``targets[0]`` (the refining node) may run in all.
    cap: int = 0


@dataclass
class Workflow(Generic[StateT]):
    """A named graph over ``state_type`` (a pydantic model)."""

    name: str
    state_type: type[StateT]
    max_steps: int = 100
    description: str = ""
    nodes: dict[str, NodeSpec] = field(default_factory=dict)
    edges: dict[str, Edge] = field(default_factory=dict)
    entry: str | None = None

    # ---- building ------------------------------------------------------------------------
    def add_node(self, name: str, fn: NodeFn[StateT], *, max_visits: int | None = None) -> None:
        """Add node ``name`` running ``fn``; WorkflowError when ``fn``'s return annotation
        names an update model with a field the state lacks."""
        check_returns(self.name, name, fn, self.state_type)
        self._new_node(NodeSpec(name, fn, "function", max_visits))

    def node(
        self, name: str | None = None, *, max_visits: int | None = None
    ) -> Callable[
        [Callable[[StateT, NodeContext], Awaitable[UpdateT]]],
        Callable[[StateT, NodeContext], Awaitable[UpdateT]],
    ]:
        """Decorator form of :meth:`add_node` (the function name is the default node name);
        it returns the function unchanged."""

        def register(
            fn: Callable[[StateT, NodeContext], Awaitable[UpdateT]],
        ) -> Callable[[StateT, NodeContext], Awaitable[UpdateT]]:
            self.add_node(name or str(getattr(fn, "__name__", "node")), fn, max_visits=max_visits)
            return fn

        return register

    def add_approval(self, name: str, *, prompt: str = "", max_visits: int | None = None) -> None:
        """A node that pauses the run until approved or rejected; it sets ``state.approved``
        (and ``state.approval_reason``) when the state model has those fields."""
        self._new_node(NodeSpec(name, None, "approval", max_visits, prompt))

    def start(self, name: str) -> None:
        self.entry = name

    def edge(self, src: str, dst: str) -> None:
        self._new_edge(src, Edge("static", (dst,)))

    def route(self, src: str, router: Callable[[StateT], str], targets: Sequence[str]) -> None:
        """After ``src``, go to ``router(state)``, which must be one of ``targets``."""
        self._new_edge(src, Edge("route", tuple(targets), router=router))

    def fan_out(self, src: str, branches: Sequence[str], join: str) -> None:
        """After ``src``, run ``branches`` concurrently, then ``join`` once all finished.
        Each branch must lead straight to ``join`` (``edge(branch, join)`` is added)."""
        if len(branches) < 2:
            raise WorkflowError(f"{self.name}: fan_out from {src!r} needs two or more branches")
        self._new_edge(src, Edge("fan_out", tuple(branches), join=join))
        for b in branches:
            if b not in self.edges:
                self.edge(b, join)

    def refine_until(
        self,
        src: str,
        done: Callable[[StateT], bool],
        *,
        refine: str,
        then: str,
        max_iterations: int,
    ) -> None:
        """An adaptive loop: after ``src`` (e.g. a validator that scores the work), go on to
        ``then`` when ``done(state)`` (e.g. ``confidence >= 0.9``), else back to ``refine`` —
        unless ``refine`` has already run ``max_iterations`` times, when the loop ends at
        ``then`` with the best the state holds (the run does not fail)."""
        if max_iterations < 1:
            raise WorkflowError(f"{self.name}: refine_until needs max_iterations >= 1")
        self._new_edge(src, Edge("loop", (refine, then), done=done, cap=max_iterations))

    # ---- checking and stepping ------------------------------------------------------------
    def validate(self) -> None:
        """Refuse graphs that cannot run: no entry, unknown targets, nodes without a way out."""
        if self.entry is None or self.entry not in self.nodes:
            raise WorkflowError(f"workflow {self.name!r}: entry node {self.entry!r} is not defined")
        for src, edge in self.edges.items():
            if src not in self.nodes:
                raise WorkflowError(f"workflow {self.name!r}: edge from unknown node {src!r}")
            for t in (*edge.targets, *([edge.join] if edge.join else [])):
                if t != END and t not in self.nodes:
                    raise WorkflowError(f"workflow {self.name!r}: {src!r} leads to unknown {t!r}")
        for name in self.nodes:
            if name not in self.edges:
                raise WorkflowError(
                    f"workflow {self.name!r}: node {name!r} has no outgoing edge (use END)"
                )

    def successors(
        self, node: str, state: StateT, visits: Mapping[str, int] | None = None
    ) -> list[str]:
        """The nodes to run after ``node`` given the state it produced (and how many times
        each node has run, which loops need)."""
        edge = self.edges[node]
        if edge.kind == "static":
            return list(edge.targets)
        if edge.kind == "loop":
            assert edge.done is not None
            refine, then = edge.targets
            spent = (visits or {}).get(refine, 0) >= edge.cap
            return [then] if spent or edge.done(state) else [refine]
        if edge.kind == "fan_out":
            return list(edge.targets)
        assert edge.router is not None
        choice = edge.router(state)
        if choice not in edge.targets:
            raise WorkflowError(
                f"workflow {self.name!r}: router after {node!r} chose {choice!r}, "
                f"not one of {list(edge.targets)}"
            )
        return [choice]

    def join_of(self, node: str) -> tuple[str, tuple[str, ...]] | None:
        """``(join, branches)`` when ``node`` fans out."""
        edge = self.edges[node]
        if edge.kind == "fan_out" and edge.join is not None:
            return edge.join, edge.targets
        return None

    def _new_node(self, spec: NodeSpec) -> None:
        if not spec.name or "#" in spec.name:  # '#' separates a node from its visit in keys
            raise WorkflowError(f"workflow {self.name!r}: invalid node name {spec.name!r}")
        if spec.name in self.nodes or spec.name == END:
            raise WorkflowError(f"workflow {self.name!r}: node {spec.name!r} defined twice")
        self.nodes[spec.name] = spec
        if self.entry is None:
            self.entry = spec.name

    def _new_edge(self, src: str, edge: Edge) -> None:
        if src in self.edges:
            raise WorkflowError(f"workflow {self.name!r}: node {src!r} already has its edges")
        self.edges[src] = edge
