"""``@tool``: schema from the signature, validation, errors, timeouts, threads."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Annotated

import pytest
from pydantic import BaseModel, Field

from arbor.agents import Tool, ToolContext, ToolResult, tool
from arbor.core.errors import ToolError
from arbor.llm.types import ToolSpec


class Location(BaseModel):
    city: str
    country: str = "FR"


@tool
def forecast(
    where: Location,
    days: Annotated[int, Field(ge=1, le=7, description="How many days ahead")] = 3,
    units: str = "metric",
) -> dict[str, object]:
    """Weather forecast for a place.

    Args:
        where: The place to forecast.
        units: metric or imperial.
    """
    return {"city": where.city, "days": days, "units": units}


def test_bare_decorator_builds_a_tool_with_docstring_description() -> None:
    assert isinstance(forecast, Tool)
    assert forecast.name == "forecast"
    assert forecast.description == "Weather forecast for a place."
    assert forecast.version == "1"
    assert forecast.timeout == 30.0
    # Still callable as the function it wraps.
    assert forecast(Location(city="Lyon"))["city"] == "Lyon"


def test_json_schema_is_exact() -> None:
    assert forecast.json_schema() == {
        "$defs": {
            "Location": {
                "properties": {
                    "city": {"type": "string"},
                    "country": {"default": "FR", "type": "string"},
                },
                "required": ["city"],
                "title": "Location",
                "type": "object",
            }
        },
        "additionalProperties": False,
        "properties": {
            "where": {"$ref": "#/$defs/Location", "description": "The place to forecast."},
            "days": {
                "default": 3,
                "description": "How many days ahead",
                "maximum": 7,
                "minimum": 1,
                "type": "integer",
            },
            "units": {
                "default": "metric",
                "description": "metric or imperial.",
                "type": "string",
            },
        },
        "required": ["where"],
        "type": "object",
    }


def test_spec_and_options() -> None:
    @tool(name="lookup", description="Find a word.", version="2", timeout=1.5)
    async def find(word: str) -> str:
        return word

    assert find.spec() == ToolSpec(
        name="lookup",
        description="Find a word.",
        parameters={
            "additionalProperties": False,
            "properties": {"word": {"type": "string"}},
            "required": ["word"],
            "type": "object",
        },
    )
    assert (find.version, find.timeout) == ("2", 1.5)


async def test_valid_call_serializes_result_as_json() -> None:
    result = await forecast.invoke('{"where": {"city": "Lyon"}, "days": 2}')
    assert result == ToolResult(ok=True, content='{"city":"Lyon","days":2,"units":"metric"}')


async def test_results_are_rendered_as_text() -> None:
    @tool
    def text() -> str:
        return "plain"

    @tool
    def model() -> Location:
        return Location(city="Nice")

    @tool
    def nothing() -> None:
        return None

    assert (await text.invoke("{}")).content == "plain"
    assert json.loads((await model.invoke("")).content) == {"city": "Nice", "country": "FR"}
    assert (await nothing.invoke("{}")).content == "null"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"days": 2}', "where: Field required"),
        ('{"where": {"city": "Lyon"}, "days": 9}', "days: Input should be less than or equal"),
        ('{"where": {"city": 5}}', "where.city: Input should be a valid string (got 5)"),
        ('{"where": {"city": "Lyon"}, "colour": "red"}', "colour: unexpected argument"),
    ],
)
async def test_invalid_arguments_become_error_results(arguments: str, expected: str) -> None:
    result = await forecast.invoke(arguments)
    assert not result.ok
    assert result.error is not None and expected in result.error
    assert "forecast" in result.error
    assert result.content == f"Error: {result.error}"


async def test_a_raising_tool_returns_the_exception_type_and_message() -> None:
    @tool
    async def broken(x: int) -> int:
        raise ToolError(f"cannot handle {x}")

    result = await broken.invoke('{"x": 4}')
    assert result == ToolResult.failure("ToolError: cannot handle 4")


async def test_a_tool_raising_timeout_error_is_not_reported_as_our_timeout() -> None:
    @tool(timeout=5)
    async def upstream() -> str:
        raise TimeoutError("upstream slow")

    assert (await upstream.invoke("{}")).error == "TimeoutError: upstream slow"


async def test_timeout_async_and_sync() -> None:
    @tool(timeout=0.05)
    async def slow_async() -> str:
        await asyncio.sleep(10)
        return "late"

    release = threading.Event()

    @tool(timeout=0.05)
    def slow_sync() -> str:
        release.wait(60)
        return "late"

    started = time.monotonic()
    results = await asyncio.gather(slow_async.invoke("{}"), slow_sync.invoke("{}"))
    release.set()
    # Slack for a loaded machine; a sync tool not abandoned at its timeout would take 60 s.
    assert time.monotonic() - started < 10
    assert [r.error for r in results] == [
        "tool 'slow_async' timed out after 0.05s",
        "tool 'slow_sync' timed out after 0.05s",
    ]


async def test_sync_tools_run_in_a_thread_and_do_not_block_the_loop() -> None:
    gate = threading.Event()

    @tool
    def blocking() -> str:
        # Waits for the event loop to set the gate: it would deadlock if run on the loop.
        assert gate.wait(5), "the event loop was blocked"
        return threading.current_thread().name

    async def open_gate() -> None:
        await asyncio.sleep(0.01)
        gate.set()

    result, _ = await asyncio.gather(blocking.invoke("{}"), open_gate())
    assert result.ok
    assert result.content != threading.current_thread().name


async def test_tool_context_is_injected_and_hidden_from_the_schema() -> None:
    seen: list[ToolContext] = []

    @tool
    def record(note: str, ctx: ToolContext) -> str:
        seen.append(ctx)
        return note

    assert set(record.json_schema()["properties"]) == {"note"}
    context = ToolContext(run_id="run_1", agent="a", tool_call_id="c1", idempotency_key="k")
    assert (await record.invoke('{"note": "hi"}', context)).content == "hi"
    assert (await record.invoke('{"note": "again"}')).ok  # a default context when none given
    assert seen == [context, ToolContext()]


def test_optional_context_is_recognised() -> None:
    @tool
    def f(x: int, ctx: ToolContext | None = None) -> int:
        return x

    assert set(f.json_schema()["properties"]) == {"x"}


def test_unsupported_signatures_fail_at_decoration() -> None:
    with pytest.raises(TypeError, match="kwargs"):

        @tool
        def f(**kwargs: int) -> None: ...

    with pytest.raises(ValueError, match="timeout"):
        tool(timeout=0)(lambda: None)
