from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import APIRouter

from arbor.core.logging import configure_logging, get_logger
from arbor.service.app import create_app
from arbor.service.context import ServiceContext, open_context

MakeHTTP = Callable[..., httpx.AsyncClient]


async def test_request_id_is_kept_when_well_formed_and_replaced_when_not(
    make_http: MakeHTTP,
) -> None:
    client = make_http()
    r = await client.get("/healthz", headers={"X-Request-ID": "trace-42.a:b"})
    assert r.headers["x-request-id"] == "trace-42.a:b"
    for hostile in ("a b", "x" * 200, "id\r\nSet-Cookie: x=1", "ä"):
        try:
            r = await client.get("/healthz", headers={"X-Request-ID": hostile})
        except (httpx.LocalProtocolError, UnicodeEncodeError):
            continue  # the client itself refuses to send it: nothing reaches the app
        assert r.headers["x-request-id"].startswith("req_")
    a = (await client.get("/healthz")).headers["x-request-id"]
    b = (await client.get("/healthz")).headers["x-request-id"]
    assert a != b


async def test_every_log_line_of_a_request_carries_its_id(
    service_ctx: ServiceContext, make_http: MakeHTTP, admin_key: str
) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    app = create_app(service_ctx)
    router = APIRouter()

    @router.get("/_log")
    async def log_twice() -> dict[str, str]:
        get_logger("arbor.test").info("first")
        logging.getLogger("some.library").warning("second")
        return {}

    app.include_router(router)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            r = await client.get("/_log", headers={"X-Request-ID": "rid-123"})
    finally:
        root = logging.getLogger()
        root.handlers = [h for h in root.handlers if not getattr(h, "_arbor", False)]
    assert r.status_code == 200
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = [line for line in lines if line["event"] in ("first", "second")]
    assert len(mine) == 2 and all(line["request_id"] == "rid-123" for line in mine)


async def test_body_over_the_limit_is_413(make_http: MakeHTTP, admin_key: str) -> None:
    client = make_http(admin_key)
    big = {"name": "x" * 2_000_000}
    r = await client.post("/v1/keys", json=big)
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 413 and "limit" in r.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(40):
            yield b"x" * 50_000

    r = await client.post(
        "/v1/keys", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["status"] == 413


async def test_validation_errors_are_422_problems_without_the_input(
    make_http: MakeHTTP, admin_key: str
) -> None:
    client = make_http(admin_key)
    secretish = "arb_" + "q" * 40
    r = await client.post("/v1/keys", json={"scopes": ["root"], "rpm": 0})
    assert r.status_code == 422
    body = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert body["status"] == 422 and len(body["errors"]) == 2
    assert sorted(e["loc"][1] for e in body["errors"]) == ["rpm", "scopes"]
    assert body["detail"].startswith("body.") and "(and 1 more)" in body["detail"]
    assert all(set(e) == {"loc", "msg", "type"} for e in body["errors"])
    r = await client.post("/v1/keys", json={"unknown_field": secretish})
    assert r.status_code == 422 and secretish not in r.text
    r = await client.post(
        "/v1/keys", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422


async def test_unknown_paths_and_methods_are_problems(make_http: MakeHTTP) -> None:
    client = make_http()
    r = await client.get("/nope")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    r = await client.delete("/healthz")
    assert r.status_code == 405 and r.json()["status"] == 405


async def test_cors_is_denied_by_default(make_http: MakeHTTP) -> None:
    preflight = {
        "Origin": "https://evil.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    r = await make_http().options("/v1/keys", headers=preflight)
    assert r.status_code >= 400
    assert "access-control-allow-origin" not in r.headers
    r = await make_http().get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize(
    "service_settings_overrides",
    [{"service": {"cors_origins": ["https://ui.example"], "max_body_bytes": 4096}}],
)
async def test_cors_allows_configured_origins_only(
    make_http: MakeHTTP, admin_key: str, service_settings_overrides: dict[str, Any]
) -> None:
    def preflight(origin: str) -> dict[str, str]:
        return {"Origin": origin, "Access-Control-Request-Method": "GET"}

    r = await make_http().options("/v1/keys", headers=preflight("https://ui.example"))
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://ui.example"
    r = await make_http().options("/v1/keys", headers=preflight("https://evil.example"))
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    r = await make_http(admin_key).post("/v1/keys", json={"name": "y" * 5000})
    assert r.status_code == 413  # the configured (smaller) body limit


async def test_an_unexpected_exception_is_a_500_problem_and_logged(
    service_ctx: ServiceContext,
) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    app = create_app(service_ctx)
    router = APIRouter()

    @router.get("/_boom")
    async def boom() -> None:
        raise RuntimeError("broken with key arb_abcdefghijkl_secretsecretsecret")

    app.include_router(router)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            r = await client.get("/_boom")
    finally:
        root = logging.getLogger()
        root.handlers = [h for h in root.handlers if not getattr(h, "_arbor", False)]
    assert r.status_code == 500
    assert r.json() == {
        "type": "urn:arbor:problem:internal",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "internal error",
        "request_id": r.headers["x-request-id"],
    }
    logged = stream.getvalue()
    assert "http.unhandled_error" in logged and "RuntimeError" in logged
    assert "secretsecretsecret" not in logged
    metrics = service_ctx.metrics.render().decode()
    assert 'route="/_boom",status="500"' in metrics


async def test_the_lifespan_opens_and_closes_its_own_context(tmp_path: Any) -> None:
    from arbor.core.config import load_settings

    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'own.db'}", default_model="test:x"
    )
    app = create_app(settings=settings)
    assert app.state.ctx is None
    async with app.router.lifespan_context(app):
        assert isinstance(app.state.ctx, ServiceContext)
        ctx = app.state.ctx
    assert app.state.ctx is None and ctx._closed
    with pytest.raises(ValueError, match="either"):
        other = await open_context(settings)
        try:
            create_app(other, settings=load_settings())
        finally:
            await other.aclose()
