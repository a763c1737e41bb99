from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from arbor.core.config import load_settings
from arbor.core.errors import ConfigError
from arbor.service.app import create_app
from arbor.service.context import ServiceContext, open_context

MakeHTTP = Callable[..., httpx.AsyncClient]


async def test_health_is_public_and_carries_a_request_id(make_http: MakeHTTP) -> None:
    async with make_http() as client:
        r = await client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert r.headers["x-request-id"].startswith("req_")


async def test_admin_http_client_lists_keys(http: httpx.AsyncClient) -> None:
    r = await http.get("/v1/keys")
    assert r.status_code == 200
    assert [k["name"] for k in r.json()] == ["test-admin"]


def test_two_apps_in_one_process(service_ctx: ServiceContext, app: FastAPI) -> None:
    other = create_app(service_ctx)
    assert other is not app and other.state.ctx is app.state.ctx


async def test_missing_key_is_a_401_problem_and_metrics_use_route_templates(
    make_http: MakeHTTP, http: httpx.AsyncClient
) -> None:
    async with make_http() as anon:
        r = await anon.get("/v1/keys/key_nope")
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"] == "Bearer"
        body = r.json()
        assert body["status"] == 401 and body["request_id"] == r.headers["x-request-id"]
        assert (await http.get("/v1/keys/key_nope")).status_code == 404
        metrics = (await anon.get("/metrics")).text
    assert 'route="/v1/keys/{key_id}",status="401"' in metrics
    assert 'route="/v1/keys/{key_id}",status="404"' in metrics


async def test_the_admin_key_from_settings_is_bootstrapped(tmp_path: Path) -> None:
    admin = "bootstrap-admin-key-for-tests-0123456789abcdef"
    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'boot.db'}",
        default_model="test:x",
        admin_key=admin,
    )
    ctx = await open_context(settings)
    try:
        principal = await ctx.auth.authenticate({"authorization": f"Bearer {admin}"})
        assert principal.is_admin and principal.name == "bootstrap-admin"
        stored = " ".join(repr(k) for k in await ctx.keys.list())
        assert admin not in stored
    finally:
        await ctx.aclose()
    with pytest.raises(ConfigError, match="ARBOR_ADMIN_KEY") as info:
        await open_context(settings.model_copy(update={"admin_key": SecretStr("weak")}))
    assert "weak" not in str(info.value)


async def test_openapi_documents_problem_json_errors(make_http: MakeHTTP) -> None:
    async with make_http() as client:
        spec = (await client.get("/openapi.json")).json()
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    create = spec["paths"]["/v1/keys"]["post"]
    assert create["security"] == [{"HTTPBearer": []}]
    for status in ("401", "403", "422", "429", "default"):
        content = create["responses"][status]["content"]
        assert list(content) == ["application/problem+json"], status
        assert content["application/problem+json"]["schema"]["required"] == [
            "type",
            "title",
            "status",
            "detail",
            "request_id",
        ]
