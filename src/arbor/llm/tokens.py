"""Offline token counting, for rate-limit and budget reservations and for usage estimates.

Counts must never need the network: ``tiktoken`` downloads its tables at run time, so Arbor
uses the ``bpe-openai`` package, which ships the OpenAI encodings (``o200k_base``,
``cl100k_base``) with a Rust tokenizer. Encodings load lazily, once per process, on the first
count that needs them.

Load time: importing the ``bpe_openai`` package costs ~0.6 s (its ``compat`` module reads every
table to build a model registry), so the Rust extension is loaded directly when possible
(~0.03 s) and the public ``bpe_openai.get_encoding`` is the fallback. Building an encoding then
takes ~0.05-0.1 s (``o200k_base``) and counting ~900 characters ~25 µs.

Model → encoding: gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1/o3/o4 and chatgpt-4o use ``o200k_base``;
gpt-4 and gpt-3.5 (and the ``text-embedding-3``/``ada-002`` embedders) use ``cl100k_base``.
Every other model (local GGUFs counted before their own tokenizer is loaded, other vendors'
models behind an OpenAI-compatible endpoint) is *estimated* with ``o200k_base``: close for
English prose, not exact.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from arbor.llm.types import Message, ToolCall

__all__ = [
    "BPETokenizer",
    "Tokenizer",
    "count_message_tokens",
    "encoding_for_model",
    "tokenizer_for",
]

#: Tokens OpenAI adds per message (role and separators) and to prime the reply.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3

_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-3", "text-embedding-ada-002")


@runtime_checkable
class Tokenizer(Protocol):
    def count(self, text: str) -> int:
        """Number of tokens in ``text``."""
        ...


class _Counter(Protocol):
    def count(self, text: str) -> int: ...


class BPETokenizer:
    """An OpenAI BPE encoding by name; the tables load on the first :meth:`count`."""

    __slots__ = ("_counter", "_lock", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._counter: _Counter | None = None
        self._lock = threading.Lock()

    def count(self, text: str) -> int:
        if not text:
            return 0
        counter = self._counter or self._load()
        try:
            return counter.count(text)
        except UnicodeEncodeError:  # lone surrogates: count what a server would see
            return counter.count(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))

    def _load(self) -> _Counter:
        with self._lock:
            if self._counter is None:
                self._counter = _load_counter(self.name)
            return self._counter

    def __repr__(self) -> str:
        return f"BPETokenizer({self.name!r})"


def _load_counter(encoding: str) -> _Counter:
    bindings = _rust_bindings()
    if bindings is not None:
        try:
            counter: _Counter = bindings.tokenizer_for_encoding(encoding)  # type: ignore[attr-defined]
        except Exception as exc:  # the private fast path failed: the public API decides
            import structlog  # only here: importing it costs ~0.2 s

            structlog.get_logger("arbor.llm.tokens").debug(
                "tokens.fast_path_failed", encoding=encoding, error=repr(exc)
            )
        else:
            return counter
    with warnings.catch_warnings():  # bpe-openai 0.1.x reads its tables with a deprecated API
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai

        return _EncodingCounter(bpe_openai.get_encoding(encoding))


class _EncodingCounter:
    """The public (tiktoken-like) API, when the Rust extension cannot be loaded directly."""

    __slots__ = ("_encoding",)

    def __init__(self, encoding: object) -> None:
        self._encoding = encoding

    def count(self, text: str) -> int:
        return len(self._encoding.encode_ordinary(text))  # type: ignore[attr-defined]


_bindings_lock = threading.Lock()
_bindings: list[object] = []  # [] = not tried yet; [None] = unavailable; [module] = loaded


def _rust_bindings() -> object | None:
    """``bpe_openai._bindings`` loaded without running the package ``__init__`` (see the
    module docstring for why), or ``None`` when that is not possible."""
    with _bindings_lock:
        if not _bindings:
            _bindings.append(_load_bindings())
        return _bindings[0]


def _load_bindings() -> object | None:
    try:
        spec = importlib.util.find_spec("bpe_openai")
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = Path(next(iter(spec.submodule_search_locations)))
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = folder / f"_bindings{suffix}"
            if path.exists():
                loader = importlib.machinery.ExtensionFileLoader("bpe_openai._bindings", str(path))
                ext = importlib.util.spec_from_file_location(
                    "bpe_openai._bindings", path, loader=loader
                )
                if ext is None:
                    return None
                module = importlib.util.module_from_spec(ext)
                loader.exec_module(module)
                return module if hasattr(module, "tokenizer_for_encoding") else None
    except (ImportError, OSError):
        return None
    return None


_tokenizers: dict[str, BPETokenizer] = {}
_tokenizers_lock = threading.Lock()


def _shared(encoding: str) -> BPETokenizer:
    """One tokenizer per encoding per process: the tables are large and immutable."""
    tok = _tokenizers.get(encoding)
    if tok is None:
        with _tokenizers_lock:
            tok = _tokenizers.setdefault(encoding, BPETokenizer(encoding))
    return tok


def encoding_for_model(model: str) -> str:
    """The BPE encoding name used to count ``model``'s tokens (``o200k_base`` when unknown)."""
    name = model.rpartition("/")[2].lower()  # "openai/gpt-4o" as routers spell it
    if name.startswith(_O200K_PREFIXES):
        return "o200k_base"
    if name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return "o200k_base"


def tokenizer_for(provider: str, model: str) -> Tokenizer:
    """A tokenizer for ``provider:model``: exact for OpenAI-family models, an ``o200k_base``
    estimate otherwise. The provider does not change the encoding (an OpenAI model behind
    any compatible endpoint tokenizes the same); it is part of the signature so providers
    with their own tokenizers can be special-cased here."""
    del provider
    return _shared(encoding_for_model(model))


def count_message_tokens(
    messages: Sequence[Message], tokenizer: Tokenizer, *, prime_reply: bool = True
) -> int:
    """Prompt tokens of a conversation the way OpenAI's chat format counts them (the
    openai-cookbook recipe): every message costs its role and text plus
    :data:`TOKENS_PER_MESSAGE`, a name one more, each tool call
    its JSON (name and raw arguments), and the reply is primed with :data:`REPLY_PRIMING`.
    OpenAI does not document how tool calls are serialized, so those are an estimate."""
    count = tokenizer.count
    total = REPLY_PRIMING if prime_reply else 0
    for m in messages:
        total += TOKENS_PER_MESSAGE + count(m.role)
        if m.content:
            total += count(m.content)
        if m.name:
            total += count(m.name) + TOKENS_PER_NAME
        if m.tool_calls:
            for call in m.tool_calls:
                total += count(_call_json(call))
        if m.tool_call_id:
            total += count(m.tool_call_id)
    return total


def _call_json(call: ToolCall) -> str:
    # The arguments are JSON text already: inline them rather than escape them again.
    return f'{{"name":{json.dumps(call.name)},"arguments":{call.arguments or "{}"}}}'
