"""Plugins: hooks on an agent's LLM and tool calls, errors from plugins, the validation
plugin on agent output (re-ask) and on node deltas (fails the node)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field

from arbor.agents import (
    Agent,
    HookContext,
    OutputValidationError,
    Plugin,
    PluginError,
    Reask,
    ValidationPlugin,
    tool,
)
from arbor.agents.tools import ToolResult
from arbor.agents.workflow import (
    END,
    InMemoryCheckpointStore,
    NodeContext,
    Workflow,
    WorkflowRunner,
)
from arbor.core.config import Settings
from arbor.llm.client import LLMClient
from arbor.llm.types import ChatRequest, ChatResponse, ToolCall
from arbor.testing import ScriptedModel


def _client(model: ScriptedModel) -> LLMClient:
    return LLMClient(Settings(llm={"cache": {"enabled": False}}), models={"test:a": model})


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Recorder(Plugin):
    def __init__(self) -> None:
        self.log: list[str] = []

    async def before_llm_call(self, ctx: HookContext, request: ChatRequest) -> ChatRequest:
        self.log.append(f"before_llm {ctx.agent}")
        return request.model_copy(update={"max_tokens": 50})

    async def after_llm_call(
        self, ctx: HookContext, request: ChatRequest, response: ChatResponse
    ) -> ChatResponse:
        self.log.append(f"after_llm {response.finish_reason}")
        return response

    async def before_tool_call(self, ctx: HookContext, call: ToolCall) -> ToolCall:
        self.log.append(f"before_tool {call.name}")
        return call.model_copy(update={"arguments": '{"a": 40, "b": 2}'})  # rewrite the call

    async def after_tool_call(
        self, ctx: HookContext, call: ToolCall, result: ToolResult
    ) -> ToolResult:
        self.log.append(f"after_tool {result.content}")
        return ToolResult.success(f"sum={result.content}")


async def test_hooks_see_and_may_replace_requests_calls_and_results() -> None:
    model = ScriptedModel([[ToolCall(id="c", name="add", arguments='{"a": 1, "b": 1}')], "42"])
    recorder = Recorder()
    async with _client(model) as client:
        agent = Agent("calc", "Add.", model="test:a", tools=[add])
        result = await agent.run("1+1?", client=client, plugins=[recorder])
    assert result.output == "42"
    assert recorder.log == [
        "before_llm calc",
        "after_llm tool_calls",
        "before_tool add",
        "after_tool 42",
        "before_llm calc",
        "after_llm stop",
    ]
    assert all(r.max_tokens == 50 for r in model.calls)
    assert model.calls[1].messages[-1].content == "sum=42"  # the model read the new result


async def test_a_raising_or_misbehaving_plugin_fails_the_run_clearly() -> None:
    class Boom(Plugin):
        async def before_tool_call(self, ctx: HookContext, call: ToolCall) -> ToolCall:
            raise RuntimeError("tool calls are forbidden")

    class Forgetful(Plugin):
        async def before_llm_call(self, ctx: HookContext, request: ChatRequest) -> Any:
            return None  # forgot to return the request

    model = ScriptedModel([[ToolCall(id="c", name="add", arguments='{"a": 1, "b": 1}')]])
    async with _client(model) as client:
        agent = Agent("calc", "Add.", model="test:a", tools=[add])
        with pytest.raises(PluginError, match=r"Boom\.before_tool_call raised RuntimeError"):
            await agent.run("1+1?", client=client, plugins=[Boom()])
        with pytest.raises(PluginError, match="returned NoneType, not ChatRequest") as caught:
            await agent.run("1+1?", client=client, plugins=[Forgetful()])
    assert caught.value.plugin == "Forgetful" and caught.value.hook == "before_llm_call"


class Verdict(BaseModel):
    score: int = Field(ge=0, le=10)


async def test_validation_plugin_reasks_then_accepts_or_gives_up() -> None:
    model = ScriptedModel(['{"score": 11}', '{"score": 7}'])
    plugin = ValidationPlugin(output=Verdict)
    async with _client(model) as client:
        agent = Agent("judge", "Score it.", model="test:a", max_output_retries=1)
        result = await agent.run("score", client=client, plugins=[plugin])
        assert result.output == '{"score": 7}' and result.steps == 2
        assert "less than or equal to 10" in (model.calls[1].messages[-1].content or "")

    def no_shouting(text: str) -> str | None:
        return "do not shout" if text.isupper() else None

    model = ScriptedModel(["NO", "NO"])
    async with _client(model) as client:
        agent = Agent("calm", "Answer.", model="test:a", max_output_retries=1)
        with pytest.raises(OutputValidationError, match="do not shout"):
            await agent.run("hi", client=client, plugins=[ValidationPlugin(output=no_shouting)])
        other = ValidationPlugin(output=no_shouting, agents=["someone-else"])
        model.steps.append("YES")
        assert (await agent.run("hi", client=client, plugins=[other])).output == "YES"


class Score(BaseModel):
    confidence: float = 0.0


async def test_validation_plugin_fails_a_node_with_an_invalid_delta() -> None:
    wf = Workflow("scored", Score)

    async def guess(state: Score, ctx: NodeContext) -> dict[str, Any]:
        return {"confidence": 1.5}

    wf.add_node("guess", guess)
    wf.edge("guess", END)

    class Rules(BaseModel):
        confidence: float = Field(0.0, ge=0.0, le=1.0)

    plugin = ValidationPlugin(nodes={"guess": Rules})
    result = await WorkflowRunner(wf, InMemoryCheckpointStore(), plugins=[plugin]).start({})
    assert result.status == "failed"
    assert result.error is not None and result.error.startswith("plugin: node 'guess'")
    assert "less than or equal to 1" in result.error


async def test_reask_of_a_tool_calling_reply_is_refused_clearly() -> None:
    class Picky(Plugin):
        async def after_llm_call(
            self, ctx: HookContext, request: ChatRequest, response: ChatResponse
        ) -> ChatResponse:
            raise Reask("no tools please")

    model = ScriptedModel([[ToolCall(id="c", name="add", arguments='{"a": 1, "b": 1}')]])
    async with _client(model) as client:
        agent = Agent("calc", "Add.", model="test:a", tools=[add])
        with pytest.raises(PluginError, match="plugin Picky re-asked a reply that calls tools"):
            await agent.run("1+1?", client=client, plugins=[Picky()])
