"""Typed node updates: a partial update model applies the fields it set, the state type
applies the fields it changed, a mapping still works, and an update model with a field the
state lacks is refused when the node is registered and when it returns one."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from arbor.agents.workflow import (
    END,
    InMemoryCheckpointStore,
    NodeContext,
    Workflow,
    WorkflowRunner,
)
from arbor.agents.workflow.graph import NodeUpdate
from arbor.core.errors import WorkflowError


class Doc(BaseModel):
    task: str
    draft: str = ""
    score: int = 0
    notes: list[str] = []
    summary: str = ""


class Drafted(BaseModel):
    """A partial update: two of Doc's fields, both with defaults."""

    draft: str = ""
    score: int = 0


class Stray(BaseModel):
    draft: str = ""
    colour: str = "red"  # Doc has no such field


async def _run(wf: Workflow[Doc], **input: Any) -> tuple[Any, InMemoryCheckpointStore]:
    store = InMemoryCheckpointStore()
    result = await WorkflowRunner(wf, store).start({"task": "t", **input})
    return result, store


async def _changed(store: InMemoryCheckpointStore, run_id: str) -> dict[str | None, list[str]]:
    return {
        e.node: e.data["changed"] for e in await store.events(run_id) if e.type == "node_finished"
    }


async def test_a_partial_update_applies_only_the_fields_it_set() -> None:
    wf = Workflow("partial", Doc)

    @wf.node()
    async def write(state: Doc, ctx: NodeContext) -> Drafted:
        return Drafted(draft="v1")  # score keeps its value: the node did not set it

    wf.edge("write", END)
    result, store = await _run(wf, score=7)
    assert result.status == "succeeded", result.error
    assert (result.state.draft, result.state.score) == ("v1", 7)
    assert await _changed(store, result.run_id) == {"write": ["draft"]}
    stored = await store.load(result.run_id)
    assert stored.state["draft"] == "v1" and stored.state["score"] == 7


async def test_a_field_set_to_its_default_still_applies() -> None:
    wf = Workflow("reset", Doc)

    @wf.node()
    async def reset(state: Doc, ctx: NodeContext) -> Drafted:
        return Drafted(score=0)

    wf.edge("reset", END)
    result, _ = await _run(wf, score=7, draft="kept")
    assert (result.state.score, result.state.draft) == (0, "kept")


def test_an_update_model_with_a_stray_field_is_refused_at_registration() -> None:
    wf = Workflow("stray", Doc)

    async def paint(state: Doc, ctx: NodeContext) -> Stray:
        return Stray()

    with pytest.raises(WorkflowError, match=r"node 'paint' returns Stray, whose field 'colour'"):
        wf.add_node("paint", paint)
    assert "paint" not in wf.nodes

    with pytest.raises(WorkflowError, match=r"'colour' is not in the state Doc"):

        @wf.node("maybe")
        async def maybe(state: Doc, ctx: NodeContext) -> Drafted | Stray | None:
            return None


async def test_an_update_model_with_a_stray_field_fails_the_run_naming_node_and_field() -> None:
    class Local(BaseModel):  # local to this function: its annotation does not resolve at
        draft: str = ""  # registration, so the run-time check is what refuses it
        colour: str = "red"

    async def paint(state: Doc, ctx: NodeContext) -> Local:
        return Local(draft="x")

    async def loose(state: Doc, ctx: NodeContext) -> NodeUpdate:
        return Stray(draft="x")

    for fn in (paint, loose):
        wf = Workflow("stray-at-run", Doc)
        wf.add_node("paint", fn)  # registration cannot tell
        wf.edge("paint", END)
        result, _ = await _run(wf)
        assert result.status == "failed"
        error = result.error or ""
        assert "node 'paint'" in error and "'colour'" in error, error
        assert result.state.draft == ""  # nothing of the bad update was applied


async def test_returning_the_state_applies_what_changed() -> None:
    wf = Workflow("whole", Doc)

    @wf.node()
    async def write(state: Doc, ctx: NodeContext) -> Doc:
        return state.model_copy(update={"draft": "v1", "score": state.score + 1})

    @wf.node()
    async def rebuild(state: Doc, ctx: NodeContext) -> Doc:
        # A fresh Doc: its unset defaults (score, notes) must not wipe the state's values.
        return Doc(task=state.task, summary=f"{state.draft} scored {state.score}")

    wf.edge("write", "rebuild")
    wf.edge("rebuild", END)
    result, store = await _run(wf, score=4, notes=["n"])
    assert result.status == "succeeded", result.error
    assert result.state.model_dump() == {
        "task": "t",
        "draft": "v1",
        "score": 5,
        "notes": ["n"],
        "summary": "v1 scored 5",
    }
    assert await _changed(store, result.run_id) == {
        "write": ["draft", "score"],
        "rebuild": ["summary"],
    }


async def test_parallel_branches_returning_the_state_keep_each_others_changes() -> None:
    wf = Workflow("branches", Doc)

    async def start(state: Doc, ctx: NodeContext) -> Drafted:
        return Drafted(score=1)  # the merged state now has every field set

    async def drafter(state: Doc, ctx: NodeContext) -> Doc:
        return state.model_copy(update={"draft": "d"})

    async def scorer(state: Doc, ctx: NodeContext) -> Doc:
        return state.model_copy(update={"score": 9})

    async def join(state: Doc, ctx: NodeContext) -> Drafted:
        return Drafted(draft=state.draft + "!")

    for name, fn in [("start", start), ("drafter", drafter), ("scorer", scorer)]:
        wf.add_node(name, fn)
    wf.add_node("join", join)
    wf.fan_out("start", ["drafter", "scorer"], join="join")
    wf.edge("join", END)
    result, _ = await _run(wf)
    assert result.status == "succeeded", result.error
    assert (result.state.draft, result.state.score) == ("d!", 9)


async def test_a_mapping_still_works_and_is_validated() -> None:
    wf = Workflow("mapping", Doc)

    @wf.node()
    async def write(state: Doc, ctx: NodeContext) -> dict[str, Any]:
        return {"draft": "v1", "score": "3"}  # validated against Doc on merge

    wf.edge("write", END)
    result, _ = await _run(wf)
    assert result.status == "succeeded", result.error
    assert (result.state.draft, result.state.score) == ("v1", 3)

    bad = Workflow("mapping-bad", Doc)

    @bad.node()
    async def typo(state: Doc, ctx: NodeContext) -> dict[str, Any]:
        return {"drafft": "v1"}

    bad.edge("typo", END)
    failed, _ = await _run(bad)
    assert failed.status == "failed" and "drafft" in (failed.error or "")


async def test_a_node_returning_something_else_fails_clearly() -> None:
    wf = Workflow("odd", Doc)

    async def odd(state: Doc, ctx: NodeContext) -> Any:
        return "draft"

    wf.add_node("odd", odd)
    wf.edge("odd", END)
    result, _ = await _run(wf)
    assert result.status == "failed"
    assert "node 'odd' returned str" in (result.error or "")


async def test_returning_the_given_state_object_is_refused() -> None:
    """Its in-place changes could not be told apart from the state it was given."""
    wf = Workflow("in-place", Doc)

    async def append(state: Doc, ctx: NodeContext) -> Doc:
        state.notes.append("lost?")
        return state

    wf.add_node("append", append)
    wf.edge("append", END)
    result, _ = await _run(wf)
    assert result.status == "failed"
    assert "returned the state object it was given" in (result.error or "")


async def test_plugins_see_a_typed_update_as_a_delta_of_its_set_fields() -> None:
    seen: list[dict[str, Any]] = []

    class Watch:
        async def before_node(self, ctx: NodeContext, state: BaseModel) -> None:
            return None

        async def after_node(
            self, ctx: NodeContext, state: BaseModel, delta: dict[str, Any]
        ) -> dict[str, Any]:
            seen.append(dict(delta))
            return delta

    wf = Workflow("watched", Doc)

    @wf.node()
    async def write(state: Doc, ctx: NodeContext) -> Drafted:
        return Drafted(draft="v1")

    wf.edge("write", END)
    result = await WorkflowRunner(wf, InMemoryCheckpointStore(), plugins=[Watch()]).start(
        {"task": "t"}
    )
    assert result.status == "succeeded" and seen == [{"draft": "v1"}]


async def test_resume_after_a_crash_repeats_no_completed_typed_node() -> None:
    runs: list[str] = []
    crash = True
    wf = Workflow("typed-resume", Doc)

    @wf.node()
    async def write(state: Doc, ctx: NodeContext) -> Drafted:
        runs.append("write")
        return Drafted(draft="v1", score=1)

    @wf.node()
    async def review(state: Doc, ctx: NodeContext) -> Doc:
        runs.append("review")
        if crash:
            raise KeyboardInterrupt  # the process dies inside the second node
        return state.model_copy(update={"notes": [*state.notes, "ok"]})

    @wf.node()
    async def summarise(state: Doc, ctx: NodeContext) -> Drafted | None:
        runs.append("summarise")
        return None

    wf.edge("write", "review")
    wf.edge("review", "summarise")
    wf.edge("summarise", END)
    store = InMemoryCheckpointStore()
    runner = WorkflowRunner(wf, store)
    run_id = await store.create_run("typed-resume", {"task": "t"})
    with pytest.raises(KeyboardInterrupt):
        await runner.resume(run_id)
    crash = False
    result = await runner.resume(run_id)
    assert result.status == "succeeded", result.error
    assert runs == ["write", "review", "review", "summarise"]  # write ran once
    assert (result.state.draft, result.state.score, result.state.notes) == ("v1", 1, ["ok"])
    assert store.delta_count(run_id) == 3
