"""What a node returns, and how that becomes the delta the runner applies and checkpoints.

A node of a ``Workflow[S]`` returns one of:

- ``None``: nothing changed;
- a *partial update model*: any pydantic model whose fields are all fields of ``S``. Only
  the fields the node set (``model_fields_set``) apply, so defaults never overwrite state;
- ``S`` itself: the fields it set whose values differ from the state the node was given
  (parallel branches that each return a modified copy do not undo each other's work). So a
  node must not mutate the state it is given: returning the given object itself is refused
  (its in-place changes cannot be told apart), so return ``state.model_copy(update={...})``;
- a mapping of field → value (the older, untyped form), validated against ``S`` on merge.

An update model with a field ``S`` lacks is refused twice: when the node is registered, if
its return annotation names the model (and resolves at that point: a model defined inside
a function does not), and when the node returns it.
"""

from __future__ import annotations

import collections.abc
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeAlias

from pydantic import BaseModel

from arbor.core.errors import WorkflowError

__all__ = ["NodeUpdate", "check_returns", "to_delta"]

#: What a node may return (see the module docstring).
NodeUpdate: TypeAlias = BaseModel | Mapping[str, Any] | None

_UNIONS = (typing.Union, types.UnionType)
_AWAITABLES = (collections.abc.Awaitable, collections.abc.Coroutine)


def check_returns(
    workflow: str, node: str, fn: Callable[..., Any], state_type: type[BaseModel]
) -> None:
    """Refuse ``fn`` when its return annotation names an update model with a field the state
    lacks; an annotation that does not resolve here is left to the run-time check."""
    for model in _models_in(_return_annotation(fn)):
        _check_fields(model, state_type, f"workflow {workflow!r}: node {node!r}", "")


def to_delta(
    node: str,
    update: object,
    given: BaseModel,
    state_type: type[BaseModel],
    *,
    run_id: str = "",
) -> dict[str, Any]:
    """The changes ``update`` (a node's return value) makes to ``given`` (the state the node
    ran on), as field → value."""
    if update is None:
        return {}
    if update is given:  # changed in place, if at all: nothing to tell the changes by
        raise WorkflowError(
            f"node {node!r} returned the state object it was given; return "
            f"state.model_copy(update={{...}}) or a partial update model instead",
            run_id=run_id,
        )
    if isinstance(update, BaseModel):
        _check_fields(type(update), state_type, f"node {node!r}", run_id)
        chosen = update.model_fields_set
        if isinstance(update, state_type):
            chosen = {f for f in chosen if not _same(getattr(update, f), getattr(given, f))}
        return {f: getattr(update, f) for f in type(update).model_fields if f in chosen}
    if isinstance(update, Mapping):
        return dict(update)
    raise WorkflowError(
        f"node {node!r} returned {type(update).__name__}; a node returns None, a partial "
        f"update model, a {state_type.__name__} or a mapping of its fields",
        run_id=run_id,
    )


def _check_fields(
    model: type[BaseModel], state_type: type[BaseModel], where: str, run_id: str
) -> None:
    unknown = [f for f in model.model_fields if f not in state_type.model_fields]
    if unknown:
        fields = ", ".join(map(repr, unknown))
        noun = "field" if len(unknown) == 1 else "fields"
        raise WorkflowError(
            f"{where} returns {model.__name__}, whose {noun} {fields} "
            f"{'is' if len(unknown) == 1 else 'are'} not in the state {state_type.__name__}",
            run_id=run_id,
        )


def _same(a: object, b: object) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # e.g. an array's elementwise ==: count it as changed
        return False


def _return_annotation(fn: Callable[..., Any]) -> object:
    target: Any = fn
    while hasattr(target, "__wrapped__"):
        target = target.__wrapped__
    target = getattr(target, "__func__", target)  # a bound method
    annotations = getattr(target, "__annotations__", None)
    if not isinstance(annotations, dict) or "return" not in annotations:
        return None
    stand_in = types.SimpleNamespace(__annotations__={"return": annotations["return"]})
    try:
        hints = typing.get_type_hints(stand_in, globalns=getattr(target, "__globals__", {}))
    except (NameError, AttributeError, TypeError, SyntaxError):
        return None  # a name only a type checker sees, or one local to a function
    return hints.get("return")


def _models_in(annotation: object) -> Iterator[type[BaseModel]]:
    """The models an annotation names as what is returned: itself, the members of a union,
    and what an awaitable or coroutine yields (not the values of a ``dict[str, Model]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in _UNIONS:
        for arg in args:
            yield from _models_in(arg)
    elif origin in _AWAITABLES and args:
        yield from _models_in(args[-1])
    elif origin is typing.Annotated and args:
        yield from _models_in(args[0])
