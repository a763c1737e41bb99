"""Running one item of a batch: a prompt template, a stored agent or a workflow per row.

Each kind is an :class:`ItemRunner` built once per batch (the template compiled, the agent
built, the workflow resolved — a bad template or unknown agent fails the batch before any
item runs) and called per item with the row and the item's client: a view of the batch's
:class:`~arbor.llm.client.LLMClient` that stamps ``batch_id`` on each request (so the
batch's budget scope applies and usage records name the batch) and reports every call it
makes to the item's :class:`ItemMeter`, which sums what they used.

An item that cannot succeed raises :class:`ItemError` with the reason stored on the item
(a template variable the row lacks, a row that does not fit the workflow's state); provider
errors propagate so the executor can tell retriable ones and budget exhaustion apart.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ValidationError

from arbor.agents.agent import Agent
from arbor.agents.workflow.graph import Workflow
from arbor.agents.workflow.runner import WorkflowRunner
from arbor.agents.workflow.sql import SQLCheckpointStore
from arbor.core.errors import ArborError
from arbor.llm.client import LLMClient
from arbor.llm.types import ChatRequest, Message
from arbor.llm.usage import UsageRecord

__all__ = [
    "AgentItems",
    "ItemError",
    "ItemMeter",
    "ItemOutcome",
    "ItemRunner",
    "TemplateItems",
    "TemplateSyntaxError",
    "WorkflowItems",
    "agent_prompt",
    "compile_template",
]

#: Called with the item's workflow run id before the run starts, so a retry resumes it.
RunIdSink = Callable[[str], Awaitable[None]]


class ItemError(ArborError):
    """This item cannot succeed as it is (the batch goes on)."""

    kind = "item"


class TemplateSyntaxError(ArborError):
    """The batch's prompt template does not parse (the whole batch is refused)."""

    kind = "template"


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    output: Any
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class ItemRunner(Protocol):
    async def run(
        self, row: Any, client: LLMClient, *, run_id: str | None, on_run: RunIdSink
    ) -> Any:
        """The item's output (JSON-able); raises ItemError or a provider error. ``client``
        is the item's view (``client.context.batch_id`` names the batch)."""


class ItemMeter:
    """Tokens and cost of one item's calls, failed ones included (a stream cut off after
    some output was paid for).

    ``client`` is the view of ``base`` the item's calls go through: it stamps ``batch_id``
    and reports each finished call here. It shares every part of ``base`` (limiter,
    breakers, budgets, cache, usage sink); closing it leaves ``base`` open.
    """

    def __init__(self, base: LLMClient, batch_id: str) -> None:
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd = 0.0
        self.client = base.view(batch_id=batch_id, on_usage=self._observe)

    def outcome(self, output: Any) -> ItemOutcome:
        return ItemOutcome(output, self.input_tokens, self.output_tokens, self.cost_usd)

    def _observe(self, record: UsageRecord) -> None:
        self.input_tokens += record.input_tokens
        self.output_tokens += record.output_tokens
        self.cost_usd += record.cost_usd


# ---- templates --------------------------------------------------------------------------

_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


def compile_template(text: str) -> jinja2.Template:
    """The template, sandboxed, failing on any variable a row does not have."""
    try:
        return _ENV.from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateSyntaxError(
            f"the prompt template does not parse: {exc.message} (line {exc.lineno})"
        ) from None


def _variables(row: Any) -> dict[str, Any]:
    """A mapping row's keys as variables, and the whole row as ``row`` in every case."""
    variables = dict(row) if isinstance(row, Mapping) else {}
    variables.setdefault("row", row)
    return variables


class TemplateItems:
    """One model call per row with the rendered template as the user message."""

    def __init__(
        self, template: str, model: str, *, temperature: float | None, max_tokens: int | None
    ) -> None:
        self.template = compile_template(template)
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens

    def render(self, row: Any) -> str:
        try:
            return self.template.render(_variables(row))
        except jinja2.UndefinedError as exc:
            raise ItemError(f"template: {exc.message} in this row") from None
        except jinja2.TemplateError as exc:
            raise ItemError(f"template: {exc}") from None

    async def run(
        self, row: Any, client: LLMClient, *, run_id: str | None, on_run: RunIdSink
    ) -> Any:
        request = ChatRequest(
            model=self.model,
            messages=[Message.user(self.render(row))],
            temperature=self.temperature,
            max_tokens=self.max_tokens,
        )
        return (await client.complete(request)).text


# ---- agents -----------------------------------------------------------------------------


def agent_prompt(row: Any) -> str:
    """What an agent is asked for a row: its ``prompt`` or ``input`` text, a lone column's
    value, or else the row as JSON (the row is also the run's ``deps``)."""
    if isinstance(row, str):
        return row
    if isinstance(row, Mapping):
        for key in ("prompt", "input"):
            if isinstance(row.get(key), str):
                return str(row[key])
        if len(row) == 1:
            (only,) = row.values()
            if isinstance(only, str):
                return only
    return json.dumps(row, ensure_ascii=False)


class AgentItems:
    """One agent run per row (the row is the prompt and the ``deps``)."""

    def __init__(self, agent: Agent[Any], model: str | None) -> None:
        if model is not None:
            agent.model = model  # the batch's --model wins over the definition's
        self.agent = agent

    async def run(
        self, row: Any, client: LLMClient, *, run_id: str | None, on_run: RunIdSink
    ) -> Any:
        agent = self.agent
        context = client.context  # the batch (and the key, if any) the view stamps
        result = await agent.run(agent_prompt(row), client=client, deps=row, context=context)
        output = result.output
        return output.model_dump(mode="json") if isinstance(output, BaseModel) else output


# ---- workflows --------------------------------------------------------------------------


class WorkflowItems:
    """One durable workflow run per row (the row is the run's input state). A retried
    item resumes its run from its last checkpoint instead of starting again."""

    def __init__(self, workflow: Workflow[Any], store: SQLCheckpointStore) -> None:
        workflow.validate()
        self.workflow = workflow
        self.store = store

    async def run(
        self, row: Any, client: LLMClient, *, run_id: str | None, on_run: RunIdSink
    ) -> Any:
        runner = WorkflowRunner(self.workflow, self.store, client=client)
        if run_id is None:
            try:
                state = self.workflow.state_type.model_validate(row)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
                    for e in exc.errors(include_url=False)
                )
                raise ItemError(f"row does not fit the workflow's state: {problems}") from None
            run_id = await self.store.create_run(self.workflow.name, state.model_dump(mode="json"))
            await on_run(run_id)
        result = await runner.resume(run_id)
        if result.status == "succeeded":
            return result.state.model_dump(mode="json")
        if result.status == "waiting_approval":
            raise ItemError(f"workflow run {run_id} waits for an approval; batches do not wait")
        raise ItemError(f"workflow run {run_id} {result.status}: {result.error}")
