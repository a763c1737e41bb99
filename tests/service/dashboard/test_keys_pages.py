"""API keys page: create shows the secret once (never again, never a hash), revoke and
rotate take effect and end that key's sessions, admin scope and CSRF required."""

from __future__ import annotations

import re

import httpx
from _pages import Login

from arbor.service.context import ServiceContext

Browser = tuple[httpx.AsyncClient, str]
_SECRET = re.compile(r'<code id="new-key-secret">([^<]+)</code>')


def _secret(html: str) -> str:
    found = _SECRET.search(html)
    assert found is not None, "no secret shown"
    return found.group(1)


async def test_create_shows_the_secret_once(
    admin_browser: Browser, service_ctx: ServiceContext, admin_key: str
) -> None:
    client, token = admin_browser
    listing = await client.get("/keys")
    assert listing.status_code == 200
    assert admin_key not in listing.text
    answer = await client.post(
        "/keys/new",
        data={
            "csrf_token": token,
            "name": "ci <pipeline>",
            "scopes": ["read", "run"],
            "rpm": "60",
            "budget_usd": "2.5",
            "expires_in_days": "30",
        },
    )
    assert answer.status_code == 201
    assert answer.headers["cache-control"] == "no-store"
    secret = _secret(answer.text)
    assert answer.text.count(secret) == 1
    assert "ci &lt;pipeline&gt;" in answer.text
    record = await service_ctx.keys.verify(secret)
    assert record.name == "ci <pipeline>"
    assert record.rpm == 60
    assert record.budget_usd == 2.5
    assert record.expires_at is not None
    again = await client.get("/keys")
    assert secret not in again.text
    assert f'data-key="{record.id}"' in again.text
    assert f"arb_{record.prefix}" in again.text
    assert admin_key not in again.text


async def test_bad_key_forms_are_explained(
    admin_browser: Browser, service_ctx: ServiceContext
) -> None:
    client, token = admin_browser
    before = len(await service_ctx.keys.list())
    for data, reason in [
        ({"name": "x"}, "scopes"),
        ({"name": "x", "scopes": ["root"]}, "scopes"),
        ({"name": "x", "scopes": ["run"], "rpm": "-1"}, "rpm"),
        ({"name": "x", "scopes": ["run"], "expires_in_days": "soon"}, "days"),
    ]:
        answer = await client.post("/keys/new", data={"csrf_token": token, **data})
        assert answer.status_code == 422, data
        assert reason in answer.text
        assert 'id="new-key-secret"' not in answer.text
    assert len(await service_ctx.keys.list()) == before


async def test_revoke_refuses_the_key_and_ends_its_sessions(
    admin_browser: Browser, service_ctx: ServiceContext, app: object, login: Login
) -> None:
    client, token = admin_browser
    victim = await service_ctx.keys.create("victim", scopes=["read"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="http://testserver",
    ) as other:
        await login(other, victim.key)
        answer = await client.post(f"/keys/{victim.record.id}/revoke", data={"csrf_token": token})
        assert answer.status_code == 303
        assert (await other.get("/agents")).status_code == 302
    assert (await service_ctx.keys.get(victim.record.id)).status() == "revoked"
    listing = await client.get("/keys?status=revoked")
    assert f'data-key="{victim.record.id}"' in listing.text


async def test_rotate_shows_the_new_secret_and_refuses_the_old(
    admin_browser: Browser, service_ctx: ServiceContext, app: object
) -> None:
    client, token = admin_browser
    old = await service_ctx.keys.create("rotating", scopes=["run"])
    answer = await client.post(f"/keys/{old.record.id}/rotate", data={"csrf_token": token})
    assert answer.status_code == 200
    new_secret = _secret(answer.text)
    assert new_secret != old.key
    assert (await service_ctx.keys.verify(new_secret)).id == old.record.id
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {old.key}"},
    ) as api:
        assert (await api.get("/v1/runs")).status_code == 401


async def test_revoking_your_own_key_logs_you_out(
    browser: httpx.AsyncClient, service_ctx: ServiceContext, login: Login
) -> None:
    me = await service_ctx.keys.create("me", scopes=["admin"])
    token = await login(browser, me.key)
    answer = await browser.post(f"/keys/{me.record.id}/revoke", data={"csrf_token": token})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login"
    assert (await browser.get("/keys")).status_code == 302


async def test_keys_need_admin_and_csrf(
    browser: httpx.AsyncClient, service_ctx: ServiceContext, login: Login
) -> None:
    target = await service_ctx.keys.create("target", scopes=["read"])
    runner = await service_ctx.keys.create("runner", scopes=["run"])
    token = await login(browser, runner.key)
    assert (await browser.get("/keys")).status_code == 403
    answer = await browser.post(f"/keys/{target.record.id}/revoke", data={"csrf_token": token})
    assert answer.status_code == 403
    me = await service_ctx.keys.create("boss", scopes=["admin"])
    await login(browser, me.key)
    answer = await browser.post(f"/keys/{target.record.id}/revoke", data={"csrf_token": "no"})
    assert answer.status_code == 403
    answer = await browser.post("/keys/new", data={"name": "x", "scopes": ["run"]})
    assert answer.status_code == 403
    assert (await service_ctx.keys.get(target.record.id)).status() == "active"
    missing = await browser.post("/keys/key_nope/revoke", data={"csrf_token": "no"})
    assert missing.status_code == 403  # CSRF is checked before anything is looked up


async def test_revoke_and_rotate_ask_first(
    admin_browser: Browser, service_ctx: ServiceContext
) -> None:
    client, _ = admin_browser
    key = await service_ctx.keys.create("careful", scopes=["read"])
    listing = await client.get("/keys")
    assert f'href="/keys/{key.record.id}/revoke"' in listing.text
    page = await client.get(f"/keys/{key.record.id}/revoke")
    assert page.status_code == 200
    assert "cannot be undone" in page.text
    assert f'action="/keys/{key.record.id}/revoke"' in page.text
    rotate = await client.get(f"/keys/{key.record.id}/rotate")
    assert "new secret" in rotate.text
    assert (await service_ctx.keys.get(key.record.id)).status() == "active"  # nothing done
    assert (await client.get(f"/keys/{key.record.id}/delete")).status_code == 404
    assert (await client.get("/keys/key_nope/revoke")).status_code == 404
