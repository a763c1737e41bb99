"""Tools: typed Python functions an agent lets its model call.

``@tool`` reads the function's signature once and builds a pydantic model of its
arguments, so the JSON schema the model sees and the validation of what it sends back come
from the same source. :meth:`Tool.invoke` never raises into the run: bad JSON, invalid
arguments, a raising function and a timeout all become a :class:`ToolResult` with an error
the model can read and correct. Tools are plain objects handed to an agent; there is no
global registry, so two agents in one process never see each other's tools.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints, overload

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema

from arbor.llm.types import ToolSpec

__all__ = ["Tool", "ToolContext", "ToolResult", "tool"]

_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")
_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Params)\s*:\s*$")


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Who is calling a tool. A parameter annotated with this type is filled in by the
    agent and hidden from the model; ``idempotency_key`` is stable for one tool call of
    one run, so a tool with side effects can refuse to repeat them on a resumed run."""

    run_id: str = ""
    agent: str = ""
    tool_call_id: str = ""
    idempotency_key: str = ""


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool call produced: ``content`` is the text the model reads (the error text
    when ``ok`` is false)."""

    ok: bool
    content: str
    error: str | None = None

    @classmethod
    def success(cls, content: str) -> ToolResult:
        return cls(ok=True, content=content)

    @classmethod
    def failure(cls, error: str) -> ToolResult:
        return cls(ok=False, content=f"Error: {error}", error=error)


class _NoTitles(GenerateJsonSchema):
    """Field titles only repeat the names; the model reads descriptions."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


class Tool:
    """A function plus the schema of its arguments. Calling the tool calls the function."""

    __slots__ = (
        "_context_param",
        "_is_async",
        "args_model",
        "description",
        "function",
        "name",
        "timeout",
        "version",
    )

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        version: str = "1",
        timeout: float | None = 30.0,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive (or None for no limit)")
        doc_text, arg_docs = _split_docstring(inspect.getdoc(function) or "")
        self.function = function
        self.name: str = name or function.__name__
        self.description: str = description if description is not None else doc_text
        self.version = version
        self.timeout = timeout
        self._is_async = inspect.iscoroutinefunction(function)
        self.args_model, self._context_param = _arguments_model(self.name, function, arg_docs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r}, version={self.version!r})"

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of the arguments, as sent to the model."""
        schema = self.args_model.model_json_schema(schema_generator=_NoTitles)
        schema.pop("title", None)
        return schema

    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.name, description=self.description, parameters=self.json_schema())

    async def invoke(self, arguments_json: str, context: ToolContext | None = None) -> ToolResult:
        """Validate the model's arguments, run the function and render its result as text.

        Only cancellation propagates; everything else comes back as an error result.
        """
        try:
            raw = json.loads(arguments_json or "{}")
        except json.JSONDecodeError as exc:
            return ToolResult.failure(f"arguments for tool '{self.name}' are not valid JSON: {exc}")
        if not isinstance(raw, dict):
            return ToolResult.failure(f"arguments for tool '{self.name}' must be a JSON object")
        try:
            parsed = self.args_model.model_validate(raw)
        except ValidationError as exc:
            return ToolResult.failure(f"invalid arguments for tool '{self.name}': {_explain(exc)}")
        kwargs = {field: getattr(parsed, field) for field in type(parsed).model_fields}
        if self._context_param is not None:
            kwargs[self._context_param] = context or ToolContext()
        try:
            async with asyncio.timeout(self.timeout) as scope:
                value = await self._call(kwargs)
        except TimeoutError as exc:
            if scope.expired():
                return ToolResult.failure(f"tool '{self.name}' timed out after {self.timeout}s")
            return ToolResult.failure(_describe(exc))
        except Exception as exc:
            return ToolResult.failure(_describe(exc))
        return ToolResult.success(render_result(value))

    def _call(self, kwargs: dict[str, Any]) -> Awaitable[Any]:
        if self._is_async:
            result: Awaitable[Any] = self.function(**kwargs)
            return result
        # A worker thread keeps a blocking tool off the event loop. On timeout the thread
        # cannot be stopped; it finishes in the background and its result is discarded.
        return asyncio.to_thread(self.function, **kwargs)


@overload
def tool(function: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    version: str = "1",
    timeout: float | None = 30.0,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    version: str = "1",
    timeout: float | None = 30.0,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a typed function (sync or async) into a :class:`Tool`; usable bare or with
    options: ``@tool`` or ``@tool(name="search", timeout=5)``."""

    def wrap(fn: Callable[..., Any]) -> Tool:
        return Tool(fn, name=name, description=description, version=version, timeout=timeout)

    return wrap if function is None else wrap(function)


def render_result(value: Any) -> str:
    """Text for the model: strings as they are, everything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        return pydantic_core.to_json(value).decode()
    except pydantic_core.PydanticSerializationError:
        return str(value)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _explain(exc: ValidationError) -> str:
    """One line per bad field, naming it, so the model knows what to fix."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        detail = err["msg"]
        if err["type"] not in {"missing", "extra_forbidden"}:
            detail += f" (got {err['input']!r})"
        elif err["type"] == "extra_forbidden":
            detail = "unexpected argument"
        parts.append(f"{where}: {detail}")
    return "; ".join(parts)


def _split_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The description before a Google-style ``Args:`` section, and per-argument texts."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if _SECTION.match(line):
            args: dict[str, str] = {}
            for rest in lines[i + 1 :]:
                if not rest.strip():
                    break
                match = _ARG_LINE.match(rest)
                if match:
                    args[match.group(1).lstrip("*")] = match.group(2).strip()
            return "\n".join(lines[:i]).strip(), args
    return doc.strip(), {}


def _is_context(hint: Any) -> bool:
    """``ToolContext``, ``ToolContext | None`` or an ``Annotated`` form of either."""
    if get_origin(hint) is Annotated:
        hint = get_args(hint)[0]
    if get_origin(hint) in (Union, UnionType):
        return ToolContext in get_args(hint) and set(get_args(hint)) <= {ToolContext, NoneType}
    return hint is ToolContext


def _arguments_model(
    name: str, function: Callable[..., Any], arg_docs: dict[str, str]
) -> tuple[type[BaseModel], str | None]:
    hints = get_type_hints(function, include_extras=True)
    fields: dict[str, Any] = {}
    context_param: str | None = None
    for param in inspect.signature(function).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool '{name}': *args and **kwargs cannot be described to a model")
        if param.kind is param.POSITIONAL_ONLY:
            raise TypeError(f"tool '{name}': positional-only parameters are not supported")
        hint = hints.get(param.name, Any)
        if _is_context(hint):
            context_param = param.name
            continue
        default: Any = ... if param.default is param.empty else param.default
        doc = arg_docs.get(param.name)
        if doc and not _has_description(hint):
            default = Field(default, description=doc)
        fields[param.name] = (hint, default)
    model = create_model(f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
    return model, context_param


def _has_description(hint: Any) -> bool:
    if get_origin(hint) is not Annotated:
        return False
    return any(isinstance(m, FieldInfo) and m.description for m in get_args(hint)[1:])
