"""Logging in and out: the session cookie's flags, no key in the cookie or the page, wrong
keys and forged forms refused, every page behind the session, ``next`` kept on site."""

from __future__ import annotations

import httpx
import pytest
from _pages import Login, login_token_of
from fastapi import FastAPI

from arbor.service.context import ServiceContext
from arbor.service.dashboard.login import safe_next

PAGES = ["/", "/overview/panel", "/agents", "/agents/new", "/runs", "/runs/new", "/keys", "/usage"]


@pytest.mark.parametrize("path", PAGES)
async def test_every_page_redirects_to_login_without_a_session(
    browser: httpx.AsyncClient, path: str
) -> None:
    answer = await browser.get(path)
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith("/login")
    if path != "/":
        assert f"next={path}" in location


async def test_htmx_requests_get_hx_redirect_instead_of_a_login_page(
    browser: httpx.AsyncClient,
) -> None:
    answer = await browser.get("/overview/panel", headers={"HX-Request": "true"})
    assert answer.status_code == 401
    assert answer.headers["hx-redirect"].startswith("/login")


async def test_login_sets_a_strict_httponly_cookie_without_the_key(
    browser: httpx.AsyncClient, admin_key: str
) -> None:
    form = await browser.get("/login?next=/runs")
    assert form.status_code == 200
    assert 'name="api_key"' in form.text
    answer = await browser.post(
        "/login",
        data={"api_key": admin_key, "login_token": login_token_of(form.text), "next": "/runs"},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/runs"
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith("arbor_session=")
    )
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags
    assert "samesite=strict" in flags
    assert "secure" not in flags  # served over http here
    assert admin_key not in cookie
    assert admin_key[4:20] not in cookie
    page = await browser.get("/runs")
    assert page.status_code == 200
    assert admin_key not in page.text


async def test_the_cookie_is_secure_over_https(app: object, admin_key: str) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="https://testserver",
    ) as client:
        form = await client.get("/login")
        answer = await client.post(
            "/login", data={"api_key": admin_key, "login_token": login_token_of(form.text)}
        )
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith("arbor_session=")
    )
    assert "secure" in [p.strip().lower() for p in cookie.split(";")]


async def test_a_wrong_key_is_refused_without_echoing_it(browser: httpx.AsyncClient) -> None:
    form = await browser.get("/login")
    wrong = "arb_wrongwrongwrong_<script>alert(1)</script>"
    answer = await browser.post(
        "/login", data={"api_key": wrong, "login_token": login_token_of(form.text)}
    )
    assert answer.status_code == 401
    assert "not valid" in answer.text
    assert "wrongwrong" not in answer.text
    assert "<script>alert" not in answer.text
    assert "arbor_session=" not in answer.headers.get("set-cookie", "")
    assert (await browser.get("/agents")).status_code == 302


async def test_a_login_post_without_the_forms_nonce_is_refused(
    browser: httpx.AsyncClient, admin_key: str
) -> None:
    # A cross-site form cannot read our nonce: neither a guessed one nor none passes.
    answer = await browser.post("/login", data={"api_key": admin_key, "login_token": "guess"})
    assert answer.status_code == 403
    assert "arbor_session=" not in answer.headers.get("set-cookie", "")


async def test_logout_ends_the_session_even_for_a_copied_cookie(
    browser: httpx.AsyncClient, admin_key: str, login: Login
) -> None:
    token = await login(browser, admin_key)
    copied = browser.cookies.get("arbor_session")
    assert copied
    answer = await browser.post("/logout", data={"csrf_token": token})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login"
    browser.cookies.set("arbor_session", copied)
    assert (await browser.get("/agents")).status_code == 302


async def test_a_forged_session_cookie_is_refused(
    browser: httpx.AsyncClient, admin_key: str, login: Login
) -> None:
    await login(browser, admin_key)
    real = browser.cookies.get("arbor_session")
    assert real is not None
    sid, _, mac = real.rpartition(".")
    browser.cookies.set("arbor_session", f"{sid}x.{mac}")
    assert (await browser.get("/agents")).status_code == 302
    browser.cookies.set("arbor_session", "not-a-session")
    assert (await browser.get("/agents")).status_code == 302


async def test_revoking_or_rotating_the_key_ends_its_sessions(
    browser: httpx.AsyncClient, service_ctx: ServiceContext, login: Login
) -> None:
    new = await service_ctx.keys.create("person", scopes=["read"])
    await login(browser, new.key)
    await service_ctx.keys.rotate(new.record.id)
    assert (await browser.get("/agents")).status_code == 302
    rotated = await service_ctx.keys.get(new.record.id)
    assert rotated.status() == "active"
    other = await service_ctx.keys.create("other", scopes=["read"])
    await login(browser, other.key)
    await service_ctx.keys.revoke(other.record.id)
    assert (await browser.get("/agents")).status_code == 302


async def test_an_already_logged_in_visit_to_login_goes_on(
    browser: httpx.AsyncClient, admin_key: str, login: Login
) -> None:
    await login(browser, admin_key)
    answer = await browser.get("/login?next=/keys")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/keys"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/runs?status=failed", "/runs?status=failed"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("/ok\r\nSet-Cookie: x=1", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_next_stays_on_this_site(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


async def test_repeated_failures_make_the_client_wait(
    browser: httpx.AsyncClient, admin_key: str
) -> None:
    for _ in range(10):
        form = await browser.get("/login")
        answer = await browser.post(
            "/login", data={"api_key": "arb_guess_x", "login_token": login_token_of(form.text)}
        )
        assert answer.status_code == 401
    form = await browser.get("/login")
    answer = await browser.post(
        "/login", data={"api_key": admin_key, "login_token": login_token_of(form.text)}
    )
    assert answer.status_code == 429  # even the right key waits: guessing gains nothing
    assert int(answer.headers["retry-after"]) >= 1
    assert "arbor_session=" not in answer.headers.get("set-cookie", "")


def test_dashboard_routes_stay_out_of_the_openapi_schema(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    assert paths  # the API is there
    assert not [p for p in paths if not p.startswith(("/v1", "/healthz", "/readyz", "/metrics"))]


async def test_an_unexpected_failure_is_a_plain_error_page(
    admin_browser: tuple[httpx.AsyncClient, str], service_ctx: ServiceContext
) -> None:
    client, _ = admin_browser
    runs = service_ctx.runs
    service_ctx.runs = None  # a wiring bug: the page must not show a traceback
    try:
        answer = await client.get("/runs")
    finally:
        service_ctx.runs = runs
    assert answer.status_code == 500
    assert "text/html" in answer.headers["content-type"]
    assert "internal error" in answer.text
    assert "Traceback" not in answer.text and "RunManager" not in answer.text
