"""Agents: the list with each one's status (``disabled_flapping`` included, with its recent
failures), a form to create or edit a definition, and enable/disable buttons.

The form's fields are turned into a definition document and validated by
:class:`~arbor.agents.definitions.AgentDefinition` — the same rules as the API, the CLI and
YAML files — and a bad one comes back as the form with the reason, keeping what was typed.
Reading needs a session; changing agents needs a key with the ``admin`` scope.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.datastructures import FormData

from arbor.agents.definitions import OUTPUT_TYPES, AgentDefinition
from arbor.agents.roles import ROLE_NAMES
from arbor.core.errors import ArborError, InvalidRequestError, NotFoundError
from arbor.service.dashboard.web import (
    Checked,
    DashboardRoute,
    Viewer,
    dashboard_of,
    render,
    see_other,
    status_filter,
)
from arbor.service.errors import ForbiddenError
from arbor.service.problems import problem_for
from arbor.store import AgentRecord, AgentRepository, AgentStatus

__all__ = ["definition_from_form", "router"]

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

_STATUSES: tuple[AgentStatus, ...] = ("enabled", "disabled", "disabled_flapping")
_MAX_FIELD = 20_000
#: Definition fields the form edits; any other stored field survives an edit untouched.
_FORM_FIELDS = frozenset(
    {
        "name",
        "description",
        "role",
        "instructions",
        "model",
        "output",
        "max_steps",
        "max_output_retries",
        "temperature",
        "memory",
        "variables",
    }
)


@router.get("/agents")
async def list_agents(request: Request, session: Viewer, status: str = "") -> Response:
    repo = AgentRepository(dashboard_of(request).ctx.db)
    agents = await repo.list(status=status_filter(status, _STATUSES))
    return render(request, "agents.html", agents=agents, status=status, statuses=_STATUSES)


@router.get("/agents/new")
async def new_agent(request: Request, session: Viewer) -> Response:
    _require_admin(session.can("admin"))
    return _form(request, None, {"max_steps": "10", "max_output_retries": "2"})


@router.post("/agents/new")
async def create_agent(request: Request, session: Checked) -> Response:
    _require_admin(session.can("admin"))
    form = await request.form()
    values = _values(form)
    try:
        definition = definition_from_form(values)
        repo = AgentRepository(dashboard_of(request).ctx.db)
        record = await repo.create(definition.name, definition.to_document())
    except ArborError as exc:
        return _form(request, None, values, error=exc)
    return see_other(f"/agents/{record.name}")


@router.get("/agents/{name}")
async def show_agent(request: Request, name: str, session: Viewer) -> Response:
    record = await _find(request, name)
    return render(request, "agent.html", agent=record)


@router.get("/agents/{name}/edit")
async def edit_agent(request: Request, name: str, session: Viewer) -> Response:
    _require_admin(session.can("admin"))
    record = await _find(request, name)
    return _form(request, record, _values_of(record.definition))


@router.post("/agents/{name}/edit")
async def update_agent(request: Request, name: str, session: Checked) -> Response:
    _require_admin(session.can("admin"))
    record = await _find(request, name)
    values = {**_values(await request.form()), "name": record.name}
    try:
        definition = definition_from_form(values, base=record.definition)
        repo = AgentRepository(dashboard_of(request).ctx.db)
        await repo.update_definition(record.id, definition.to_document())
    except ArborError as exc:
        return _form(request, record, values, error=exc)
    return see_other(f"/agents/{record.name}")


@router.post("/agents/{name}/enable")
async def enable_agent(request: Request, name: str, session: Checked) -> Response:
    return await _set_status(request, name, "enabled", session.can("admin"))


@router.post("/agents/{name}/disable")
async def disable_agent(request: Request, name: str, session: Checked) -> Response:
    return await _set_status(request, name, "disabled", session.can("admin"))


# ---- helpers ----------------------------------------------------------------------------
def definition_from_form(
    values: dict[str, str], *, base: dict[str, Any] | None = None
) -> AgentDefinition:
    """A validated definition from the form's text fields (blank means "not set"); fields of
    ``base`` (the stored definition) that the form does not show, such as tools, are kept."""
    kept = {k: v for k, v in (base or {}).items() if k not in _FORM_FIELDS}
    doc: dict[str, Any] = {**kept, "name": values.get("name", "")}
    for field in ("description", "role", "instructions", "model", "output"):
        if values.get(field):
            doc[field] = values[field]
    for field in ("max_steps", "max_output_retries", "temperature"):
        if values.get(field):
            doc[field] = _number(field, values[field])
    memory: dict[str, Any] = {
        k: _number(f"memory_{k}", values[f"memory_{k}"])
        for k in ("max_messages", "max_tokens")
        if values.get(f"memory_{k}")
    }
    if values.get("memory_strategy"):
        memory["strategy"] = values["memory_strategy"]
    if memory:
        doc["memory"] = memory
    if values.get("variables"):
        doc["variables"] = _variables(values["variables"])
    return AgentDefinition.parse(doc)


def _number(field: str, raw: str) -> int | float:
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        return float(raw)
    except ValueError:
        raise InvalidRequestError(f"{field}: {raw[:40]!r} is not a number") from None


def _variables(text: str) -> dict[str, str]:
    """``name: value`` lines (blank lines ignored)."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise InvalidRequestError(f"variables: line {n} is not 'name: value'")
        out[name.strip()] = value.strip()
    return out


def _values(form: FormData) -> dict[str, str]:
    values = {}
    for key, value in form.multi_items():
        if isinstance(value, str) and key != "csrf_token":
            if len(value) > _MAX_FIELD:
                raise InvalidRequestError(f"{key}: longer than {_MAX_FIELD} characters")
            values[key] = value.strip()
    return values


def _values_of(definition: dict[str, Any]) -> dict[str, str]:
    values = {k: "" if v is None else str(v) for k, v in definition.items() if k != "memory"}
    for k, v in (definition.get("memory") or {}).items():
        values[f"memory_{k}"] = str(v)
    variables = definition.get("variables") or {}
    values["variables"] = "\n".join(f"{k}: {v}" for k, v in variables.items())
    return values


def _form(
    request: Request,
    record: AgentRecord | None,
    values: dict[str, str],
    *,
    error: ArborError | None = None,
) -> Response:
    status = problem_for(error).status if error is not None else 200
    message = dashboard_of(request).ctx.redactor.text(str(error)) if error is not None else ""
    return render(
        request,
        "agent_form.html",
        status_code=status,
        agent=record,
        values=values,
        error=message,
        roles=ROLE_NAMES,
        outputs=["text", *sorted(OUTPUT_TYPES)],
    )


def _require_admin(allowed: bool) -> None:
    if not allowed:
        raise ForbiddenError("changing agents needs an API key with the admin scope")


async def _find(request: Request, name: str) -> AgentRecord:
    repo = AgentRepository(dashboard_of(request).ctx.db)
    try:
        return await repo.get_by_name(name)
    except NotFoundError:
        raise NotFoundError(f"agent {name!r} not found") from None


async def _set_status(request: Request, name: str, status: AgentStatus, admin: bool) -> Response:
    _require_admin(admin)
    record = await _find(request, name)
    await AgentRepository(dashboard_of(request).ctx.db).set_status(record.id, status)
    return see_other(f"/agents/{record.name}")
