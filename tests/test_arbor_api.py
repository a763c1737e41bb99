"""``import arbor`` is the public face: exactly the names in ``__all__``, each importable,
seen by type checkers, and loaded only when used (so ``import arbor`` stays light)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import arbor

SRC = Path(__file__).resolve().parents[1] / "src" / "arbor"

#: Every layer's face, with the names a user needs from it.
FACES = [
    "arbor",
    "arbor.agents",
    "arbor.agents.workflow",
    "arbor.llm",
    "arbor.runtime",
    "arbor.store",
    "arbor.testing",
]


def _type_checking_names(path: Path) -> set[str]:
    """Names a module imports under ``if TYPE_CHECKING:`` (what mypy sees of a lazy face)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom):
                    names.update(alias.asname or alias.name for alias in stmt.names)
    return names


def test_the_user_api_is_at_the_top() -> None:
    needed = {
        "Agent",
        "tool",
        "Workflow",
        "WorkflowRunner",
        "END",
        "LLMClient",
        "ChatRequest",
        "Message",
        "Settings",
        "ArborError",
        "ProviderError",
        "RateLimitedError",
        "BudgetExceededError",
        "WorkflowError",
        "ToolError",
        "ConfigError",
        "NotFoundError",
    }
    assert needed <= set(arbor.__all__)


def test_all_is_unique_and_holds_no_test_double() -> None:
    names = arbor.__all__  # ruff's RUF022 keeps it sorted
    assert len(names) == len(set(names))
    assert not {"ScriptedModel", "FunctionModel", "MockUpstream"} & set(names)


@pytest.mark.parametrize("face", FACES)
def test_every_public_name_imports(face: str) -> None:
    module = importlib.import_module(face)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{face}.{name}"
    assert set(module.__all__) <= set(dir(module))


def test_the_lazy_names_are_what_type_checkers_see() -> None:
    assert _type_checking_names(SRC / "__init__.py") == set(arbor.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'arbor' has no attribute 'Nope'"):
        arbor.Nope  # noqa: B018


def test_import_arbor_loads_nothing_heavy() -> None:
    code = (
        "import sys, arbor, arbor.core.config\n"
        "heavy = ('sqlalchemy', 'openai', 'fastapi', 'arbor.agents', 'arbor.llm.client')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_one_liner_from_the_issue_works() -> None:
    code = "import arbor; arbor.Agent; arbor.Workflow; arbor.tool; arbor.LLMClient"
    subprocess.run([sys.executable, "-c", code], check=True)
