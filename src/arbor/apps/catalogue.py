"""The built-in applications' workflows, by name, for the composition root (``arbor serve``).

The service layer never imports ``arbor.apps`` (apps sit above it); the CLI, which composes
the process, passes :func:`app_workflows` to the service context instead. Each entry names a
factory ``(model: str | None) -> Workflow`` by import path and is imported on first use, so
listing the catalogue loads no application code.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

from arbor.agents.workflow.graph import Workflow

__all__ = ["APP_WORKFLOWS", "app_workflows"]

#: workflow name → "module:factory".
APP_WORKFLOWS: dict[str, str] = {
    "renode": "arbor.apps.renode.workflow:renode_workflow",
    "team": "arbor.apps.team.workflow:team_workflow",
}

Factory = Callable[[str | None], Workflow[Any]]


def _lazy(target: str) -> Factory:
    module_name, _, attr = target.partition(":")

    def factory(model: str | None) -> Workflow[Any]:
        build: Factory = getattr(importlib.import_module(module_name), attr)
        return build(model)

    return factory


def _present(target: str) -> bool:
    module_name = target.partition(":")[0]
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def app_workflows() -> dict[str, Factory]:
    """The applications' workflow factories whose modules are installed."""
    return {name: _lazy(t) for name, t in APP_WORKFLOWS.items() if _present(t)}
