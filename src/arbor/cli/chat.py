"""``arbor chat``: one prompt, or an interactive conversation, through the full pipeline."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING

import typer
from pydantic import SecretStr
from rich.console import Console

from arbor.cli._common import EXIT_USAGE, exit_code_for, fail, settings_or_exit
from arbor.core.config import ProviderSettings, Settings
from arbor.core.errors import ArborError
from arbor.llm.types import ChatRequest, ChatResponse, Message, Usage

if TYPE_CHECKING:  # the client pulls in SDKs and the store: loaded only when chatting
    from arbor.llm.client import LLMClient

__all__ = ["chat"]

_err = Console(stderr=True, highlight=False)


def chat(
    prompt: str | None = typer.Argument(None, help="The prompt; omit for an interactive chat."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model id provider:model."),
    base_url: str | None = typer.Option(
        None, "--base-url", help="OpenAI-compatible endpoint for the model's provider."
    ),
    api_key: str | None = typer.Option(None, "--api-key", help="API key for that endpoint."),
    no_stream: bool = typer.Option(False, "--no-stream", help="Wait for the whole reply."),
    system: str | None = typer.Option(None, "--system", help="A system prompt."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=1),
    temperature: float | None = typer.Option(None, "--temperature", min=0.0, max=2.0),
) -> None:
    """Chat with a model (default: the embedded local model)."""
    settings = settings_or_exit()
    model_id = model or settings.default_model
    if ":" not in model_id:
        fail(f"--model must look like provider:model, got {model_id!r}", EXIT_USAGE)
    if base_url or api_key:
        settings = _with_endpoint(settings, model_id.partition(":")[0], base_url, api_key)
    history = [Message.system(system)] if system else []
    options = _Options(model_id, not no_stream, max_tokens, temperature)
    try:
        if prompt is not None:
            asyncio.run(_one(settings, options, [*history, Message.user(prompt)]))
        else:
            asyncio.run(_interactive(settings, options, history))
    except ArborError as exc:
        fail(str(exc), exit_code_for(exc))
    except KeyboardInterrupt:
        sys.exit(130)


class _Options:
    def __init__(
        self, model: str, stream: bool, max_tokens: int | None, temperature: float | None
    ) -> None:
        self.model = model
        self.stream = stream
        self.max_tokens = max_tokens
        self.temperature = temperature

    def request(self, messages: list[Message]) -> ChatRequest:
        return ChatRequest(
            model=self.model,
            messages=messages,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
        )


def _with_endpoint(
    settings: Settings, provider: str, base_url: str | None, api_key: str | None
) -> Settings:
    current = settings.provider(provider)
    if current is None and base_url is None:
        fail(f"--api-key given for provider {provider!r}, which has no base URL", EXIT_USAGE)
    url = base_url or (current.base_url if current else "")
    key = SecretStr(api_key) if api_key else (current.api_key if current else None)
    try:
        endpoint = ProviderSettings(base_url=url, api_key=key)
    except ValueError:
        fail(f"--base-url must be an http:// or https:// URL, got {url!r}", EXIT_USAGE)
    return settings.model_copy(update={"providers": {**settings.providers, provider: endpoint}})


async def _one(settings: Settings, options: _Options, messages: list[Message]) -> None:
    from arbor.llm.setup import open_client

    async with open_client(settings) as client:
        await _reply(client, options, messages)


async def _interactive(settings: Settings, options: _Options, history: list[Message]) -> None:
    from arbor.llm.setup import open_client

    _err.print(f"[dim]Chatting with {options.model}. /exit or Ctrl-D to leave.[/]")
    async with open_client(settings) as client:
        while True:
            try:
                line = await asyncio.to_thread(input, "you> ")
            except EOFError:
                _err.print()
                return
            text = line.strip()
            if not text:
                continue
            if text in ("/exit", "/quit"):
                return
            history.append(Message.user(text))
            try:
                answer = await _reply(client, options, history)
            except ArborError as exc:
                history.pop()
                _err.print(f"[red]error:[/] {exc}")
                continue
            history.append(Message.assistant(answer))


async def _reply(client: LLMClient, options: _Options, messages: list[Message]) -> str:
    request = options.request(messages)
    started = time.perf_counter()
    if not options.stream:
        response: ChatResponse = await client.complete(request)
        print(response.text, flush=True)
        _footer(response.usage, response.cost_usd, response.latency_ms, response.cached)
        return response.text
    parts: list[str] = []
    usage, cost, cached = Usage(), 0.0, False
    async for chunk in client.stream(request):
        if chunk.content:
            parts.append(chunk.content)
            sys.stdout.write(chunk.content)
            sys.stdout.flush()
        if chunk.usage is not None:
            usage, cost, cached = chunk.usage, chunk.cost_usd or 0.0, chunk.cached
    sys.stdout.write("\n")
    sys.stdout.flush()
    _footer(usage, cost, (time.perf_counter() - started) * 1000, cached)
    return "".join(parts)


def _footer(usage: Usage, cost: float, latency_ms: float, cached: bool) -> None:
    est = " (estimated)" if usage.estimated else ""
    hit = ", cached" if cached else ""
    _err.print(
        f"[dim]{usage.input_tokens} in / {usage.output_tokens} out tokens{est}, "
        f"${cost:.6f}, {latency_ms:.0f} ms{hit}[/]"
    )
