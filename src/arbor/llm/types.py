"""Typed nouns of an LLM call: messages, tool calls, requests, responses, chunks, usage.

They follow the OpenAI chat wire format closely (so the gateway can pass them through)
but are Arbor's own, so providers other than OpenAI-compatible ones fit too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CallContext",
    "ChatRequest",
    "ChatResponse",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "Message",
    "Role",
    "StreamChunk",
    "ToolCall",
    "ToolCallDelta",
    "ToolSpec",
    "Usage",
]

Role = Literal["system", "user", "assistant", "tool", "developer"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class ToolCall(_Model):
    id: str
    name: str
    #: JSON text exactly as the model produced it (may be invalid JSON; tools validate).
    arguments: str = "{}"


class Message(_Model):
    role: Role
    content: str | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    #: For ``role == "tool"``: the id of the call this message answers.
    tool_call_id: str | None = None

    @classmethod
    def system(cls, text: str) -> Message:
        return cls(role="system", content=text)

    @classmethod
    def user(cls, text: str) -> Message:
        return cls(role="user", content=text)

    @classmethod
    def assistant(cls, text: str | None, tool_calls: list[ToolCall] | None = None) -> Message:
        return cls(role="assistant", content=text, tool_calls=tool_calls)

    @classmethod
    def tool(cls, call_id: str, text: str) -> Message:
        return cls(role="tool", content=text, tool_call_id=call_id)


class ToolSpec(_Model):
    """A function the model may call, described by a JSON schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    strict: bool | None = None


class CallContext(_Model):
    """Who a call is for, so usage and limits can be attributed."""

    key_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    batch_id: str | None = None


class _Routed(_Model):
    """A request naming its model as ``provider:name``; the pipeline routes on the parts."""

    model: str

    @property
    def provider(self) -> str:
        return self.model.partition(":")[0]

    @property
    def model_name(self) -> str:
        return self.model.partition(":")[2]


class ChatRequest(_Routed):
    messages: list[Message]
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    stop: list[str] | None = None
    seed: int | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["auto", "none", "required"] | str | None = None
    #: ``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema": {...}}``.
    response_format: dict[str, Any] | None = None
    #: Read the cache / write the cache. ``None`` = decide by settings and temperature.
    cache: bool | None = None
    context: CallContext = Field(default_factory=CallContext)

    @property
    def is_sampling(self) -> bool:
        """True when replies vary between calls (temperature > 0; OpenAI's default is 1)."""
        return self.temperature is None or self.temperature > 0


class Usage(_Model):
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    #: True when counted by Arbor's tokenizer because the provider did not report usage.
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class ChatResponse(_Model):
    id: str
    model: str
    message: Message
    finish_reason: FinishReason | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    cached: bool = False

    @property
    def text(self) -> str:
        return self.message.content or ""


class ToolCallDelta(_Model):
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str | None = None


class StreamChunk(_Model):
    """One piece of a streamed reply. The final chunk carries usage and the finish reason."""

    id: str = ""
    model: str = ""
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    cost_usd: float | None = None
    cached: bool = False


class EmbeddingRequest(_Routed):
    """Texts to embed with one model; goes through the same limits, breaker, retries and
    usage accounting as a chat call (never through fallbacks: another model's vectors live
    in a different space)."""

    input: list[str] = Field(min_length=1)
    #: Output dimensions, for models that can shorten their vectors.
    dimensions: int | None = Field(None, ge=1)
    context: CallContext = Field(default_factory=CallContext)


class EmbeddingResponse(_Model):
    model: str
    #: One vector per input, in input order.
    vectors: list[list[float]]
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    latency_ms: float = 0.0
