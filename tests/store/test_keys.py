from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from arbor.core.errors import AuthError, NotFoundError
from arbor.store import Database, KeyRepository
from arbor.store.keys import KeyRevokedError, hash_key, implied_scopes
from arbor.store.tables import ApiKeyRow


async def test_create_returns_the_key_once_and_stores_only_its_hash(db: Database) -> None:
    keys = KeyRepository(db)
    new = await keys.create("ci", scopes=["read"], rpm=10, tpm=1000, budget_usd=2.5)
    assert new.key.startswith(f"arb_{new.record.prefix}_") and len(new.key) == 4 + 12 + 1 + 43
    assert new.record.id.startswith("key_") and new.record.scopes == ("read",)
    assert (new.record.rpm, new.record.tpm, new.record.budget_usd) == (10, 1000, 2.5)
    async with db.session() as session:
        row = await session.scalar(select(ApiKeyRow).where(ApiKeyRow.id == new.record.id))
    assert row is not None
    assert row.hash == hashlib.sha256(new.key.encode()).hexdigest()
    stored = " ".join(str(getattr(row, c.name)) for c in ApiKeyRow.__table__.columns)
    assert new.key not in stored and new.key.split("_", 2)[2] not in stored
    assert await keys.verify(new.key) == new.record


async def test_verify_refuses_wrong_malformed_and_hostile_values(db: Database) -> None:
    keys = KeyRepository(db)
    new = await keys.create("x")
    wrong_secret = new.key[:-1] + ("A" if new.key[-1] != "A" else "B")
    hostile = [
        "",
        wrong_secret,
        "arb_' OR '1'='1",
        f"arb_{new.record.prefix}_' OR 1=1 --",
        "x" * 16_384,
        new.key + "\x00",
        new.key.replace("a", "é"),
        f'{new.key[:17]}"; DROP TABLE api_keys; --',
    ]
    for value in hostile:
        with pytest.raises(AuthError) as info:
            await keys.verify(value)
        assert str(info.value) == "invalid API key"
    assert (await keys.verify(new.key)).id == new.record.id  # the table survived


async def test_revoke_and_expiry_refuse_the_key(db: Database) -> None:
    keys = KeyRepository(db)
    revoked = await keys.create("r")
    record = await keys.revoke(revoked.record.id)
    assert record.status() == "revoked" and record.revoked_at is not None
    assert (await keys.revoke(revoked.record.id)).revoked_at == record.revoked_at
    with pytest.raises(AuthError, match="revoked"):
        await keys.verify(revoked.key)
    soon = datetime.now(UTC) + timedelta(hours=1)
    expiring = await keys.create("e", expires_at=soon)
    assert (await keys.verify(expiring.key)).status() == "active"
    assert expiring.record.status(soon + timedelta(seconds=1)) == "expired"
    await keys.update(expiring.record.id, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(AuthError, match="expired"):
        await keys.verify(expiring.key)
    with pytest.raises(NotFoundError):
        await keys.revoke("key_nope")


async def test_rotate_keeps_the_id_and_refuses_the_old_secret(db: Database) -> None:
    keys = KeyRepository(db)
    old = await keys.create("svc", scopes=["run"], rpm=5)
    new = await keys.rotate(old.record.id)
    assert new.record.id == old.record.id and new.key != old.key and new.record.rpm == 5
    assert new.record.prefix != old.record.prefix
    with pytest.raises(AuthError, match="invalid API key"):
        await keys.verify(old.key)
    assert (await keys.verify(new.key)).id == old.record.id
    await keys.revoke(old.record.id)
    with pytest.raises(KeyRevokedError, match="revoked"):
        await keys.rotate(old.record.id)


async def test_list_newest_first_and_update(db: Database) -> None:
    keys = KeyRepository(db)
    a = await keys.create("a")
    b = await keys.create("b", scopes=["admin"])
    assert [k.id for k in await keys.list()] == [b.record.id, a.record.id]
    await keys.revoke(a.record.id)
    assert [k.id for k in await keys.list(include_revoked=False)] == [b.record.id]
    changed = await keys.update(b.record.id, name="renamed", rpm=3, scopes=["read"])
    assert (changed.name, changed.rpm, changed.scopes) == ("renamed", 3, ("read",))
    cleared = await keys.update(b.record.id, clear=["rpm"])
    assert cleared.rpm is None and cleared.name == "renamed"
    with pytest.raises(ValueError, match="scopes"):
        await keys.create("bad", scopes=["root"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="rpm"):
        await keys.create("bad", rpm=0)


async def test_mark_used_is_throttled(db: Database) -> None:
    keys = KeyRepository(db, touch_interval=3600)
    new = await keys.create("busy")
    assert await keys.mark_used(new.record.id) is True
    assert await keys.mark_used(new.record.id) is False
    assert (await keys.get(new.record.id)).last_used_at is not None


async def test_bootstrap_key_is_stored_once_and_replaced_when_changed(db: Database) -> None:
    keys = KeyRepository(db)
    first = "operator-chosen-admin-key-0123456789abcdef"
    record = await keys.ensure_bootstrap(first)
    assert record.is_admin and record.name == "bootstrap-admin"
    assert (await keys.ensure_bootstrap(first)).id == record.id
    assert (await keys.verify(first)).id == record.id
    second = "another-operator-chosen-admin-key-0123456789"
    await keys.ensure_bootstrap(second)
    with pytest.raises(AuthError, match="revoked"):
        await keys.verify(first)
    assert (await keys.verify(second)).is_admin
    with pytest.raises(ValueError, match="ARBOR_ADMIN_KEY"):
        await keys.ensure_bootstrap("short")
    assert hash_key(second) != hash_key(first)


def test_scopes_nest() -> None:
    assert implied_scopes(["admin"]) == {"read", "run", "admin"}
    assert implied_scopes(["run"]) == {"read", "run"}
    assert implied_scopes(["read"]) == {"read"}
    assert implied_scopes([]) == frozenset()


async def test_direct_and_session_lookups_read_the_same_key(
    db: Database, session_db: Database
) -> None:
    """On SQLite ``verify`` reads through ``Database.direct``; both paths agree field by field."""
    keys = KeyRepository(db)
    new = await keys.create(
        "both",
        scopes=["read", "run"],
        expires_at=datetime.now(UTC) + timedelta(days=1),
        rpm=7,
        tpm=700,
        budget_usd=0.125,
    )
    await keys.mark_used(new.record.id)
    direct = await keys._by_handle(new.record.prefix)
    through_session = await KeyRepository(session_db)._by_handle(new.record.prefix)
    assert direct is not None and direct == through_session
    assert direct[0] == await keys.get(new.record.id)
    assert direct[0].last_used_at is not None and direct[0].expires_at is not None
    assert await keys._by_handle("nosuchhandle") is None
    assert (db.direct is not None) == (db.dialect == "sqlite")
