from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from arbor.service.context import ServiceContext
from arbor.store import Database

MakeHTTP = Callable[..., httpx.AsyncClient]


async def test_healthz_and_readyz(make_http: MakeHTTP) -> None:
    client = make_http()
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"store": "ok", "model": "ok"}}


@pytest.mark.parametrize(
    "service_settings_overrides", [{"default_model": "local:/nowhere/model.gguf"}]
)
async def test_readyz_fails_when_the_default_model_cannot_be_served(
    make_http: MakeHTTP, service_settings_overrides: dict[str, Any]
) -> None:
    r = await make_http().get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert body["checks"]["store"] == "ok"
    assert "local:/nowhere/model.gguf" in body["checks"]["model"]
    assert body["detail"].startswith("not ready: model:")


async def test_readyz_reports_an_unreachable_store(
    make_http: MakeHTTP, service_ctx: ServiceContext
) -> None:
    working = service_ctx.db
    service_ctx.db = Database("postgresql+asyncpg://arbor:pw@127.0.0.1:1/nothing")  # refused
    try:
        r = await make_http().get("/readyz")
    finally:
        await service_ctx.db.dispose()
        service_ctx.db = working
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert checks["model"] == "ok" and checks["store"].startswith("unreachable (")
    assert "pw" not in r.text


async def test_metrics_are_public_by_default(make_http: MakeHTTP) -> None:
    client = make_http()
    await client.get("/healthz")
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'arbor_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in r.text
    assert "arbor_http_request_duration_seconds_bucket" in r.text


@pytest.mark.parametrize("service_settings_overrides", [{"service": {"metrics_require_key": True}}])
async def test_metrics_can_require_a_key(
    make_http: MakeHTTP, service_ctx: ServiceContext, service_settings_overrides: dict[str, Any]
) -> None:
    assert (await make_http().get("/metrics")).status_code == 401
    reader = (await service_ctx.keys.create("prom", scopes=["read"])).key
    assert (await make_http(reader).get("/metrics")).status_code == 200


@pytest.mark.parametrize("service_settings_overrides", [{"default_model": "local:smollm2"}])
async def test_readyz_checks_the_bundled_gguf_without_loading_it(
    make_http: MakeHTTP, service_ctx: ServiceContext, service_settings_overrides: dict[str, Any]
) -> None:
    r = await make_http().get("/readyz")
    assert r.status_code == 200, r.text
    model = service_ctx.client.model("local:smollm2")
    assert model.path.is_file()  # type: ignore[attr-defined]
    assert model.loaded is False  # type: ignore[attr-defined]
