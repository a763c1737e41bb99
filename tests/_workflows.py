"""Workflows and model replies shared by the service's run tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic import BaseModel

from arbor.agents.workflow import END, NodeContext, Workflow
from arbor.llm.types import ChatRequest

APPROVE = json.dumps({"verdict": "approve", "issues": [], "summary": "Fine."})


def review_reply(request: ChatRequest) -> str:
    """The writer gets a draft, the reviewer an approval: review-loop ends in two calls."""
    if "JSON object" in (request.messages[-1].content or ""):
        return APPROVE
    return "def add(a, b):\n    return a + b\n"


class GateState(BaseModel):
    task: str
    approved: bool | None = None
    approval_reason: str = ""
    result: str = ""


def gate(model: str | None = None) -> Workflow[GateState]:
    """prepare → approval → ship (approved) or drop (rejected)."""
    wf = Workflow("gate", GateState)

    async def prepare(state: GateState, ctx: NodeContext) -> dict[str, Any]:
        return {"result": "prepared"}

    async def ship(state: GateState, ctx: NodeContext) -> dict[str, Any]:
        return {"result": f"shipped ({state.approval_reason})"}

    async def drop(state: GateState, ctx: NodeContext) -> dict[str, Any]:
        return {"result": f"dropped ({state.approval_reason})"}

    wf.add_node("prepare", prepare)
    wf.add_approval("sign_off", prompt="Ship it?")
    wf.add_node("ship", ship)
    wf.add_node("drop", drop)
    wf.edge("prepare", "sign_off")
    wf.route("sign_off", lambda s: "ship" if s.approved else "drop", ["ship", "drop"])
    wf.edge("ship", END)
    wf.edge("drop", END)
    return wf


class SlowState(BaseModel):
    task: str
    steps: list[str] = []


def slow(started: asyncio.Event, release: asyncio.Event) -> Workflow[SlowState]:
    """first → wait (sets ``started``, blocks until ``release``) → END."""
    wf = Workflow("slow", SlowState)

    async def first(state: SlowState, ctx: NodeContext) -> dict[str, Any]:
        return {"steps": [*state.steps, "first"]}

    async def wait(state: SlowState, ctx: NodeContext) -> dict[str, Any]:
        started.set()
        await release.wait()
        return {"steps": [*state.steps, "wait"]}

    wf.add_node("first", first)
    wf.add_node("wait", wait)
    wf.edge("first", "wait")
    wf.edge("wait", END)
    return wf
