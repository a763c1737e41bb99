"""Workflows that ship with Arbor, by name (an immutable catalogue of factories)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from arbor.agents.workflow.builtin.review_loop import ReviewLoopState, review_loop
from arbor.agents.workflow.graph import Workflow
from arbor.core.errors import NotFoundError

__all__ = ["BUILTIN_WORKFLOWS", "ReviewLoopState", "get_workflow", "review_loop"]

#: name → factory taking the model id (None = the settings' default model).
BUILTIN_WORKFLOWS: Mapping[str, Callable[[str | None], Workflow[Any]]] = MappingProxyType(
    {"review-loop": review_loop}
)


def get_workflow(name: str, model: str | None = None) -> Workflow[Any]:
    factory = BUILTIN_WORKFLOWS.get(name)
    if factory is None:
        known = ", ".join(sorted(BUILTIN_WORKFLOWS))
        raise NotFoundError(f"no workflow named {name!r} (known: {known})")
    return factory(model)
