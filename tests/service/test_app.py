from __future__ import annotations

from collections.abc import Callable

import httpx
from fastapi import FastAPI

from arbor.service.app import create_app
from arbor.service.context import ServiceContext

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
