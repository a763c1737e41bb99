"""Plugins: pre/post hooks on workflow nodes, LLM calls and tool calls, passed in explicitly
(``Agent.run(..., plugins=[...])``, ``WorkflowRunner(..., plugins=[...])``).

A plugin subclasses :class:`Plugin` and overrides only the hooks it needs; hooks it leaves
alone are never called, so an unused hook costs nothing. Hooks run in the order the plugins
were given; each ``before_*``/``after_*`` hook returns the (possibly replaced) request,
call, result or delta. A plugin that raises fails the node or the agent run with a
:class:`PluginError` naming the plugin and the hook; :class:`Reask` from ``after_llm_call``
is the exception: it sends the model's reply back with a problem to fix, within the agent's
``max_output_retries``.

Inside a workflow node, hooks run on every execution of the node, also when a resumed run
replays a recorded LLM or tool result instead of repeating the call.

:class:`HookContext` and the call-hook protocol :class:`~arbor.agents.hooks.CallPlugin` live
in :mod:`arbor.agents.hooks`, below this module and the workflow's node context.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from pydantic import BaseModel, ValidationError

from arbor.agents.hooks import HookContext
from arbor.agents.tools import ToolResult
from arbor.core.errors import ArborError
from arbor.llm.types import ChatRequest, ChatResponse, ToolCall

if TYPE_CHECKING:
    from arbor.agents.workflow.context import NodeContext

__all__ = ["Check", "HookContext", "Hooks", "Plugin", "PluginError", "Reask", "ValidationPlugin"]

T = TypeVar("T")
#: A pydantic model the value must validate against, or a predicate returning True/None
#: (fine), False (rejected) or a string (what is wrong).
Check: TypeAlias = type[BaseModel] | Callable[[Any], bool | str | None]
_HOOKS = (
    "before_node",
    "after_node",
    "before_llm_call",
    "after_llm_call",
    "before_tool_call",
    "after_tool_call",
)


class PluginError(ArborError):
    """A plugin's hook raised (or returned the wrong thing)."""

    kind = "plugin"

    def __init__(self, message: str, *, plugin: str, hook: str, run_id: str = "") -> None:
        super().__init__(message)
        self.plugin = plugin
        self.hook = hook
        self.run_id = run_id


class Reask(Exception):
    """Raised by ``after_llm_call``: the reply is not acceptable; ask again with ``problem``."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        #: The plugin that re-asked (filled in by :class:`Hooks`).
        self.plugin = ""


class Plugin:
    """Base class with a no-op for every hook; override the ones you need."""

    @property
    def name(self) -> str:
        return type(self).__name__

    async def before_node(self, ctx: NodeContext, state: BaseModel) -> None:
        return None

    async def after_node(
        self, ctx: NodeContext, state: BaseModel, delta: dict[str, Any]
    ) -> dict[str, Any]:
        return delta

    async def before_llm_call(self, ctx: HookContext, request: ChatRequest) -> ChatRequest:
        return request

    async def after_llm_call(
        self, ctx: HookContext, request: ChatRequest, response: ChatResponse
    ) -> ChatResponse:
        return response

    async def before_tool_call(self, ctx: HookContext, call: ToolCall) -> ToolCall:
        return call

    async def after_tool_call(
        self, ctx: HookContext, call: ToolCall, result: ToolResult
    ) -> ToolResult:
        return result


_Bound: TypeAlias = tuple[str, Callable[..., Awaitable[Any]]]


class Hooks:
    """The overridden hooks of a plugin list, resolved once. Also accepts objects with only
    some hook methods (e.g. a node-only plugin)."""

    __slots__ = ("_by_hook", "plugins")

    def __init__(self, plugins: Sequence[object] = ()) -> None:
        self.plugins = tuple(plugins)
        self._by_hook: dict[str, list[_Bound]] = {hook: [] for hook in _HOOKS}
        for plugin in self.plugins:
            name = str(getattr(plugin, "name", type(plugin).__name__))
            for hook in _HOOKS:
                method = getattr(plugin, hook, None)
                if method is None or getattr(type(plugin), hook, None) is getattr(Plugin, hook):
                    continue
                if not inspect.iscoroutinefunction(method):
                    raise TypeError(f"plugin {name}: {hook} must be an async method")
                self._by_hook[hook].append((name, method))

    def __bool__(self) -> bool:
        return any(self._by_hook.values())

    def has(self, hook: str) -> bool:
        """Whether any plugin overrides ``hook`` (callers skip the call otherwise)."""
        return bool(self._by_hook[hook])

    def plus(self, plugins: Sequence[object]) -> Hooks:
        return Hooks((*self.plugins, *plugins)) if plugins else self

    async def before_node(self, ctx: NodeContext, state: BaseModel) -> None:
        for name, hook in self._by_hook["before_node"]:
            await _guard(name, "before_node", ctx.run_id, hook(ctx, state), object)

    async def after_node(
        self, ctx: NodeContext, state: BaseModel, delta: dict[str, Any]
    ) -> dict[str, Any]:
        for name, hook in self._by_hook["after_node"]:
            delta = await _guard(name, "after_node", ctx.run_id, hook(ctx, state, delta), dict)
        return delta

    async def before_llm_call(self, ctx: HookContext, request: ChatRequest) -> ChatRequest:
        for name, hook in self._by_hook["before_llm_call"]:
            coro = hook(ctx, request)
            request = await _guard(name, "before_llm_call", ctx.run_id, coro, ChatRequest)
        return request

    async def after_llm_call(
        self, ctx: HookContext, request: ChatRequest, response: ChatResponse
    ) -> ChatResponse:
        for name, hook in self._by_hook["after_llm_call"]:
            coro = hook(ctx, request, response)
            response = await _guard(name, "after_llm_call", ctx.run_id, coro, ChatResponse)
        return response

    async def before_tool_call(self, ctx: HookContext, call: ToolCall) -> ToolCall:
        for name, hook in self._by_hook["before_tool_call"]:
            call = await _guard(name, "before_tool_call", ctx.run_id, hook(ctx, call), ToolCall)
        return call

    async def after_tool_call(
        self, ctx: HookContext, call: ToolCall, result: ToolResult
    ) -> ToolResult:
        for name, hook in self._by_hook["after_tool_call"]:
            coro = hook(ctx, call, result)
            result = await _guard(name, "after_tool_call", ctx.run_id, coro, ToolResult)
        return result


NO_HOOKS = Hooks()


async def _guard(name: str, hook: str, run_id: str, coro: Awaitable[Any], expect: type[T]) -> T:
    try:
        value = await coro
    except Reask as reask:
        reask.plugin = reask.plugin or name
        raise
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(
            f"plugin {name}.{hook} raised {type(exc).__name__}: {exc}",
            plugin=name,
            hook=hook,
            run_id=run_id,
        ) from exc
    if expect is not object and not isinstance(value, expect):
        raise PluginError(
            f"plugin {name}.{hook} returned {type(value).__name__}, not {expect.__name__}",
            plugin=name,
            hook=hook,
            run_id=run_id,
        )
    return value  # type: ignore[no-any-return]


def problem_with(check: Check, value: Any) -> str | None:
    """What is wrong with ``value`` under ``check``, or None."""
    if isinstance(check, type) and issubclass(check, BaseModel):
        try:
            if isinstance(value, str | bytes):
                check.model_validate_json(value)
            else:
                check.model_validate(value)
        except ValidationError as exc:
            return "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
        return None
    verdict = check(value)  # type: ignore[call-arg]
    if verdict is None or verdict is True:
        return None
    if verdict is False:
        return f"rejected by {getattr(check, '__name__', 'the check')}"
    return str(verdict)


class ValidationPlugin(Plugin):
    """Validates node deltas and agents' final replies.

    ``nodes`` maps a node name to a check of its delta: a failing delta fails the node.
    ``output`` checks the text of an agent's final reply (one without tool calls); a failing
    reply is sent back to the model with the problem (:class:`Reask`), and after the agent's
    ``max_output_retries`` the run fails. ``agents`` limits the output check to those names.
    """

    def __init__(
        self,
        *,
        nodes: Mapping[str, Check] | None = None,
        output: Check | None = None,
        agents: Collection[str] | None = None,
    ) -> None:
        self.nodes = dict(nodes or {})
        self.output = output
        self.agents = None if agents is None else frozenset(agents)

    async def after_node(
        self, ctx: NodeContext, state: BaseModel, delta: dict[str, Any]
    ) -> dict[str, Any]:
        check = self.nodes.get(ctx.node)
        if check is not None:
            problem = problem_with(check, delta)
            if problem is not None:
                raise PluginError(
                    f"node {ctx.node!r} produced an invalid delta: {problem}",
                    plugin=self.name,
                    hook="after_node",
                    run_id=ctx.run_id,
                )
        return delta

    async def after_llm_call(
        self, ctx: HookContext, request: ChatRequest, response: ChatResponse
    ) -> ChatResponse:
        if self.output is None or response.message.tool_calls:
            return response
        if ctx.agent is None or (self.agents is not None and ctx.agent not in self.agents):
            return response
        problem = problem_with(self.output, response.text)
        if problem is not None:
            raise Reask(problem)
        return response
