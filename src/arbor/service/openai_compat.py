"""The OpenAI request bodies the gateway accepts, and their mapping onto Arbor's types.

Unknown fields are ignored (clients send many vendor extras), with one exception: a field
that would choose where or with which credentials a request goes upstream
(:data:`REDIRECT_FIELDS`, e.g. ``api_base``, ``base_url``, ``api_key``, ``headers``) is
refused with 400 naming it. It could never take effect anyway: the upstream request is built
from the typed fields below, never from the raw body, and base URLs and keys come only from
settings. Refusing says so instead of silently dropping what a caller may rely on.

Content parts are accepted when they are text; images and audio are refused (400) because
Arbor's messages carry text. ``n`` other than 1 and token-id embedding inputs are refused too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from arbor.core.errors import InvalidRequestError
from arbor.llm.types import (
    CallContext,
    ChatRequest,
    EmbeddingRequest,
    Message,
    ToolCall,
    ToolSpec,
)

__all__ = [
    "REDIRECT_FIELDS",
    "ChatCompletionRequest",
    "ChatMessageIn",
    "EmbeddingsIn",
    "StreamOptions",
    "ToolIn",
    "to_chat_request",
    "to_embedding_request",
    "to_messages",
]

#: Body fields that would pick an upstream endpoint or credentials: refused with 400.
#: These are the per-request routing and credential parameters other gateways (LiteLLM's
#: proxy among them) honour; generic names such as ``url`` are left to the ignore rule so
#: that clients sending unrelated extras are not refused.
REDIRECT_FIELDS: frozenset[str] = frozenset(
    {
        "api_base",
        "api_key",
        "api_version",
        "aws_access_key_id",
        "aws_region_name",
        "aws_secret_access_key",
        "azure_ad_token",
        "azure_endpoint",
        "base_url",
        "custom_llm_provider",
        "extra_headers",
        "headers",
        "vertex_credentials",
        "vertex_project",
    }
)


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Body(_In):
    @model_validator(mode="before")
    @classmethod
    def _no_redirects(cls, data: Any) -> Any:
        if isinstance(data, dict):
            found = sorted(REDIRECT_FIELDS.intersection(data))
            if found:
                raise ValueError(
                    f"field(s) {', '.join(found)} cannot be set by a request: upstream "
                    "endpoints and credentials come from the server's configuration"
                )
        return data


class ContentPart(_In):
    type: str
    text: str | None = None


class FunctionCallIn(_In):
    name: str
    arguments: str = "{}"


class ToolCallIn(_In):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(_In):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


class FunctionIn(_In):
    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    strict: bool | None = None


class ToolIn(_In):
    type: Literal["function"] = "function"
    function: FunctionIn


class NamedToolChoice(_In):
    type: Literal["function"] = "function"
    function: FunctionCallIn | dict[str, Any]


class StreamOptions(_In):
    include_usage: bool = False


class ChatCompletionRequest(_Body):
    """``POST /v1/chat/completions`` as OpenAI documents it (the fields Arbor acts on)."""

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(None, ge=1, le=1, description="Only 1 is supported.")
    tools: list[ToolIn] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    response_format: dict[str, Any] | None = None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class EmbeddingsIn(_Body):
    """``POST /v1/embeddings``; ``encoding_format`` defaults to ``float`` like OpenAI's API
    (the openai SDK asks for ``base64`` and decodes it itself)."""

    model: str = Field(min_length=1, max_length=256)
    #: Token-id inputs parse (so the refusal can say why) but are not offered in the schema.
    input: Annotated[
        str | list[str] | list[int] | list[list[int]],
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}, "minItems": 1},
                ],
                "title": "Input",
            }
        ),
    ]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)


def _text(content: str | list[ContentPart] | None, index: int) -> str | None:
    if content is None or isinstance(content, str):
        return content
    parts: list[str] = []
    for part in content:
        if part.type != "text" or part.text is None:
            raise InvalidRequestError(
                f"messages[{index}]: content part type {part.type!r} is not supported "
                "(only text parts are)"
            )
        parts.append(part.text)
    return "".join(parts)


def to_messages(messages: list[ChatMessageIn]) -> list[Message]:
    """The conversation as Arbor messages (text parts joined, tool calls kept)."""
    out: list[Message] = []
    for i, m in enumerate(messages):
        calls = (
            [
                ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
                for c in m.tool_calls
            ]
            if m.tool_calls
            else None
        )
        if m.role == "tool" and not m.tool_call_id:
            raise InvalidRequestError(f"messages[{i}]: a tool message needs tool_call_id")
        out.append(
            Message(
                role=m.role,
                content=_text(m.content, i),
                name=m.name,
                tool_calls=calls,
                tool_call_id=m.tool_call_id,
            )
        )
    return out


def _tool_choice(choice: str | NamedToolChoice | None) -> str | None:
    if choice is None or isinstance(choice, str):
        return choice
    fn = choice.function
    name = fn.name if isinstance(fn, FunctionCallIn) else fn.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequestError("tool_choice.function.name is required")
    return name


def to_chat_request(body: ChatCompletionRequest, key_id: str | None) -> ChatRequest:
    """The Arbor request for a provider model, attributed to the calling key."""
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    tools = (
        [
            ToolSpec(
                name=t.function.name,
                description=t.function.description,
                parameters=t.function.parameters,
                strict=t.function.strict,
            )
            for t in body.tools
        ]
        if body.tools
        else None
    )
    try:
        return ChatRequest(
            model=body.model,
            messages=to_messages(body.messages),
            temperature=body.temperature,
            top_p=body.top_p,
            max_tokens=body.max_completion_tokens or body.max_tokens,
            stop=stop,
            seed=body.seed,
            tools=tools,
            tool_choice=_tool_choice(body.tool_choice),
            response_format=body.response_format,
            context=CallContext(key_id=key_id),
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequestError(f"{where}: {first['msg']}") from None


def to_embedding_request(body: EmbeddingsIn, key_id: str | None) -> EmbeddingRequest:
    raw = body.input
    if isinstance(raw, str):
        texts = [raw]
    elif raw and all(isinstance(x, str) for x in raw):
        texts = [str(x) for x in raw]
    elif not raw:
        raise InvalidRequestError("input must not be empty")
    else:
        raise InvalidRequestError("input as token ids is not supported: send text")
    return EmbeddingRequest(
        model=body.model,
        input=texts,
        dimensions=body.dimensions,
        context=CallContext(key_id=key_id),
    )
