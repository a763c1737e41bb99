"""Workflows by name, from every source: the ``arbor.workflows`` entry points (Arbor declares
its own built-ins there too, so ``review-loop``, ``renode`` and ``team`` come in the same way
as an installed package's) plus factories handed in by code (tests, an embedding program).

The service and the command line find workflows only through a :class:`WorkflowRegistry`, so
neither imports an application: an app declares its factory in its package's metadata and is
imported the first time one of its workflows is built. Listing names loads no code.

A factory takes the model id its agents use (``None``: the settings' default model) and
returns a :class:`~arbor.agents.workflow.graph.Workflow`. An entry point is written
``name = "package.module:factory"``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from arbor.agents.workflow.graph import Workflow
from arbor.core.errors import ConfigError, NotFoundError

__all__ = ["ENTRY_POINT_GROUP", "WorkflowFactory", "WorkflowRegistry"]

#: The entry-point group packages declare workflow factories in.
ENTRY_POINT_GROUP = "arbor.workflows"

#: Builds a workflow for a model id (None: the settings' default model).
WorkflowFactory = Callable[[str | None], Workflow[Any]]


@dataclass(frozen=True, slots=True)
class _Declared:
    """A factory named by ``module:attr``, imported on first use (and picklable, so a
    registry of declared workflows travels to Ray workers as it is)."""

    target: str
    source: str

    def load(self, name: str) -> WorkflowFactory:
        module_name, _, attr = self.target.partition(":")
        try:
            factory: WorkflowFactory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"workflow {name!r} ({self.target}, declared by {self.source}) cannot be "
                f"loaded: {exc}"
            ) from None
        if not callable(factory):
            raise ConfigError(f"workflow {name!r}: {self.target} is not a factory")
        return factory


class WorkflowRegistry:
    """Workflow factories by name.

    ``factories`` are given in code and win over declared ones of the same name;
    ``discover`` (default) adds every ``arbor.workflows`` entry point installed. Immutable:
    :meth:`with_factories` returns a new registry.
    """

    def __init__(
        self,
        factories: Mapping[str, WorkflowFactory] | None = None,
        *,
        discover: bool = True,
    ) -> None:
        declared = _declared(entry_points(group=ENTRY_POINT_GROUP)) if discover else {}
        self._entries: dict[str, WorkflowFactory | _Declared] = {
            **declared,
            **dict(factories or {}),
        }

    @classmethod
    def _of(cls, entries: Mapping[str, WorkflowFactory | _Declared]) -> WorkflowRegistry:
        registry = cls(discover=False)
        registry._entries = dict(entries)
        return registry

    @classmethod
    def including(
        cls, workflows: WorkflowRegistry | Mapping[str, WorkflowFactory] | None
    ) -> WorkflowRegistry:
        """``workflows`` itself when it is a registry, else the installed workflows plus
        the given factories (which win over installed ones of the same name)."""
        if isinstance(workflows, WorkflowRegistry):
            return workflows
        return cls(workflows)

    def with_factories(self, factories: Mapping[str, WorkflowFactory]) -> WorkflowRegistry:
        """This registry plus ``factories`` (which win over entries of the same name)."""
        return WorkflowRegistry._of({**self._entries, **factories})

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def factory(self, name: str) -> WorkflowFactory:
        """The factory of ``name``: NotFoundError naming the known ones, ConfigError when
        the declaring package cannot be imported."""
        entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(self.names()) or "none"
            raise NotFoundError(f"no workflow named {name!r} (known: {known})")
        return entry.load(name) if isinstance(entry, _Declared) else entry

    def get(self, name: str, model: str | None = None) -> Workflow[Any]:
        """The workflow ``name`` built for ``model``."""
        return self.factory(name)(model)

    def __call__(self, name: str, model: str | None = None) -> Workflow[Any]:
        """The same as :meth:`get`, so a registry serves as a batch's workflow resolver."""
        return self.get(name, model)


def _declared(found: Iterable[EntryPoint]) -> dict[str, _Declared]:
    out: dict[str, _Declared] = {}
    for ep in found:
        dist = ep.dist.name if ep.dist is not None else "an unknown package"
        out.setdefault(ep.name, _Declared(ep.value, f"package {dist}"))
    return out
