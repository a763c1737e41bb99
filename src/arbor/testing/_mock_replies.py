"""What the mock upstream answers: deterministic replies and their OpenAI wire bytes.

Kept free of any HTTP code so the reply rules can be read (and changed) in one place, and so
the server's hot path is plain dict/bytes work: no pydantic, one ``dumps`` per body.

Reply rules (a function of the request only, so tests and caches can rely on them):

* content is ``"Mock reply <digest>:"`` followed by the first :data:`ECHO_WORDS` words of the
  last user or tool message; ``<digest>`` is 8 hex digits over every message's role and text.
  ``max_tokens``/``max_completion_tokens`` truncate it to that many words (finish ``length``).
* ``prompt_tokens`` = words of every message's text + 3 per message; ``completion_tokens`` =
  words of the reply (for a tool call: words of ``"NAME ARGS"``).
* ``/tool NAME {json}`` as the last user message, with ``tools`` in the request, calls NAME.
* ``/context-too-long`` anywhere → 400 ``context_length_exceeded``.
* ``/status NNN`` in the last user message → that status (400-599) with an error body.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import sys
from array import array
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CONTEXT_WINDOW",
    "ECHO_WORDS",
    "MODELS_BODY",
    "ChatPlan",
    "EmbeddingsPlan",
    "ErrorReply",
    "chat_completion_body",
    "dumps",
    "embeddings_body",
    "loads",
    "plan_chat",
    "plan_embeddings",
    "stream_frames",
]

try:  # orjson is ~3x faster on these small bodies; it is optional (present with the bench group)
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    def loads(data: bytes) -> Any:
        return orjson.loads(data)

except ImportError:  # pragma: no cover - exercised only without orjson
    import json

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    def loads(data: bytes) -> Any:
        return json.loads(data)


ECHO_WORDS = 24
CONTEXT_WINDOW = 8192
MODEL_IDS = ("mock-1", "mock-large", "mock-embedding")
DEFAULT_MODEL = "mock-1"
EMBEDDING_DIMS = 16
_MAX_DIMS = 4096
_FINGERPRINT = "fp_mock"
_STATUS_RE = re.compile(r"/status\s+(\d{3})\b")
_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "unsupported_country_region_territory"),
    404: ("not_found_error", "model_not_found"),
    409: ("conflict_error", None),
    422: ("invalid_request_error", None),
    429: ("rate_limit_exceeded", "rate_limit_exceeded"),
}

MODELS_BODY = dumps(
    {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "arbor-mock"}
            for m in MODEL_IDS
        ],
    }
)


@dataclass(slots=True)
class ErrorReply:
    """An OpenAI-style error answer: ``{"error": {"message", "type", "param", "code"}}``."""

    status: int
    message: str
    type: str
    code: str | None = None
    param: str | None = None
    retry_after: int | None = None

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return dumps({"error": error})

    @classmethod
    def for_status(cls, status: int, message: str) -> ErrorReply:
        """The error type/code OpenAI uses for ``status`` (server errors for 5xx)."""
        fallback = ("server_error" if status >= 500 else "api_error", None)
        kind, code = _ERROR_KINDS.get(status, fallback)
        return cls(status, message, kind, code, retry_after=1 if status == 429 else None)


@dataclass(slots=True)
class ChatPlan:
    """A decided chat reply, before it is encoded as one body or a stream."""

    model: str
    digest: str
    content: str | None
    tool_name: str | None
    tool_args: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    stream: bool
    include_usage: bool

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.tokens,
        }


@dataclass(slots=True)
class EmbeddingsPlan:
    model: str
    inputs: list[str]
    prompt_tokens: int
    dims: int
    base64: bool

    @property
    def tokens(self) -> int:
        return self.prompt_tokens


def _text_of(content: Any) -> str:
    """Message text, for string content and for OpenAI's list-of-parts content."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _bad(message: str, param: str | None = None) -> ErrorReply:
    return ErrorReply(400, message, "invalid_request_error", None, param)


def plan_chat(body: Any) -> ChatPlan | ErrorReply:
    if not isinstance(body, dict):
        return _bad("The request body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _bad("'messages' must be a non-empty array.", "messages")
    digest = hashlib.blake2b(digest_size=4)
    prompt_tokens = 0
    too_long = False
    echo = ""
    role: Any = None
    text = ""
    for message in messages:
        if not isinstance(message, dict):
            return _bad("Each message must be an object.", "messages")
        role = message.get("role")
        text = _text_of(message.get("content"))
        digest.update(f"{role}\0{text}\0".encode())
        prompt_tokens += len(text.split()) + 3
        if "/context-too-long" in text:
            too_long = True
        if role == "user" or role == "tool":
            echo = text
    if too_long:
        return ErrorReply(
            400,
            f"This model's maximum context length is {CONTEXT_WINDOW} tokens. However, your "
            f"messages resulted in {CONTEXT_WINDOW + prompt_tokens} tokens. Please reduce the "
            "length of the messages.",
            "invalid_request_error",
            "context_length_exceeded",
            "messages",
        )
    last_is_user = role == "user"  # role/text now hold the last message's
    if last_is_user and "/status" in text and (m := _STATUS_RE.search(text)):
        status = int(m.group(1))
        if 400 <= status <= 599:
            return ErrorReply.for_status(status, f"Mock error {status} requested by /status.")

    model = body.get("model")
    model = model if isinstance(model, str) and model else DEFAULT_MODEL
    stream = body.get("stream") is True
    options = body.get("stream_options")
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    hexdigest = digest.hexdigest()

    tools = body.get("tools")
    if last_is_user and text.startswith("/tool ") and tools and body.get("tool_choice") != "none":
        name, _, args = text[6:].strip().partition(" ")
        args = args.strip() or "{}"
        return ChatPlan(
            model,
            hexdigest,
            None,
            name,
            args,
            "tool_calls",
            prompt_tokens,
            len(name.split()) + len(args.split()),
            stream,
            include_usage,
        )

    words = ["Mock", "reply", f"{hexdigest}:", *echo.split()[:ECHO_WORDS]]
    finish = "stop"
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and 0 <= limit < len(words):
        words = words[:limit]
        finish = "length"
    return ChatPlan(
        model,
        hexdigest,
        " ".join(words),
        None,
        "",
        finish,
        prompt_tokens,
        len(words),
        stream,
        include_usage,
    )


def _message(plan: ChatPlan) -> dict[str, Any]:
    if plan.tool_name is None:
        return {"role": "assistant", "content": plan.content, "refusal": None}
    call = {
        "id": f"call_{plan.digest}",
        "type": "function",
        "function": {"name": plan.tool_name, "arguments": plan.tool_args},
    }
    return {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}


def chat_completion_body(plan: ChatPlan, rid: str, created: int) -> bytes:
    return dumps(
        {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": plan.model,
            "system_fingerprint": _FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": _message(plan),
                    "logprobs": None,
                    "finish_reason": plan.finish_reason,
                }
            ],
            "usage": plan.usage(),
        }
    )


def _split(text: str, n: int) -> list[str]:
    """``text`` cut into ``n`` nearly equal pieces (fewer if it is shorter than ``n``)."""
    if not text:
        return []
    n = max(1, min(n, len(text)))
    size, extra = divmod(len(text), n)
    pieces, start = [], 0
    for k in range(n):
        end = start + size + (k < extra)
        pieces.append(text[start:end])
        start = end
    return pieces


def stream_frames(plan: ChatPlan, rid: str, created: int, chunks: int) -> list[bytes]:
    """Every SSE event of a streamed reply, ``data: [DONE]`` included.

    Layout (as OpenAI sends it): a role delta, ``chunks`` content (or tool-argument) deltas, a
    delta-less chunk with the finish reason, a usage chunk with empty ``choices`` when
    ``stream_options.include_usage`` is set, then ``[DONE]``. The envelope is built once.
    """
    head = (
        b'data: {"id":'
        + dumps(rid)
        + b',"object":"chat.completion.chunk","created":'
        + str(created).encode()
        + b',"model":'
        + dumps(plan.model)
        + b',"system_fingerprint":"'
        + _FINGERPRINT.encode()
        + b'","choices":[{"index":0,"delta":'
    )
    tail = b',"logprobs":null,"finish_reason":null}]' + (
        b',"usage":null}\n\n' if plan.include_usage else b"}\n\n"
    )
    if plan.tool_name is None:
        first: dict[str, Any] = {"role": "assistant", "content": ""}
        deltas: list[dict[str, Any]] = [
            {"content": piece} for piece in _split(plan.content or "", chunks)
        ]
    else:
        call = {
            "index": 0,
            "id": f"call_{plan.digest}",
            "type": "function",
            "function": {"name": plan.tool_name, "arguments": ""},
        }
        first = {"role": "assistant", "content": None, "tool_calls": [call]}
        deltas = [
            {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            for piece in _split(plan.tool_args, chunks)
        ]
    frames = [head + dumps(first) + tail]
    frames.extend(head + dumps(d) + tail for d in deltas)
    finish = b'{},"logprobs":null,"finish_reason":' + dumps(plan.finish_reason) + b"}]"
    frames.append(head + finish + (b',"usage":null}\n\n' if plan.include_usage else b"}\n\n"))
    if plan.include_usage:
        usage = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": plan.model,
            "system_fingerprint": _FINGERPRINT,
            "choices": [],
            "usage": plan.usage(),
        }
        frames.append(b"data: " + dumps(usage) + b"\n\n")
    frames.append(b"data: [DONE]\n\n")
    return frames


def plan_embeddings(body: Any) -> EmbeddingsPlan | ErrorReply:
    """Accepts ``input`` as a string, strings, token ids, or lists of token ids."""
    if not isinstance(body, dict):
        return _bad("The request body must be a JSON object.")
    raw = body.get("input")
    if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        return _bad("'input' must be a non-empty string or array.", "input")
    inputs: list[str] = []
    tokens = 0
    for item in raw:
        if isinstance(item, str):
            inputs.append(item)
            tokens += max(1, len(item.split()))
        elif isinstance(item, list) and all(isinstance(t, int) for t in item):
            inputs.append(" ".join(map(str, item)))
            tokens += max(1, len(item))
        else:
            return _bad("Each 'input' item must be a string or an array of token ids.", "input")
    dims = body.get("dimensions", EMBEDDING_DIMS)
    if not isinstance(dims, int) or not 1 <= dims <= _MAX_DIMS:
        return _bad(f"'dimensions' must be an integer in 1..{_MAX_DIMS}.", "dimensions")
    model = body.get("model")
    model = model if isinstance(model, str) and model else "mock-embedding"
    return EmbeddingsPlan(model, inputs, tokens, dims, body.get("encoding_format") == "base64")


def _vector(text: str, dims: int) -> array[float]:
    """A unit vector from a hash of ``text``: equal texts embed equally, others differ."""
    raw = array("H", hashlib.shake_256(text.encode()).digest(2 * dims))
    values = [v / 32767.5 - 1.0 for v in raw]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return array("f", [v / norm for v in values])


def embeddings_body(plan: EmbeddingsPlan) -> bytes:
    data: list[dict[str, Any]] = []
    for index, text in enumerate(plan.inputs):
        vector = _vector(text, plan.dims)
        if plan.base64:  # what the openai SDK asks for by default: little-endian float32
            if sys.byteorder == "big":  # pragma: no cover
                vector.byteswap()
            embedding: Any = base64.b64encode(vector.tobytes()).decode()
        else:
            embedding = vector.tolist()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    usage = {"prompt_tokens": plan.prompt_tokens, "total_tokens": plan.prompt_tokens}
    return dumps({"object": "list", "data": data, "model": plan.model, "usage": usage})
