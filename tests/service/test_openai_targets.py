"""Agents (``agent:<name>``) and workflows (``workflow:<name>``) answering as chat models,
driven by the official ``openai`` SDK against the app, on test doubles (no network)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import openai
import pytest
from _openai import APPROVE, async_sdk, echo_or_review
from fastapi import FastAPI
from pydantic import BaseModel

from _workflows import gate, slow
from arbor.agents.workflow import END, NodeContext, RunEvent, Workflow
from arbor.agents.workflow.builtin import review_loop
from arbor.llm.model import Model
from arbor.runtime.runs import RunManager
from arbor.service.context import ServiceContext
from arbor.service.openai_wire import KEEPALIVE
from arbor.service.routes import openai as openai_routes
from arbor.store.agents import AgentRepository
from arbor.testing import FunctionModel, ScriptedModel

DRAFT = "def add(a, b):\n    return a + b\n"


class NumState(BaseModel):
    x: int
    doubled: int = 0


def doubler(model: str | None = None) -> Workflow[NumState]:
    wf = Workflow("doubler", NumState)

    async def double(state: NumState, ctx: NodeContext) -> dict[str, Any]:
        if state.x < 0:
            raise ValueError("negative numbers are not allowed")
        call = {"agent": "doubler", "model": "test:echo", "input_tokens": 7, "output_tokens": 5}
        await ctx.store.append_event(ctx.run_id, RunEvent("llm_call", ctx.node, call))
        return {"doubled": state.x * 2}

    wf.add_node("double", double)
    wf.edge("double", END)
    return wf


@pytest.fixture
def scripted() -> ScriptedModel:
    return ScriptedModel([DRAFT, APPROVE], name="scripted")


@pytest.fixture
def critic() -> FunctionModel:
    return FunctionModel(lambda request: APPROVE, name="critic")


@pytest.fixture
def service_models(scripted: ScriptedModel, critic: FunctionModel) -> dict[str, Model]:
    return {
        "test:echo": FunctionModel(echo_or_review, name="echo"),
        "test:scripted": scripted,
        "test:critic": critic,
    }


@pytest.fixture
def slow_gates() -> tuple[asyncio.Event, asyncio.Event]:
    return asyncio.Event(), asyncio.Event()


@pytest.fixture
async def runs(
    service_ctx: ServiceContext, slow_gates: tuple[asyncio.Event, asyncio.Event]
) -> RunManager:
    """The context's run manager, serving review-loop on the scripted model and two test
    workflows."""
    if service_ctx.runs is not None:
        await service_ctx.runs.aclose()
    service_ctx.runs = RunManager(
        service_ctx.checkpoints,
        service_ctx.client,
        workflows={
            "review-loop": lambda model: review_loop("test:scripted"),
            "gate": gate,
            "doubler": doubler,
            "slow": lambda model: slow(*slow_gates),
        },
    )
    return service_ctx.runs


@pytest.fixture
async def sdk(app: FastAPI, admin_key: str, runs: RunManager) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(app, admin_key) as client:
        yield client


@pytest.fixture
async def agents(service_ctx: ServiceContext) -> AgentRepository:
    repo = AgentRepository(service_ctx.db)
    helper = {"instructions": "Be terse. The task: {{ task }}", "model": "test:echo"}
    await repo.create("helper", helper)
    await repo.create(
        "critic",
        {"role": "reviewer", "model": "test:critic", "variables": {"context": "Python"}},
    )
    return repo


def _user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


# ---- agents ---------------------------------------------------------------------------
async def test_an_agent_answers_plain_and_streamed(
    sdk: openai.AsyncOpenAI, agents: AgentRepository, service_models: dict[str, Model]
) -> None:
    messages = [
        {"role": "system", "content": "client system prompt"},
        {"role": "user", "content": "earlier question"},
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": "hello agent"},
    ]
    raw = await sdk.chat.completions.with_raw_response.create(
        model="agent:helper", messages=messages
    )
    plain = raw.parse()
    assert plain.choices[0].message.content == "echo: hello agent"
    assert plain.model == "agent:helper" and plain.id.startswith("run_")
    assert raw.headers["x-arbor-run-id"] == plain.id
    assert plain.usage is not None and plain.usage.prompt_tokens > 0
    echo = service_models["test:echo"]
    assert isinstance(echo, FunctionModel)
    sent = echo.calls[0]
    assert [m.role for m in sent.messages] == ["system", "user", "assistant", "user"]
    assert sent.messages[0].content == "Be terse. The task: hello agent"  # agent's wins
    assert sent.context.key_id is not None and sent.context.agent_id == "helper"

    stream = await sdk.chat.completions.create(
        model="agent:helper",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


async def test_a_role_agent_takes_its_variables_from_a_json_message(
    sdk: openai.AsyncOpenAI, agents: AgentRepository, critic: FunctionModel
) -> None:
    ask = json.dumps({"task": "Add two numbers", "code": DRAFT})
    reply = await sdk.chat.completions.create(model="agent:critic", messages=_user(ask))
    review = json.loads(reply.choices[0].message.content or "")
    assert review["verdict"] == "approve"
    system = critic.calls[0].messages[0]
    assert system.role == "system"
    assert "Add two numbers" in (system.content or "") and "return a + b" in (system.content or "")
    # plain text fills only the task: the reviewer also needs the code
    with pytest.raises(openai.BadRequestError, match="code"):
        await sdk.chat.completions.create(model="agent:critic", messages=_user("review this"))


async def test_unknown_disabled_and_failing_agents(
    sdk: openai.AsyncOpenAI, agents: AgentRepository, service_ctx: ServiceContext
) -> None:
    with pytest.raises(openai.NotFoundError):
        await sdk.chat.completions.create(model="agent:nobody", messages=_user("hi"))
    helper = await agents.get_by_name("helper")
    await agents.set_status(helper.id, "disabled")
    with pytest.raises(openai.ConflictError) as err:
        await sdk.chat.completions.create(model="agent:helper", messages=_user("hi"))
    assert err.value.response.headers["x-should-retry"] == "false"
    # an agent whose output never validates fails with 502 and counts towards flapping
    broken = {"role": "reviewer", "model": "test:echo", "max_output_retries": 0}
    await agents.create("broken", broken)
    ask = json.dumps({"task": "t", "code": "c"})
    for _ in range(3):
        with pytest.raises(openai.InternalServerError) as failed:
            await sdk.chat.completions.create(model="agent:broken", messages=_user(ask))
        assert failed.value.status_code == 502
    assert (await agents.get_by_name("broken")).status == "disabled_flapping"


async def test_the_last_message_must_be_the_users(
    sdk: openai.AsyncOpenAI, agents: AgentRepository
) -> None:
    with pytest.raises(openai.BadRequestError, match="last message must be a user message"):
        await sdk.chat.completions.create(
            model="agent:helper", messages=[{"role": "assistant", "content": "hi"}]
        )


# ---- workflows ------------------------------------------------------------------------
async def test_review_loop_answers_with_its_draft(
    sdk: openai.AsyncOpenAI, scripted: ScriptedModel, service_ctx: ServiceContext
) -> None:
    raw = await sdk.chat.completions.with_raw_response.create(
        model="workflow:review-loop", messages=_user("Write add(a, b) in Python")
    )
    reply = raw.parse()
    run_id = raw.headers["x-arbor-run-id"]
    assert reply.id == run_id and reply.model == "workflow:review-loop"
    assert reply.choices[0].message.content == DRAFT
    scripted.assert_consumed()
    assert scripted.calls[0].messages[-1].content == "Write add(a, b) in Python"
    run = await service_ctx.checkpoints.runs.get(run_id)
    assert run.status == "succeeded" and run.input["task"] == "Write add(a, b) in Python"


async def test_review_loop_streams_progress_then_the_output(
    sdk: openai.AsyncOpenAI, scripted: ScriptedModel
) -> None:
    stream = await sdk.chat.completions.create(
        model="workflow:review-loop",
        messages=_user("Write add(a, b) in Python"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    run_id = chunks[0].id
    assert run_id.startswith("run_") and f"Run `{run_id}`" in text
    steps = ("`write` started", "`write` finished", "`review` started", "`review` finished")
    order = [text.index(step) for step in steps]
    assert order == sorted(order)
    assert text.endswith(DRAFT)
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    scripted.assert_consumed()


async def test_a_paused_run_says_it_waits_for_approval(sdk: openai.AsyncOpenAI) -> None:
    reply = await sdk.chat.completions.create(model="workflow:gate", messages=_user("ship v2"))
    text = reply.choices[0].message.content or ""
    assert "waiting for approval at node `sign_off`: Ship it?" in text
    assert f"/v1/runs/{reply.id}/approve" in text
    stream = await sdk.chat.completions.create(
        model="workflow:gate", messages=_user("ship v3"), stream=True
    )
    streamed = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert "`prepare` finished" in streamed and "waiting for approval" in streamed


async def test_workflow_inputs(sdk: openai.AsyncOpenAI) -> None:
    reply = await sdk.chat.completions.create(model="workflow:doubler", messages=_user('{"x": 21}'))
    assert '"doubled": 42' in (reply.choices[0].message.content or "")
    assert reply.usage is not None  # summed over the run's llm_call events
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (7, 5)
    stream = await sdk.chat.completions.create(
        model="workflow:doubler",
        messages=_user('{"x": 2}'),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "`doubler` asked `test:echo` (12 tokens)" in text
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 12
    with pytest.raises(openai.BadRequestError, match="takes no text input"):
        await sdk.chat.completions.create(model="workflow:doubler", messages=_user("twenty"))
    with pytest.raises(openai.BadRequestError, match="x"):
        await sdk.chat.completions.create(model="workflow:doubler", messages=_user('{"x": "a"}'))
    failed = await sdk.chat.completions.create(
        model="workflow:doubler", messages=_user('{"x": -1}')
    )
    assert "failed" in (failed.choices[0].message.content or "")
    assert "negative numbers are not allowed" in (failed.choices[0].message.content or "")


async def test_a_quiet_workflow_stream_sends_keepalives(
    make_http: Any,
    admin_key: str,
    runs: RunManager,
    slow_gates: tuple[asyncio.Event, asyncio.Event],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(openai_routes, "KEEPALIVE_SECONDS", 0.02)
    started, release = slow_gates
    three_sent = asyncio.Event()
    real = openai_routes.with_keepalive

    async def counted(
        frames: AsyncGenerator[bytes, None], interval: float
    ) -> AsyncGenerator[bytes, None]:
        sent = 0
        async for frame in real(frames, interval):
            if frame == KEEPALIVE:
                sent += 1
            if sent >= 3:
                three_sent.set()
            yield frame

    monkeypatch.setattr(openai_routes, "with_keepalive", counted)

    async def release_later() -> None:
        # The node finishes once three keep-alives went out, however slowly they come.
        await started.wait()
        await asyncio.wait_for(three_sent.wait(), 20)
        release.set()

    body = {"model": "workflow:slow", "messages": _user("wait a bit"), "stream": True}
    async with make_http(admin_key) as http, asyncio.TaskGroup() as tg:
        tg.create_task(release_later())
        reply = await http.post("/v1/chat/completions", json=body)
    frames = reply.text.split("\n\n")
    assert frames.count(": keep-alive") >= 3
    data = [json.loads(f[6:]) for f in frames if f.startswith("data: {")]
    text = "".join(d["choices"][0]["delta"].get("content") or "" for d in data)
    assert "`wait` finished" in text and '"wait"' in text  # the output names both steps
    assert frames[-2] == "data: [DONE]"
