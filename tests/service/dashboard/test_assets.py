"""Static files come from the package (vendored htmx with its licence header), public,
cacheable, and no path leaves the static directory."""

from __future__ import annotations

import httpx
import pytest


async def test_vendored_htmx_and_the_stylesheet_are_served(browser: httpx.AsyncClient) -> None:
    htmx = await browser.get("/static/vendor/htmx.min.js")
    assert htmx.status_code == 200
    assert htmx.headers["content-type"].startswith("text/javascript")
    assert htmx.text.startswith("/*! htmx 2.")
    assert "Zero-Clause BSD" in htmx.text.splitlines()[0]
    sse = await browser.get("/static/vendor/sse.min.js")
    assert sse.status_code == 200
    assert 'defineExtension("sse"' in sse.text
    css = await browser.get("/static/app.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    again = await browser.get("/static/app.css", headers={"If-None-Match": css.headers["etag"]})
    assert again.status_code == 304


async def test_login_page_loads_no_third_party_script(browser: httpx.AsyncClient) -> None:
    page = await browser.get("/login")
    assert "https://" not in page.text
    assert "http://" not in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert page.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(
    "path",
    [
        "/static/../templates/base.html",
        "/static/%2e%2e/web.py",
        "/static/vendor/../../web.py",
        "/static/.hidden.css",
        "/static/app.py",
        "/static/missing.css",
        "/static/vendor",
    ],
)
async def test_nothing_outside_static_is_served(browser: httpx.AsyncClient, path: str) -> None:
    answer = await browser.get(path)
    assert answer.status_code == 404
    assert "import" not in answer.text
