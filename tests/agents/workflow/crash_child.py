"""A child process for the crash-resume tests: runs (or resumes) a 5-node workflow whose every
node makes one LLM call to the mock upstream, and SIGKILLs itself where told.

    python crash_child.py DB_URL MOCK_URL (--new | --resume RUN_ID) [--kill NODE:PHASE]

PHASE is ``before`` (the previous node has checkpointed, this one has not started) or
``after_call`` (this node's LLM call finished and was recorded; the node has not returned).
Prints the run id, then the final state as JSON. Each node returns a typed partial update
(a model holding only its own field), so resume is checked on typed updates.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
from typing import Any

from pydantic import BaseModel, create_model

from arbor.agents.workflow import END, NodeContext, Workflow, WorkflowRunner
from arbor.agents.workflow.sql import SQLCheckpointStore
from arbor.core.config import Settings
from arbor.llm.client import LLMClient
from arbor.llm.types import ChatRequest, Message
from arbor.store import Database, migrate

NODES = ["plan", "code", "review", "check", "report"]


class State(BaseModel):
    plan: str = ""
    code: str = ""
    review: str = ""
    check: str = ""
    report: str = ""


#: One partial update model per node, e.g. ``plan_update(plan: str)``.
UPDATES: dict[str, type[BaseModel]] = {
    name: create_model(f"{name}_update", **{name: (str, ...)}) for name in NODES
}


def build(kill: tuple[str, str] | None) -> Workflow[State]:
    wf = Workflow("crash5", State)

    def make(name: str) -> Any:
        async def node(state: State, ctx: NodeContext) -> BaseModel:
            if kill == (name, "before"):
                os.kill(os.getpid(), signal.SIGKILL)
            prev = "|".join(getattr(state, n) for n in NODES if getattr(state, n))
            reply = await ctx.complete(
                ChatRequest(model="mock:mock-1", messages=[Message.user(f"{name} after {prev}")])
            )
            if kill == (name, "after_call"):
                os.kill(os.getpid(), signal.SIGKILL)
            return UPDATES[name](**{name: reply.text})

        return node

    for n in NODES:
        wf.add_node(n, make(n))
    for a, b in itertools.pairwise(NODES):
        wf.edge(a, b)
    wf.edge(NODES[-1], END)
    return wf


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("db")
    p.add_argument("mock")
    p.add_argument("--new", action="store_true")
    p.add_argument("--resume")
    p.add_argument("--kill")
    args = p.parse_args()
    kill = tuple(args.kill.split(":")) if args.kill else None
    settings = Settings(
        providers={"mock": {"base_url": args.mock}},  # type: ignore[dict-item]
        llm={"cache": {"enabled": False}},
    )
    db = Database(args.db)
    await migrate(db)
    store = SQLCheckpointStore(db)
    async with LLMClient(settings) as client:
        runner = WorkflowRunner(build(kill), store, client=client)  # type: ignore[arg-type]
        run_id = args.resume or await store.create_run("crash5", State().model_dump())
        print(run_id, flush=True)
        result = await runner.resume(run_id)
        print(json.dumps({"status": result.status, "state": result.state.model_dump()}))
    await db.dispose()


if __name__ == "__main__":
    asyncio.run(main())
