"""``Agent`` runs through a real ``LLMClient`` with scripted and function models."""

from __future__ import annotations

import asyncio
import json
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel

import arbor.agents
from arbor.agents import (
    Agent,
    AgentEvent,
    InstructionsError,
    MaxStepsExceededError,
    Memory,
    MemoryPolicy,
    OutputValidationError,
    RunFinished,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolContext,
    tool,
)
from arbor.core.config import Settings
from arbor.core.errors import ArborError
from arbor.llm.client import LLMClient
from arbor.llm.types import CallContext, ChatRequest, ChatResponse, Message, ToolCall, Usage
from arbor.testing import FunctionModel, ScriptedModel
from arbor.testing.models import Reply


def _client(model: Any, **llm: Any) -> LLMClient:
    return LLMClient(Settings(llm={"cache": {"enabled": False}, **llm}), models={"test:a": model})


def _call(name: str, arguments: str = "{}", id: str = "c1") -> ToolCall:
    return ToolCall(id=id, name=name, arguments=arguments)


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Answer(BaseModel):
    value: int
    reason: str = ""


def test_public_api_is_exactly_all() -> None:
    public = {
        name
        for name, value in vars(arbor.agents).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    assert public - {"annotations"} == set(arbor.agents.__all__)
    assert arbor.agents.__all__ == sorted(arbor.agents.__all__)


async def test_a_plain_run_renders_instructions_and_returns_text() -> None:
    model = ScriptedModel(["Bonjour, Ada."])
    agent = Agent("greeter", "Greet {{ name }} in {{ deps.lang }}.", model="test:a")
    async with model:
        result = await agent.run(
            "Hi", client=_client(model), deps={"name": "Ada", "lang": "French"}
        )
    assert result.output == "Bonjour, Ada."
    assert result.steps == 1 and result.tool_calls == []
    assert [m.role for m in result.messages] == ["user", "assistant"]
    (request,) = model.calls
    assert request.messages[0] == Message.system("Greet Ada in French.")
    assert request.tools is None and request.response_format is None
    assert request.context.agent_id == "greeter"
    assert request.context.run_id == result.run_id and result.run_id.startswith("run_")


async def test_context_is_passed_through_and_default_model_comes_from_settings() -> None:
    model = ScriptedModel(["ok"])
    client = LLMClient(
        Settings(default_model="test:a", llm={"cache": {"enabled": False}}),
        models={"test:a": model},
    )
    context = CallContext(run_id="run_given", agent_id="custom", key_id="k1")
    result = await Agent("a").run("hi", client=client, context=context)
    assert result.run_id == "run_given"
    assert model.calls[0].model == "test:a"
    assert model.calls[0].context == context
    assert model.calls[0].messages == [Message.user("hi")]  # no instructions, no system


async def test_missing_template_variable_is_a_clear_error_before_any_call() -> None:
    model = ScriptedModel([])
    agent = Agent("a", "Hello {{ deps.user }} from {{ team }}", model="test:a")
    with pytest.raises(InstructionsError, match="'team' is undefined") as info:
        await agent.run("x", client=_client(model), deps={"user": "u"})
    assert isinstance(info.value, ArborError) and info.value.agent == "a"
    assert model.calls == []


def test_instructions_are_sandboxed() -> None:
    agent = Agent("a", "{{ deps.__class__.__mro__ }}")
    with pytest.raises(InstructionsError):
        agent.render_instructions({})
    assert Agent("a", "{{ deps.n * 2 }}").render_instructions({"n": 21}) == "42"


async def test_tool_loop_sends_results_back_and_records_calls() -> None:
    model = ScriptedModel([[_call("add", '{"a": 1, "b": 2}')], "It is 3."])
    agent = Agent("calc", model="test:a", tools=[add])
    async with model:
        result = await agent.run("1+2?", client=_client(model))
    assert result.output == "It is 3."
    assert result.steps == 2
    assert [(r.call.name, r.result.content) for r in result.tool_calls] == [("add", "3")]
    first, second = model.calls
    assert [t.name for t in first.tools or []] == ["add"]
    assert second.messages[-1] == Message.tool("c1", "3")
    assert [m.role for m in result.messages] == ["user", "assistant", "tool", "assistant"]


async def test_invalid_arguments_go_back_to_the_model_and_the_run_continues() -> None:
    model = ScriptedModel(
        [
            [_call("add", '{"a": "one", "b": 2}')],
            [_call("add", '{"a": 1, "b": 2}', id="c2")],
            "3",
        ]
    )
    async with model:
        result = await Agent("calc", model="test:a", tools=[add]).run("?", client=_client(model))
    assert result.output == "3"
    error = model.calls[1].messages[-1]
    assert error.role == "tool" and error.tool_call_id == "c1"
    assert error.content is not None and "a: Input should be a valid integer" in error.content
    assert [r.result.ok for r in result.tool_calls] == [False, True]


async def test_a_raising_or_unknown_tool_does_not_crash_the_run() -> None:
    @tool
    async def explode() -> str:
        raise RuntimeError("disk on fire")

    model = ScriptedModel([[_call("explode"), _call("nope", id="c2")], "recovered"])
    async with model:
        result = await Agent("a", model="test:a", tools=[explode]).run("go", client=_client(model))
    assert result.output == "recovered"
    contents = [m.content for m in model.calls[1].messages[-2:]]
    assert contents == [
        "Error: RuntimeError: disk on fire",
        "Error: unknown tool 'nope' (available: explode)",
    ]


async def test_a_timed_out_tool_is_reported_to_the_model() -> None:
    @tool(timeout=0.05)
    async def slow() -> str:
        await asyncio.sleep(10)
        return "late"

    model = ScriptedModel([[_call("slow")], "gave up"])
    async with model:
        result = await Agent("a", model="test:a", tools=[slow]).run("go", client=_client(model))
    assert result.tool_calls[0].result.error == "tool 'slow' timed out after 0.05s"
    assert result.output == "gave up"


async def test_several_tool_calls_run_concurrently_with_context() -> None:
    barrier = asyncio.Barrier(2)
    seen: list[ToolContext] = []

    @tool(timeout=2)
    async def meet(who: str, ctx: ToolContext) -> str:
        seen.append(ctx)
        await barrier.wait()  # both calls must be in flight at once to pass
        return who

    calls = [_call("meet", '{"who": "x"}', "c1"), _call("meet", '{"who": "y"}', "c2")]
    model = ScriptedModel([calls, "met"])
    async with model:
        result = await Agent("a", model="test:a", tools=[meet]).run("go", client=_client(model))
    assert [r.result.content for r in result.tool_calls] == ["x", "y"]
    assert sorted(c.idempotency_key for c in seen) == [
        f"{result.run_id}:a:c1",
        f"{result.run_id}:a:c2",
    ]


async def test_sync_tool_does_not_block_other_runs() -> None:
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    @tool(timeout=5)
    def wait_for_other_run() -> str:
        # Blocks its thread until the other run (on the event loop) has started.
        asyncio.run_coroutine_threadsafe(started.wait(), loop).result(timeout=4)
        return "saw it"

    def reply(request: ChatRequest) -> Reply:
        if request.messages[-1].role == "user":
            if request.tools:
                return [_call("wait_for_other_run")]
            started.set()
            return "other"
        return request.messages[-1].content or ""

    client = _client(FunctionModel(reply))
    blocking = Agent("b", model="test:a", tools=[wait_for_other_run])
    other = Agent("o", model="test:a")
    results = await asyncio.gather(
        blocking.run("go", client=client), other.run("go", client=client)
    )
    assert [r.output for r in results] == ["saw it", "other"]


async def test_structured_output_reasks_on_invalid_output_then_validates() -> None:
    model = ScriptedModel(["not json at all", '{"value": "x"}', '```json\n{"value": 42}\n```'])
    agent = Agent("a", model="test:a", output_type=Answer)
    async with model:
        result = await agent.run("the answer?", client=_client(model))
    assert result.output == Answer(value=42)
    assert result.steps == 3
    fmt = model.calls[0].response_format
    assert fmt == {
        "type": "json_schema",
        "json_schema": {"name": "Answer", "schema": Answer.model_json_schema()},
    }
    reask = model.calls[2].messages[-1]
    assert reask.role == "user" and reask.content is not None
    assert "value: Input should be a valid integer" in reask.content


async def test_reasks_exhausted_raise_output_validation_error() -> None:
    model = ScriptedModel(["nope", "{}"])
    agent = Agent("a", model="test:a", output_type=Answer, max_output_retries=1)
    async with model:
        with pytest.raises(OutputValidationError, match="value: Field required") as info:
            await agent.run("?", client=_client(model))
    err = info.value
    assert (err.kind, err.attempts, err.last_output, err.agent) == ("output_invalid", 2, "{}", "a")


async def test_max_steps_exceeded_is_a_clear_error() -> None:
    model = ScriptedModel([[_call("add", '{"a": 1, "b": 1}', id=f"c{i}")] for i in range(3)])
    agent = Agent("loopy", model="test:a", tools=[add], max_steps=3)
    async with model:
        with pytest.raises(MaxStepsExceededError, match="after 3 step") as info:
            await agent.run("?", client=_client(model))
    assert info.value.max_steps == 3 and info.value.run_id.startswith("run_")


async def test_usage_and_cost_are_summed_over_calls() -> None:
    def response(n: int, message: Message) -> ChatResponse:
        usage = Usage(input_tokens=100 * n, output_tokens=10 * n)
        return ChatResponse(id=f"r{n}", model="a", message=message, usage=usage)

    model = ScriptedModel(
        [
            response(1, Message.assistant(None, [_call("add", '{"a": 1, "b": 1}')])),
            response(2, Message.assistant("2")),
        ]
    )
    client = _client(model, prices={"test:a": {"input": 1.0, "output": 2.0}})
    async with model:
        result = await Agent("a", model="test:a", tools=[add]).run("?", client=client)
    assert result.usage == Usage(input_tokens=300, output_tokens=30)
    assert result.cost_usd == pytest.approx((300 * 1.0 + 30 * 2.0) / 1e6)


async def test_streaming_events_arrive_in_order_and_reach_the_callback() -> None:
    model = ScriptedModel([[_call("add", '{"a": 2, "b": 2}')], "The sum is four."])
    agent = Agent("a", model="test:a", tools=[add])
    seen: list[AgentEvent] = []

    async def on_chunk(event: AgentEvent) -> None:
        seen.append(event)

    async with model:
        events = [e async for e in agent.run_stream("?", client=_client(model), on_chunk=on_chunk)]
    assert events == seen
    kinds = [type(e) for e in events]
    assert kinds[:2] == [ToolCallStarted, ToolCallFinished]
    assert set(kinds[2:-1]) == {TextDelta} and len(kinds[2:-1]) > 1
    assert kinds[-1] is RunFinished
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    final = events[-1]
    assert isinstance(final, RunFinished)
    assert final.result.output == text == "The sum is four."
    assert final.result.tool_calls[0].result.content == "4"
    assert final.result.usage.total_tokens > 0


async def test_streamed_structured_output_is_validated() -> None:
    model = ScriptedModel(['{"value": 7, "reason": "counted"}'])
    agent = Agent("a", model="test:a", output_type=Answer)
    async with model:
        events = [e async for e in agent.run_stream("?", client=_client(model))]
    final = events[-1]
    assert isinstance(final, RunFinished)
    assert final.result.output == Answer(value=7, reason="counted")


async def test_two_agents_with_different_tools_do_not_interfere() -> None:
    @tool
    def alpha() -> str:
        return "from alpha"

    @tool(name="alpha")  # same name, different agent: no clash
    def other_alpha() -> str:
        return "from the other alpha"

    @tool
    def beta() -> str:
        return "from beta"

    def reply(request: ChatRequest) -> Reply:
        last = request.messages[-1]
        if last.role == "user":
            # Ask for every tool the model was offered, plus one it was not.
            names = [t.name for t in request.tools or []] + ["beta"]
            return [_call(n, id=f"c{i}") for i, n in enumerate(dict.fromkeys(names))]
        return json.dumps([m.content for m in request.messages if m.role == "tool"])

    client = _client(FunctionModel(reply))
    one = Agent("one", model="test:a", tools=[alpha])
    two = Agent("two", model="test:a", tools=[other_alpha, beta])
    r1, r2 = await asyncio.gather(one.run("go", client=client), two.run("go", client=client))
    assert json.loads(r1.output) == ["from alpha", "Error: unknown tool 'beta' (available: alpha)"]
    assert json.loads(r2.output) == ["from the other alpha", "from beta"]
    assert [t.name for t in one.tools] == ["alpha"]


async def test_memory_carries_a_conversation_across_runs_within_bounds() -> None:
    model = ScriptedModel(["first answer", "second answer", "third answer"])
    agent = Agent("a", "Be brief.", model="test:a", memory_policy=MemoryPolicy(max_messages=4))
    client = _client(model)
    memory = agent.new_memory(client)
    async with model:
        for prompt in ("one", "two", "three"):
            await agent.run(prompt, client=client, memory=memory)
    assert [m.content for m in model.calls[1].messages] == [
        "Be brief.",
        "one",
        "first answer",
        "two",
    ]
    assert [m.content for m in memory.messages()] == [
        "Be brief.",
        "second answer",
        "three",
        "third answer",
    ]


async def test_summarize_policy_uses_the_model_to_compact_memory() -> None:
    def reply(request: ChatRequest) -> Reply:
        if request.messages[0].content and request.messages[0].content.startswith("Summarize"):
            return "they said one and two"
        return f"answer {len(request.messages)}"

    fn = FunctionModel(reply)
    policy = MemoryPolicy(max_messages=4, strategy="summarize")
    agent = Agent("a", "sys", model="test:a", memory_policy=policy)
    client = _client(fn)
    memory = agent.new_memory(client)
    for prompt in ("one", "two", "three"):
        await agent.run(prompt, client=client, memory=memory)
    last = fn.calls[-1].messages
    assert last[0].content == "sys"
    assert last[1].content is not None and last[1].content.endswith("they said one and two")
    assert len(last) <= 4
    assert isinstance(memory, Memory)


def test_agent_definition_is_checked() -> None:
    with pytest.raises(TypeError, match="output_type"):
        Agent("a", output_type=int)
    with pytest.raises(ValueError, match="two tools named 'add'"):
        Agent("a", tools=[add, add])
    with pytest.raises(ValueError, match="max_steps"):
        Agent("a", max_steps=0)


async def test_stopping_a_stream_early_closes_it() -> None:
    model = ScriptedModel(["a long reply that streams in several pieces"])
    agent = Agent("a", model="test:a")
    stream = agent.run_stream("?", client=_client(model))
    async for event in stream:
        assert isinstance(event, TextDelta)
        break
    await stream.aclose()
    assert len(model.calls) == 1
