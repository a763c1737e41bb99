"""``/v1/keys``: API key administration (admin scope).

A new or rotated key is returned once, in :class:`KeyCreated`; :class:`KeyPublic` never holds
the key or its hash. Revoking and rotating take effect on the key's next request.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from arbor.core.errors import InvalidRequestError
from arbor.service.deps import AdminKey, Ctx, KeyFirstRoute
from arbor.store import KeyRecord, KeyRepository, KeyScope, KeyStatus, NewKey

__all__ = ["KeyCreate", "KeyCreated", "KeyPublic", "KeyUpdate", "router"]

router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=KeyFirstRoute)

Name = Annotated[str, Field(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _run_scope() -> list[KeyScope]:
    return ["run"]


class KeyCreate(_Strict):
    name: Name = ""
    scopes: list[KeyScope] = Field(default_factory=_run_scope, min_length=1)
    #: Either an absolute expiry or a lifetime in seconds from now (not both).
    expires_at: datetime | None = None
    expires_in: int | None = Field(None, ge=1, le=10 * 365 * 86400, strict=True)
    rpm: int | None = Field(None, ge=1, strict=True)
    tpm: int | None = Field(None, ge=1, strict=True)
    budget_usd: float | None = Field(None, ge=0, strict=True)

    @model_validator(mode="after")
    def _one_expiry(self) -> KeyCreate:
        if self.expires_at is not None and self.expires_in is not None:
            raise ValueError("give expires_at or expires_in, not both")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise ValueError("expires_at needs a timezone (e.g. 2027-01-01T00:00:00Z)")
        return self

    def expiry(self) -> datetime | None:
        if self.expires_in is not None:
            return datetime.now(UTC) + timedelta(seconds=self.expires_in)
        return self.expires_at

    async def create_in(self, keys: KeyRepository) -> NewKey:
        """The key this request describes, made in ``keys`` (for the API and the dashboard)."""
        return await keys.create(
            self.name,
            scopes=self.scopes,
            expires_at=self.expiry(),
            rpm=self.rpm,
            tpm=self.tpm,
            budget_usd=self.budget_usd,
        )


class KeyUpdate(_Strict):
    """Fields to change; an explicit ``null`` removes an expiry or a limit. A name and scopes
    cannot be removed, so the schema does not offer ``null`` for them (422 if sent)."""

    name: Name | SkipJsonSchema[None] = None
    scopes: Annotated[list[KeyScope], Field(min_length=1)] | SkipJsonSchema[None] = None
    expires_at: datetime | None = None
    rpm: int | None = Field(None, ge=1, strict=True)
    tpm: int | None = Field(None, ge=1, strict=True)
    budget_usd: float | None = Field(None, ge=0, strict=True)


class KeyPublic(BaseModel):
    id: str
    name: str
    #: The key's public start (``arb_<prefix>``), to tell keys apart.
    prefix: str
    scopes: list[KeyScope]
    status: KeyStatus
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    rpm: int | None
    tpm: int | None
    budget_usd: float | None

    @classmethod
    def of(cls, record: KeyRecord) -> KeyPublic:
        return cls(
            id=record.id,
            name=record.name,
            prefix=f"arb_{record.prefix}",
            scopes=list(record.scopes),
            status=record.status(),
            created_at=record.created_at,
            expires_at=record.expires_at,
            revoked_at=record.revoked_at,
            last_used_at=record.last_used_at,
            rpm=record.rpm,
            tpm=record.tpm,
            budget_usd=record.budget_usd,
        )


class KeyCreated(KeyPublic):
    #: The API key itself: shown this once, stored nowhere.
    key: str


@router.post("", status_code=201, response_model=KeyCreated)
async def create_key(body: KeyCreate, ctx: Ctx, _admin: AdminKey) -> KeyCreated:
    """Create a key; the response is the only time the key is shown."""
    new = await body.create_in(ctx.keys)
    return KeyCreated(**KeyPublic.of(new.record).model_dump(), key=new.key)


@router.get("", response_model=list[KeyPublic])
async def list_keys(
    ctx: Ctx,
    _admin: AdminKey,
    status: Annotated[Literal["active", "expired", "revoked"] | None, Query()] = None,
) -> list[KeyPublic]:
    """Every key, newest first (optionally only those with ``status``)."""
    keys = [KeyPublic.of(r) for r in await ctx.keys.list()]
    return [k for k in keys if status is None or k.status == status]


@router.get("/{key_id}", response_model=KeyPublic)
async def get_key(key_id: str, ctx: Ctx, _admin: AdminKey) -> KeyPublic:
    return KeyPublic.of(await ctx.keys.get(key_id))


@router.patch("/{key_id}", response_model=KeyPublic)
async def update_key(key_id: str, body: KeyUpdate, ctx: Ctx, _admin: AdminKey) -> KeyPublic:
    """Change a key's name, scopes, expiry or limits (effective on its next request)."""
    given = body.model_fields_set
    for name in ("name", "scopes"):
        if name in given and getattr(body, name) is None:
            raise InvalidRequestError(f"{name} cannot be null")
    if body.expires_at is not None and body.expires_at.tzinfo is None:
        raise InvalidRequestError("expires_at needs a timezone (e.g. 2027-01-01T00:00:00Z)")
    limits: tuple[Literal["rpm", "tpm", "budget_usd"], ...] = ("rpm", "tpm", "budget_usd")
    cleared = [n for n in limits if n in given and getattr(body, n) is None]
    record = await ctx.keys.update(
        key_id,
        name=body.name,
        scopes=body.scopes,
        expires_at=body.expires_at,
        clear_expiry="expires_at" in given and body.expires_at is None,
        rpm=body.rpm,
        tpm=body.tpm,
        budget_usd=body.budget_usd,
        clear=cleared,
    )
    return KeyPublic.of(record)


@router.post("/{key_id}/revoke", response_model=KeyPublic)
async def revoke_key(key_id: str, ctx: Ctx, _admin: AdminKey) -> KeyPublic:
    """Refuse the key from its next request on."""
    return KeyPublic.of(await ctx.keys.revoke(key_id))


@router.delete("/{key_id}", response_model=KeyPublic)
async def delete_key(key_id: str, ctx: Ctx, _admin: AdminKey) -> KeyPublic:
    """Same as revoke: the row stays so usage records keep naming a known key."""
    return KeyPublic.of(await ctx.keys.revoke(key_id))


@router.post("/{key_id}/rotate", response_model=KeyCreated)
async def rotate_key(key_id: str, ctx: Ctx, _admin: AdminKey) -> KeyCreated:
    """A new secret for the same key (id, scopes, limits, usage kept); the old one is refused
    from the next request on. The response is the only time the new key is shown."""
    new = await ctx.keys.rotate(key_id)
    return KeyCreated(**KeyPublic.of(new.record).model_dump(), key=new.key)
