"""``/v1/agents``: stored agent definitions and their supervision status.

Bodies are validated by :class:`~arbor.agents.definitions.AgentDefinition` (the same rules as
``arbor agents create`` and YAML files), so a bad definition is a 422 naming the field.
Changing agents needs the ``admin`` scope; reading them ``read``. An agent the supervisor
disabled for failing repeatedly shows ``status: disabled_flapping`` with its recent failure
times until ``POST /v1/agents/{name}/enable`` clears them. ``{name}`` also accepts an id.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict

from arbor.agents.definitions import AgentDefinition
from arbor.agents.memory import MemoryPolicy
from arbor.core.errors import InvalidRequestError
from arbor.service.deps import AdminKey, Ctx, KeyFirstRoute, ReadKey
from arbor.store import AgentRecord, AgentRepository, AgentStatus, Database

__all__ = ["AgentCreate", "AgentPage", "AgentPublic", "AgentUpdate", "router"]

router = APIRouter(prefix="/v1/agents", tags=["agents"], route_class=KeyFirstRoute)

#: A new agent's body is a full definition, exactly as in YAML definition files.
AgentCreate = AgentDefinition


class AgentUpdate(BaseModel):
    """Fields to change; the rest of the definition stays. ``null`` clears an optional
    field (e.g. ``model``). The result is validated as a whole definition."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = None
    role: str | None = None
    instructions: str | None = None
    variables: dict[str, str] | None = None
    model: str | None = None
    memory: MemoryPolicy | None = None
    max_steps: int | None = None
    max_output_retries: int | None = None
    temperature: float | None = None
    output: str | None = None


class AgentPublic(BaseModel):
    id: str
    name: str
    status: AgentStatus
    description: str
    role: str | None
    model: str | None
    definition: dict[str, Any]
    #: Recent failure times within the supervisor's window, oldest first.
    failures: list[datetime]
    created_at: datetime
    updated_at: datetime


class AgentPage(BaseModel):
    items: list[AgentPublic]
    #: Pass back as ``cursor`` for the next page; null on the last one.
    next_cursor: str | None


@router.post("", status_code=201)
async def create_agent(
    body: AgentCreate, ctx: Ctx, _key: AdminKey, response: Response
) -> AgentPublic:
    """Store a new agent (409 if the name is taken)."""
    record = await AgentRepository(ctx.db).create(body.name, body.to_document())
    response.headers["Location"] = f"/v1/agents/{record.name}"
    return _public(record)


@router.get("")
async def list_agents(
    ctx: Ctx,
    _key: ReadKey,
    status: AgentStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> AgentPage:
    """Agents by name, optionally with one status, ``limit`` per page."""
    records = await AgentRepository(ctx.db).list(status=status)
    if cursor is not None:
        after = _decode_cursor(cursor)
        records = [r for r in records if r.name > after]
    page = records[:limit]
    more = len(records) > limit
    return AgentPage(
        items=[_public(r) for r in page],
        next_cursor=_encode_cursor(page[-1].name) if more else None,
    )


@router.get("/{name}")
async def get_agent(name: str, ctx: Ctx, _key: ReadKey) -> AgentPublic:
    return _public(await AgentRepository(ctx.db).find(name))


@router.patch("/{name}")
async def update_agent(name: str, body: AgentUpdate, ctx: Ctx, _key: AdminKey) -> AgentPublic:
    """Change some fields of the definition; status and failures are kept."""
    repo = AgentRepository(ctx.db)
    record = await repo.find(name)
    changes = body.model_dump(mode="json", exclude_unset=True)
    merged = {**record.definition, **changes, "name": record.name}
    definition = AgentDefinition.parse({k: v for k, v in merged.items() if v is not None})
    return _public(await repo.update_definition(record.id, definition.to_document()))


@router.delete("/{name}", status_code=204)
async def delete_agent(name: str, ctx: Ctx, _key: AdminKey) -> Response:
    repo = AgentRepository(ctx.db)
    await repo.delete((await repo.find(name)).id)
    return Response(status_code=204)


@router.post("/{name}/enable")
async def enable_agent(name: str, ctx: Ctx, _key: AdminKey) -> AgentPublic:
    """Enable (also an agent disabled for flapping); its failure history starts afresh."""
    return await _set_status(ctx.db, name, "enabled")


@router.post("/{name}/disable")
async def disable_agent(name: str, ctx: Ctx, _key: AdminKey) -> AgentPublic:
    """Disable: the agent will not run until enabled."""
    return await _set_status(ctx.db, name, "disabled")


# ---- helpers ----------------------------------------------------------------------------
async def _set_status(db: Database, name: str, status: AgentStatus) -> AgentPublic:
    repo = AgentRepository(db)
    record = await repo.find(name)
    return _public(await repo.set_status(record.id, status))


def _public(record: AgentRecord) -> AgentPublic:
    definition = record.definition
    return AgentPublic(
        id=record.id,
        name=record.name,
        status=record.status,
        description=str(definition.get("description") or ""),
        role=definition.get("role"),
        model=definition.get("model"),
        definition=definition,
        failures=list(record.failures),
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def _encode_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidRequestError("cursor: not a cursor this API returned") from None
