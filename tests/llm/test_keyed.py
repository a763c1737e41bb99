"""KeyedClient: a run's LLM calls are attributed to its API key and meet that key's limits,
through the very pipeline of the client it wraps."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from arbor.core.config import ModelLimits, Settings
from arbor.llm.client import LLMClient
from arbor.llm.ratelimit import TokenLimitError
from arbor.llm.types import CallContext, ChatRequest, Message
from arbor.llm.view import KeyedClient, for_key
from arbor.testing import FunctionModel

LONG = "word " * 200


@pytest.fixture
async def base() -> AsyncIterator[LLMClient]:
    async with LLMClient(
        Settings(llm={"cache": {"enabled": False}}),
        models={"test:a": FunctionModel(lambda r: "ok")},
    ) as client:
        yield client


async def test_requests_carry_the_key_unless_they_name_one(base: LLMClient) -> None:
    model = base.model("test:a")
    assert isinstance(model, FunctionModel)
    keyed = for_key(base, "key_1")
    await keyed.complete(model="test:a", messages="hi")
    own = ChatRequest(
        model="test:a", messages=[Message.user("hi")], context=CallContext(key_id="key_2")
    )
    await keyed.complete(own)
    chunks = [c async for c in keyed.stream(model="test:a", messages="hi")]
    assert chunks[-1].usage is not None
    assert [c.context.key_id for c in model.calls] == ["key_1", "key_2", "key_1"]


async def test_the_keys_limits_apply_and_the_pipeline_is_shared(base: LLMClient) -> None:
    keyed = for_key(base, "key_1")
    assert isinstance(keyed, KeyedClient)
    assert keyed.limiter is base.limiter and keyed.budgets is base.budgets
    base.set_key_limits("key_1", ModelLimits(tpm=20))  # set after the view was made
    with pytest.raises(TokenLimitError):
        await keyed.complete(model="test:a", messages=LONG)
    reply = await base.complete(model="test:a", messages=LONG)  # no key, no key limit
    assert reply.message.content == "ok"


async def test_closing_the_view_leaves_the_base_open(base: LLMClient) -> None:
    assert for_key(base, None) is base
    view = for_key(for_key(base, "key_1"), "key_2")
    assert isinstance(view, KeyedClient) and view.base is base and view.key_id == "key_2"
    await view.aclose()
    assert (await base.complete(model="test:a", messages="still open")).message.content == "ok"
