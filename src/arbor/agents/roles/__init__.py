"""Built-in roles: a prompt template shipped as package data plus the output model it asks for.

A :class:`Role` is plain immutable data; the prompt lives in ``templates/<name>.md.j2`` and is
read through :mod:`importlib.resources`, so roles work from a wheel, a zip or a source tree.
Templates render in Jinja2's sandbox with ``StrictUndefined``: a variable the caller did not
pass is an error naming the variable and the role, never an empty hole in a prompt.

    >>> role = get_role("reviewer")
    >>> text = render_instructions(role, task="Add a FIFO", code="class Uart {}")
    >>> role.output_type.__name__
    'Review'

Every role declares the variables it needs (``required``) and may use (``optional``, absent
means "not given"); passing a variable the role does not know is refused too, so a typo cannot
silently drop the feedback of a refinement loop. ``output_schema`` is filled in by the renderer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel

from arbor.agents.roles.outputs import (
    AccuracyReport,
    CodeDraft,
    DevOpsFiles,
    Docs,
    Plan,
    Requirements,
    Review,
    RouteDecision,
    TestSuite,
)
from arbor.core.errors import ArborError, NotFoundError

__all__ = [
    "ROLES",
    "ROLE_NAMES",
    "Role",
    "RoleRenderer",
    "RoleTemplateError",
    "UnknownRoleError",
    "get_role",
    "list_roles",
    "render_instructions",
]

_TEMPLATES = "templates"
#: Filled in by the renderer, never by the caller.
_RESERVED = frozenset({"output_schema"})


class UnknownRoleError(NotFoundError):
    """No built-in role has that name; ``known`` lists the ones that exist."""

    kind = "unknown_role"

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(f"unknown role {name!r}; known roles: {', '.join(known)}")
        self.role = name
        self.known = known


class RoleTemplateError(ArborError):
    """A role's instructions could not be rendered (missing or unexpected variables)."""

    kind = "role_template"

    def __init__(self, message: str, *, role: str, variable: str | None = None) -> None:
        super().__init__(message)
        self.role = role
        self.variable = variable


@dataclass(frozen=True, slots=True)
class Role:
    """A built-in role: who the agent is, which template instructs it, what it must return."""

    name: str
    title: str
    description: str
    template_name: str
    output_type: type[BaseModel]
    default_temperature: float
    #: Variables the template cannot do without.
    required: tuple[str, ...] = ()
    #: Variables the template uses when given (missing ones render as "not given").
    optional: tuple[str, ...] = ("context", "feedback")

    @property
    def variables(self) -> tuple[str, ...]:
        return self.required + self.optional

    def output_schema(self) -> dict[str, Any]:
        """The JSON schema of :attr:`output_type`, as a model would be shown it."""
        return self.output_type.model_json_schema()


def _role(
    name: str,
    title: str,
    description: str,
    output_type: type[BaseModel],
    temperature: float,
    required: tuple[str, ...],
    optional: tuple[str, ...] = ("context", "feedback"),
) -> Role:
    return Role(
        name=name,
        title=title,
        description=description,
        template_name=f"{name}.md.j2",
        output_type=output_type,
        default_temperature=temperature,
        required=required,
        optional=optional,
    )


_DEFINITIONS = (
    _role(
        "planner",
        "Planner",
        "Breaks a task into ordered, dependent steps and names the risks.",
        Plan,
        0.2,
        ("task",),
    ),
    _role(
        "coder",
        "Coder",
        "Writes or revises complete source files for a task, following a plan and feedback.",
        CodeDraft,
        0.1,
        ("task",),
        ("plan", "code", "context", "feedback"),
    ),
    _role(
        "reviewer",
        "Code reviewer",
        "Reviews code against its task and returns a verdict with issues; never rewrites it.",
        Review,
        0.0,
        ("task", "code"),
        ("requirements", "context"),
    ),
    _role(
        "accuracy_checker",
        "Accuracy checker",
        "Checks code item by item against a specification and scores the match in [0, 1].",
        AccuracyReport,
        0.0,
        ("requirements", "code"),
        ("task", "context"),
    ),
    _role(
        "router",
        "Router",
        "Chooses the next step of a workflow from a fixed list of routes; does nothing else.",
        RouteDecision,
        0.0,
        ("task", "routes"),
        ("state", "feedback"),
    ),
    _role(
        "business_analyst",
        "Business analyst",
        "Turns a product request into user stories with testable acceptance criteria.",
        Requirements,
        0.3,
        ("task",),
    ),
    _role(
        "developer",
        "Developer",
        "Implements the requirements as a small, tested-ready Python project.",
        CodeDraft,
        0.2,
        ("requirements",),
        ("code", "context", "feedback"),
    ),
    _role(
        "qa_engineer",
        "QA engineer",
        "Writes pytest tests that check the code against the acceptance criteria.",
        TestSuite,
        0.1,
        ("requirements", "code"),
    ),
    _role(
        "devops_engineer",
        "DevOps engineer",
        "Writes the Makefile, Dockerfile and CI configuration that build and test the project.",
        DevOpsFiles,
        0.1,
        ("requirements", "code"),
    ),
    _role(
        "technical_writer",
        "Technical writer",
        "Writes the README and user documentation from the requirements and the code.",
        Docs,
        0.4,
        ("requirements", "code"),
        ("context",),
    ),
)

#: Every built-in role by name (read-only).
ROLES: Mapping[str, Role] = MappingProxyType({role.name: role for role in _DEFINITIONS})
ROLE_NAMES: tuple[str, ...] = tuple(ROLES)


def get_role(name: str) -> Role:
    """The built-in role called ``name``; :class:`UnknownRoleError` names the known ones."""
    try:
        return ROLES[name]
    except KeyError:
        raise UnknownRoleError(name, ROLE_NAMES) from None


def list_roles() -> list[Role]:
    """All built-in roles, in definition order."""
    return list(_DEFINITIONS)


def _load_template(name: str) -> str:
    resource = resources.files(__name__) / _TEMPLATES / name
    try:
        return resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise jinja2.TemplateNotFound(name) from None


class RoleRenderer:
    """Renders role instructions; owns its sandboxed environment and compiled-template cache.

    Hold one where renders are frequent (a runtime, a batch); :func:`render_instructions`
    makes a throwaway one so no cache is shared between callers.
    """

    def __init__(self) -> None:
        self._env = SandboxedEnvironment(
            loader=jinja2.FunctionLoader(_load_template),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(
        self,
        role: Role | str,
        variables: Mapping[str, object],
        *,
        include_schema: bool = True,
    ) -> str:
        """The role's instructions with ``variables`` filled in.

        ``include_schema`` appends the output model's JSON schema (compact, to spare small
        models' context) to the prompt; leave it off when the request already carries it as
        ``response_format``.
        """
        role = get_role(role) if isinstance(role, str) else role
        _check_variables(role, variables)
        values: dict[str, object] = dict.fromkeys(role.optional)
        values.update(variables)
        values["output_schema"] = (
            json.dumps(role.output_schema(), sort_keys=True) if include_schema else None
        )
        try:
            return self._env.get_template(role.template_name).render(values)
        except jinja2.UndefinedError as exc:
            raise RoleTemplateError(
                f"role {role.name!r}: template {role.template_name} uses an undefined "
                f"variable ({exc.message})",
                role=role.name,
            ) from exc
        except jinja2.TemplateNotFound as exc:
            raise RoleTemplateError(
                f"role {role.name!r}: template {role.template_name} is not in the package",
                role=role.name,
            ) from exc


def _check_variables(role: Role, variables: Mapping[str, object]) -> None:
    for name in role.required:
        if name not in variables or variables[name] is None:
            raise RoleTemplateError(
                f"role {role.name!r} needs variable {name!r} "
                f"(required: {', '.join(role.required)})",
                role=role.name,
                variable=name,
            )
    for name in variables:
        if name in _RESERVED or name not in role.variables:
            raise RoleTemplateError(
                f"role {role.name!r} does not take variable {name!r} "
                f"(it takes: {', '.join(role.variables)})",
                role=role.name,
                variable=name,
            )


def render_instructions(
    role: Role | str, /, *, include_schema: bool = True, **variables: object
) -> str:
    """Render a role's instructions; see :meth:`RoleRenderer.render`."""
    return RoleRenderer().render(role, variables, include_schema=include_schema)
