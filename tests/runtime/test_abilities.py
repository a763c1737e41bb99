from __future__ import annotations

import json

import pytest

from arbor.core.config import Settings
from arbor.core.errors import ProviderHTTPError
from arbor.llm.client import LLMClient
from arbor.llm.types import ChatRequest
from arbor.runtime.abilities import MAX_BATCH_PROMPTS, abilities
from arbor.testing import FunctionModel


def _reply(request: ChatRequest) -> str:
    text = request.messages[-1].content or ""
    if text == "boom":
        raise ProviderHTTPError("upstream said no", status_code=400)
    return f"answer to {text}"


@pytest.fixture
async def client() -> LLMClient:
    settings = Settings(default_model="test:f", llm={"cache": {"enabled": False}})  # type: ignore[arg-type]
    return LLMClient(settings, models={"test:f": FunctionModel(_reply)})


async def test_echo_query_and_batch_query(client: LLMClient) -> None:
    echo, query, batch = abilities(client)
    assert [t.name for t in (echo, query, batch)] == ["echo", "query_llm", "batch_query"]
    assert (await echo.invoke('{"text": "hi there"}')).content == "hi there"
    assert (await query.invoke('{"prompt": "q1"}')).content == "answer to q1"
    result = await batch.invoke(json.dumps({"prompts": ["a", "boom", "c"]}))
    answers = json.loads(result.content)
    assert answers[0] == "answer to a" and answers[2] == "answer to c"
    assert answers[1].startswith("error: http: upstream said no")


async def test_batch_query_refuses_empty_and_oversized_fan_outs(client: LLMClient) -> None:
    batch = abilities(client)[2]
    assert not (await batch.invoke('{"prompts": []}')).ok
    too_many = json.dumps({"prompts": ["x"] * (MAX_BATCH_PROMPTS + 1)})
    result = await batch.invoke(too_many)
    assert not result.ok and "at most 50" in result.content
    with pytest.raises(ValueError, match="concurrency"):
        abilities(client, concurrency=0)


async def test_an_agent_calls_the_abilities(client: LLMClient) -> None:
    from arbor.agents.agent import Agent
    from arbor.llm.types import ToolCall
    from arbor.testing import ScriptedModel

    model = ScriptedModel([[ToolCall(id="c1", name="echo", arguments='{"text": "ping"}')], "done"])
    settings = Settings(default_model="test:s", llm={"cache": {"enabled": False}})  # type: ignore[arg-type]
    scripted = LLMClient(settings, models={"test:s": model})
    agent = Agent("prober", "Use tools.", tools=abilities(scripted))
    result = await agent.run("probe", client=scripted)
    assert result.output == "done"
    assert [r.result.content for r in result.tool_calls] == ["ping"]
