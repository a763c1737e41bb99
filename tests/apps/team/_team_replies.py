"""Scripted replies of the software team, keyed on the role in the system prompt."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from arbor.agents.workflow.graph import Workflow
from arbor.apps.team.state import TeamState
from arbor.apps.team.workflow import TeamConfig, build_team_workflow
from arbor.llm.types import ChatRequest

REQUIREMENTS = json.dumps(
    {
        "summary": "A tiny calculator module.",
        "user_stories": [
            {
                "as_a": "developer",
                "i_want": "add(a, b)",
                "so_that": "I can sum numbers",
                "acceptance_criteria": ["add(2, 3) == 5"],
            }
        ],
    }
)
PYPROJECT = '[project]\nname = "calc"\nversion = "0.1.0"\n'
GOOD = "def add(a: int, b: int) -> int:\n    return a + b\n"
BAD = "def add(a: int, b: int) -> int:\n    return a - b\n"


def code(body: str, extra: str = "") -> str:
    return json.dumps(
        {
            "files": [
                {"path": "src/calc/__init__.py", "content": body + extra},
                {"path": "pyproject.toml", "content": PYPROJECT},
            ],
            "rationale": "Story 1 is calc.add.",
        }
    )


TESTS = json.dumps(
    {
        "files": [
            {
                "path": "tests/test_calc.py",
                "content": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
            }
        ],
        "how_to_run": "python -m pytest -q",
    }
)
DEVOPS = json.dumps(
    {
        "files": [
            {"path": "Makefile", "content": "test:\n\tpython -m pytest -q\n"},
            {"path": "Dockerfile", "content": "FROM python:3.11-slim\n"},
        ],
        "notes": "make test",
    }
)
DOCS = json.dumps(
    {
        "files": [{"path": "README.md", "content": "# calc\n\nAdds numbers.\n"}],
        "summary": "How to use calc.",
    }
)

ROLES = {
    "# Role: Business analyst": "analyst",
    "# Role: Developer": "developer",
    "# Role: QA engineer": "qa",
    "# Role: DevOps engineer": "devops",
    "# Role: Technical writer": "writer",
}


def role_of(request: ChatRequest) -> str:
    system = request.messages[0].content or ""
    for marker, role in ROLES.items():
        if system.startswith(marker):
            return role
    raise AssertionError(f"no role in the system prompt: {system[:80]!r}")


def team(replies: dict[str, list[str]]) -> tuple[Callable[[ChatRequest], str], list[str]]:
    """A FunctionModel function answering each role from its own queue (the last reply
    repeats), and the roles in call order."""
    seen: list[str] = []

    def reply(request: ChatRequest) -> str:
        role = role_of(request)
        seen.append(role)
        queue = replies[role]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return reply, seen


def good_team(**override: list[str]) -> dict[str, list[str]]:
    replies = {
        "analyst": [REQUIREMENTS],
        "developer": [code(GOOD)],
        "qa": [TESTS],
        "devops": [DEVOPS],
        "writer": [DOCS],
    }
    replies.update(override)
    return replies


def workflow(tmp: Path, **options: object) -> Workflow[TeamState]:
    return build_team_workflow(
        TeamConfig(
            model="test:team",
            workspaces=tmp / "workspaces",
            published=tmp / "published",
            **options,  # type: ignore[arg-type]
        )
    )
