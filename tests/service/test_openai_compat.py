"""OpenAI request bodies → Arbor requests: what is kept, ignored and refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from arbor.core.errors import InvalidRequestError
from arbor.service.openai_compat import (
    REDIRECT_FIELDS,
    ChatCompletionRequest,
    EmbeddingsIn,
    to_chat_request,
    to_embedding_request,
)


def _text(text: str) -> dict[str, str]:
    return {"type": "text", "text": text}


BASE: dict[str, Any] = {"model": "p:m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("name", sorted(REDIRECT_FIELDS))
def test_every_redirect_field_is_refused_by_name(name: str) -> None:
    with pytest.raises(ValidationError, match=name):
        ChatCompletionRequest.model_validate({**BASE, name: "http://evil.example/v1"})
    with pytest.raises(ValidationError, match=name):
        EmbeddingsIn.model_validate({"model": "p:m", "input": "x", name: "x"})


def test_mapping_keeps_what_arbor_acts_on() -> None:
    body = ChatCompletionRequest.model_validate(
        {
            **BASE,
            "messages": [
                {"role": "developer", "content": [_text("Be "), _text("brief.")]},
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a": 1}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "42"},
            ],
            "max_tokens": 10,
            "max_completion_tokens": 20,
            "stop": "END",
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "presence_penalty": 0.5,  # unknown to Arbor: ignored
            "metadata": {"api_base": "http://evil"},  # nested: ignored, never forwarded
        }
    )
    req = to_chat_request(body, "key_1")
    assert req.messages[0].content == "Be brief."
    assert req.messages[2].tool_calls is not None
    assert req.messages[2].tool_calls[0].arguments == '{"a": 1}'
    assert req.messages[3].tool_call_id == "c1"
    assert req.max_tokens == 20 and req.stop == ["END"] and req.tool_choice == "f"
    assert req.tools is not None and req.tools[0].name == "f"
    assert req.context.key_id == "key_1"
    assert "metadata" not in req.model_dump() and "presence_penalty" not in req.model_dump()


def test_refusals() -> None:
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
    with pytest.raises(InvalidRequestError, match="image_url"):
        to_chat_request(ChatCompletionRequest.model_validate({**BASE, "messages": [image]}), None)
    orphan = {"role": "tool", "content": "x"}
    with pytest.raises(InvalidRequestError, match="tool_call_id"):
        to_chat_request(ChatCompletionRequest.model_validate({**BASE, "messages": [orphan]}), None)
    with pytest.raises(ValidationError, match="n"):
        ChatCompletionRequest.model_validate({**BASE, "n": 3})
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({**BASE, "messages": [{"role": "function"}]})


def test_embedding_inputs() -> None:
    one = to_embedding_request(EmbeddingsIn(model="p:m", input="a"), "k")
    many = to_embedding_request(EmbeddingsIn(model="p:m", input=["a", "b"], dimensions=8), None)
    assert one.input == ["a"] and one.context.key_id == "k"
    assert many.input == ["a", "b"] and many.dimensions == 8
    with pytest.raises(InvalidRequestError, match="token ids"):
        to_embedding_request(EmbeddingsIn(model="p:m", input=[1, 2]), None)
    with pytest.raises(InvalidRequestError, match="empty"):
        to_embedding_request(EmbeddingsIn(model="p:m", input=[]), None)
