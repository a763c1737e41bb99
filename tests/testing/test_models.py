from __future__ import annotations

import pytest

from arbor.core.errors import ProviderHTTPError
from arbor.llm.types import ChatRequest, Message, ToolCall
from arbor.testing import FunctionModel, ScriptedModel, ScriptError


def _req(text: str = "hi") -> ChatRequest:
    return ChatRequest(model="test:scripted", messages=[Message.user(text)])


async def test_scripted_replies_in_order_and_records_calls() -> None:
    model = ScriptedModel(["one", [ToolCall(id="c1", name="add", arguments='{"a":1}')]])
    first = await model.complete(_req("a"))
    second = await model.complete(_req("b"))
    assert first.text == "one" and first.finish_reason == "stop"
    assert second.message.tool_calls and second.message.tool_calls[0].name == "add"
    assert second.finish_reason == "tool_calls"
    assert [c.messages[0].content for c in model.calls] == ["a", "b"]
    model.assert_consumed()


async def test_scripted_fails_on_unexpected_call() -> None:
    model = ScriptedModel(["only"])
    await model.complete(_req())
    with pytest.raises(ScriptError, match="call #2"):
        await model.complete(_req("extra"))


async def test_scripted_fails_on_unconsumed_steps() -> None:
    model = ScriptedModel(["a", "b"])
    await model.complete(_req())
    with pytest.raises(ScriptError, match="1 scripted step"):
        await model.aclose()


async def test_scripted_raises_scripted_errors() -> None:
    model = ScriptedModel([ProviderHTTPError("boom", status_code=503), "ok"])
    with pytest.raises(ProviderHTTPError):
        await model.complete(_req())
    assert (await model.complete(_req())).text == "ok"


async def test_scripted_stream_yields_chunks_then_usage() -> None:
    model = ScriptedModel(["hello streaming world"])
    chunks = [c async for c in model.stream(_req())]
    assert "".join(c.content or "" for c in chunks) == "hello streaming world"
    assert len(chunks) >= 3
    assert chunks[-1].usage is not None and chunks[-1].usage.output_tokens > 0


async def test_function_model_sync_and_async() -> None:
    sync = FunctionModel(lambda r: f"echo {r.messages[-1].content}")
    assert (await sync.complete(_req("x"))).text == "echo x"

    async def reply(r: ChatRequest) -> str:
        return str(len(r.messages))

    assert (await FunctionModel(reply).complete(_req())).text == "1"
