"""The workflow registry: every installed ``arbor.workflows`` entry point (Arbor's own
built-ins are declared there), factories given in code, and clear errors."""

from __future__ import annotations

import pickle
import sys
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from arbor.agents.workflow import END, Workflow
from arbor.agents.workflow import registry as registry_module
from arbor.agents.workflow.registry import WorkflowRegistry
from arbor.core.errors import ConfigError, NotFoundError


class Echo(BaseModel):
    text: str = ""


def _echo(model: str | None) -> Workflow[Echo]:
    wf = Workflow("echo", Echo)

    @wf.node()
    async def say(state: Echo, ctx: Any) -> dict[str, Any]:
        return {"text": state.text + "!"}

    wf.edge("say", END)
    return wf


def test_the_builtins_come_from_the_package_metadata() -> None:
    registry = WorkflowRegistry()
    assert {"review-loop", "renode", "team"} <= set(registry.names())
    assert registry.get("review-loop", "test:a").name == "review-loop"


def test_listing_names_imports_no_application() -> None:
    for name in [m for m in sys.modules if m.startswith(("arbor.apps.renode", "arbor.apps.team"))]:
        del sys.modules[name]
    WorkflowRegistry().names()
    assert not any(m.startswith("arbor.apps.team") for m in sys.modules)


def test_given_factories_win_over_installed_ones() -> None:
    registry = WorkflowRegistry({"review-loop": _echo, "echo": _echo})
    assert registry.get("review-loop").name == "echo"
    assert "echo" in registry and "renode" in registry
    assert WorkflowRegistry({"echo": _echo}, discover=False).names() == ["echo"]
    extended = WorkflowRegistry(discover=False).with_factories({"echo": _echo})
    assert extended.names() == ["echo"]


def test_including_keeps_a_registry_and_extends_a_mapping() -> None:
    given = WorkflowRegistry(discover=False)
    assert WorkflowRegistry.including(given) is given
    assert "echo" in WorkflowRegistry.including({"echo": _echo})
    assert "review-loop" in WorkflowRegistry.including(None)


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(NotFoundError, match=r"no workflow named 'nope' \(known: .*review-loop"):
        WorkflowRegistry().get("nope")


def test_an_entry_point_whose_module_is_missing_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = EntryPoint("broken", "no_such_module_xyz:factory", registry_module.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [broken])
    registry = WorkflowRegistry()
    assert registry.names() == ["broken"]  # listed without importing it
    with pytest.raises(ConfigError, match=r"workflow .broken. .*no_such_module_xyz.*cannot be"):
        registry.get("broken")


def test_a_package_outside_arbor_adds_a_workflow(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "my_flows.py").write_text(_PLUGIN, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    declared = EntryPoint("mine", "my_flows:build", registry_module.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [declared])
    assert WorkflowRegistry().get("mine").name == "mine"


def test_a_declared_registry_travels_pickled() -> None:
    registry = WorkflowRegistry()
    copy = pickle.loads(pickle.dumps(registry))
    assert copy.names() == registry.names()
    assert copy.get("review-loop").name == "review-loop"


_PLUGIN = """
from pydantic import BaseModel
from arbor.agents.workflow import END, Workflow


class S(BaseModel):
    n: int = 0


def build(model):
    wf = Workflow("mine", S)

    @wf.node()
    async def one(state, ctx):
        return {"n": state.n + 1}

    wf.edge("one", END)
    return wf
"""
