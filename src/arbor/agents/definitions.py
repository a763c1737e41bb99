"""Agent definitions: the declarative form of an :class:`~arbor.agents.agent.Agent`.

A definition is what the store keeps (``agents.definition``) and what YAML or JSON files
hold; :meth:`AgentDefinition.build` turns one into an agent::

    name: reviewer-strict
    role: reviewer                  # a built-in role, or give `instructions`
    model: openai:gpt-4o-mini       # optional; the client's default model otherwise
    variables: {context: "Renode C# peripherals"}
    memory: {max_messages: 20, strategy: summarize}
    max_steps: 5
    tools: [search, fetch_page]     # resolved against the tools given to build(...)
    temperature: 0.0                # optional; the role's default otherwise

A file holds one mapping, a list of them, or a mapping with an ``agents:`` list.

Role instructions are rendered *lazily*: a role's template needs per-run values (the task,
the code, ...), so the agent built from a role definition renders the role template at each
run from the run's ``deps`` (a mapping; keys the role does not take are ignored) on top of
the definition's fixed ``variables``. A required variable missing at run time is an
:class:`~arbor.agents.agent.InstructionsError` naming it. Explicit ``instructions`` win over
the role's template (the role then still supplies the default output type and temperature);
they are a Jinja2 template rendered per run, like any agent's.

Supervision (:mod:`arbor.agents.supervision`) builds stored agents from their definitions:
it imports this module, never the other way round.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from arbor.agents.agent import Agent
from arbor.agents.errors import InstructionsError
from arbor.agents.memory import MemoryPolicy
from arbor.agents.roles import ROLE_NAMES, ROLES, RoleRenderer, RoleTemplateError, get_role
from arbor.agents.tools import Tool
from arbor.core.errors import ArborError

if TYPE_CHECKING:
    from arbor.store.agents import AgentRecord

__all__ = [
    "OUTPUT_TYPES",
    "AgentDefinition",
    "AgentDefinitionError",
    "RoleAgent",
    "load_definitions",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_MODEL = re.compile(r"^[A-Za-z0-9_.-]+:\S+$")
_TOOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
#: Output type names a definition may give: every role's output model, and "text".
OUTPUT_TYPES: Mapping[str, type[BaseModel]] = {
    role.output_type.__name__: role.output_type for role in ROLES.values()
}
_TEXT = "text"


class AgentDefinitionError(ArborError):
    """A definition (or a definitions file) is invalid; names the file, agent and field."""

    kind = "invalid_definition"

    def __init__(self, message: str, *, path: str = "", agent: str = "", field: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.agent = agent
        self.field = field


class AgentDefinition(BaseModel):
    """One agent, as stored and as written in definition files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    role: str | None = None
    instructions: str | None = None
    #: Fixed role template variables (e.g. ``context``); per-run ones come from deps.
    variables: dict[str, str] = Field(default_factory=dict)
    model: str | None = None
    memory: MemoryPolicy = Field(default_factory=MemoryPolicy)
    max_steps: int = Field(10, ge=1, le=1000)
    max_output_retries: int = Field(2, ge=0, le=20)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    #: An output model name (see :data:`OUTPUT_TYPES`) or "text"; default: the role's.
    output: str | None = None
    #: Tool names, resolved against the tools passed to :meth:`build` (no global registry).
    tools: tuple[str, ...] = ()

    @field_validator("tools")
    @classmethod
    def _tool_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _TOOL.match(name):
                raise ValueError(f"tool name {name!r} must be an identifier")
        if len(set(value)) != len(value):
            raise ValueError("a tool is listed twice")
        return value

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "must be a slug: lowercase letters, digits, '-' or '_', starting with a "
                "letter or digit, at most 63 characters"
            )
        return value

    @field_validator("role")
    @classmethod
    def _known_role(cls, value: str | None) -> str | None:
        if value is not None and value not in ROLE_NAMES:
            raise ValueError(f"unknown role {value!r}; known roles: {', '.join(ROLE_NAMES)}")
        return value

    @field_validator("model")
    @classmethod
    def _model_id(cls, value: str | None) -> str | None:
        if value is not None and not _MODEL.match(value):
            raise ValueError(f"must look like provider:model, got {value!r}")
        return value

    @field_validator("output")
    @classmethod
    def _output_name(cls, value: str | None) -> str | None:
        if value is not None and value != _TEXT and value not in OUTPUT_TYPES:
            known = ", ".join([_TEXT, *sorted(OUTPUT_TYPES)])
            raise ValueError(f"unknown output type {value!r}; known: {known}")
        return value

    @model_validator(mode="after")
    def _role_or_instructions(self) -> AgentDefinition:
        if self.role is None and not (self.instructions or "").strip():
            raise ValueError("give a role or instructions")
        if self.variables:
            if self.role is None or self.instructions is not None:
                raise ValueError("variables are only used with a role and no instructions")
            role = get_role(self.role)
            unknown = sorted(set(self.variables) - set(role.variables))
            if unknown:
                raise ValueError(
                    f"role {role.name!r} does not take variable(s) {', '.join(unknown)} "
                    f"(it takes: {', '.join(role.variables)})"
                )
        return self

    # ---- conversions --------------------------------------------------------------------
    @classmethod
    def parse(
        cls, data: Any, *, path: str | Path = "", index: int | None = None
    ) -> AgentDefinition:
        """Validate ``data``; :class:`AgentDefinitionError` names the file, agent and field."""
        where = f"{path}: " if str(path) else ""
        agent = _agent_label(data, index)
        if not isinstance(data, Mapping):
            raise AgentDefinitionError(
                f"{where}{agent}: must be a mapping, not {type(data).__name__}",
                path=str(path),
                agent=agent,
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            field = ".".join(str(p) for p in first["loc"])
            message = first["msg"].removeprefix("Value error, ")
            count = exc.error_count()
            more = f" (and {count - 1} more error{'s' if count > 2 else ''})" if count > 1 else ""
            shown = f"field {field!r}: " if field else ""
            raise AgentDefinitionError(
                f"{where}{agent}: {shown}{message}{more}",
                path=str(path),
                agent=agent,
                field=field,
            ) from None

    @classmethod
    def from_record(cls, record: AgentRecord) -> AgentDefinition:
        """The definition of a stored agent (its name is the record's)."""
        return cls.parse({**record.definition, "name": record.name})

    def to_document(self) -> dict[str, Any]:
        """The JSON document the store keeps (unset optional fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)

    # ---- building -----------------------------------------------------------------------
    def output_type(self) -> type[BaseModel] | None:
        """The output model, or ``None`` for plain text."""
        if self.output == _TEXT:
            return None
        if self.output is not None:
            return OUTPUT_TYPES[self.output]
        return get_role(self.role).output_type if self.role is not None else None

    def resolve_tools(self, tools: Mapping[str, Tool] | Sequence[Tool] = ()) -> list[Tool]:
        """The definition's tools, by name, from ``tools`` (a name → tool mapping or a list
        of tools); AgentDefinitionError naming any tool it lacks."""
        available = dict(tools) if isinstance(tools, Mapping) else {t.name: t for t in tools}
        missing = [name for name in self.tools if name not in available]
        if missing:
            known = ", ".join(sorted(available)) or "none were given"
            raise AgentDefinitionError(
                f"agent {self.name!r}: unknown tool(s) {', '.join(map(repr, missing))} "
                f"(available: {known})",
                agent=self.name,
                field="tools",
            )
        return [available[name] for name in self.tools]

    def build(self, tools: Mapping[str, Tool] | Sequence[Tool] = ()) -> Agent[Any]:
        """An agent for this definition (see the module docstring for role instructions),
        with the tools it names taken from ``tools``. A definition that names no tools gets
        a list of tools as given (a mapping is a toolbox to pick from: it then gets none)."""
        if self.tools:
            chosen = self.resolve_tools(tools)
        else:
            chosen = [] if isinstance(tools, Mapping) else list(tools)
        temperature = self.temperature
        if temperature is None and self.role is not None:
            temperature = get_role(self.role).default_temperature
        common: dict[str, Any] = {
            "model": self.model,
            "tools": chosen,
            "memory_policy": self.memory,
            "output_type": self.output_type(),
            "max_steps": self.max_steps,
            "max_output_retries": self.max_output_retries,
            "temperature": temperature,
        }
        if self.instructions is not None or self.role is None:
            return Agent(self.name, self.instructions or "", **common)
        return RoleAgent(self.name, role=self.role, variables=self.variables, **common)


class RoleAgent(Agent[Any]):
    """An agent whose instructions are a built-in role's template, rendered at each run
    from the fixed ``variables`` plus the run's deps (mapping keys the role takes)."""

    __slots__ = ("_renderer", "role", "variables")

    def __init__(
        self,
        name: str,
        *,
        role: str,
        variables: Mapping[str, str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(name, "", **options)
        self.role = get_role(role)
        self.variables: dict[str, str] = dict(variables or {})
        self._renderer = RoleRenderer()

    @property
    def has_instructions(self) -> bool:
        return True

    def render_instructions(self, deps: Any = None, *, run_id: str = "") -> str:
        values: dict[str, object] = dict(self.variables)
        if isinstance(deps, Mapping):
            taken = set(self.role.variables)
            values.update((k, v) for k, v in deps.items() if k in taken and v is not None)
        try:
            return self._renderer.render(self.role, values)
        except RoleTemplateError as exc:
            raise InstructionsError(
                f"agent {self.name!r}: {exc}", agent=self.name, run_id=run_id
            ) from exc


def load_definitions(
    path: str | Path, tools: Mapping[str, Tool] | Sequence[Tool] | None = None
) -> list[AgentDefinition]:
    """The definitions in a YAML (or ``.json``) file: one mapping, a list of them, or a
    mapping with an ``agents:`` list. :class:`AgentDefinitionError` names file, agent, field.
    With ``tools``, every tool a definition names must be among them (checked now, not at
    build time)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise AgentDefinitionError(f"{path}: cannot read: {reason}", path=str(path)) from None
    data = _parse(path, text)
    if isinstance(data, Mapping) and "agents" in data:
        if set(data) != {"agents"}:
            extra = ", ".join(sorted(str(k) for k in data if k != "agents"))
            raise AgentDefinitionError(
                f"{path}: unexpected top-level key(s) beside 'agents': {extra}", path=str(path)
            )
        data = data["agents"]
        if not isinstance(data, list):
            raise AgentDefinitionError(f"{path}: 'agents' must be a list", path=str(path))
    items = [data] if isinstance(data, Mapping) else data
    if not isinstance(items, list) or not items:
        raise AgentDefinitionError(
            f"{path}: expected an agent mapping, a list of them or an 'agents:' list",
            path=str(path),
        )
    definitions = [AgentDefinition.parse(item, path=path, index=i) for i, item in enumerate(items)]
    seen: set[str] = set()
    for definition in definitions:
        if definition.name in seen:
            raise AgentDefinitionError(
                f"{path}: agent {definition.name!r} is defined twice",
                path=str(path),
                agent=definition.name,
                field="name",
            )
        seen.add(definition.name)
        if tools is not None:
            try:
                definition.resolve_tools(tools)
            except AgentDefinitionError as exc:
                raise AgentDefinitionError(
                    f"{path}: {exc}", path=str(path), agent=definition.name, field="tools"
                ) from None
    return definitions


def _parse(path: Path, text: str) -> Any:
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise AgentDefinitionError(
                f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}", path=str(path)
            ) from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise AgentDefinitionError(f"{path}: invalid YAML{at}: {problem}", path=str(path)) from None


def _agent_label(data: Any, index: int | None) -> str:
    name = data.get("name") if isinstance(data, Mapping) else None
    if isinstance(name, str) and name:
        return f"agent {name!r}"
    return f"agent #{index + 1}" if index is not None else "agent"
