from __future__ import annotations

import io
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from arbor.core.clock import FakeClock
from arbor.core.errors import AuthError, BudgetExceededError
from arbor.core.logging import configure_logging
from arbor.llm.ratelimit import InMemoryRateLimiter
from arbor.llm.types import CallContext, ChatRequest, Message
from arbor.service.auth import Principal, RequestRateLimiter, presented_key
from arbor.service.context import ServiceContext
from arbor.service.errors import RequestRateLimitedError
from arbor.store import KeyRepository

MakeHTTP = Callable[..., httpx.AsyncClient]

# Values an attacker might put in the Authorization header. httpx refuses to *send* some
# bytes (NUL, newlines), so those go in as raw ASGI headers below.
HOSTILE = [
    "Bearer ' OR '1'='1",
    'Bearer arb_"; DROP TABLE api_keys; --',
    "Bearer arb_aaaaaaaaaaaa_' UNION SELECT hash FROM api_keys --",
    "Bearer " + "A" * 16_384,
    "Bearer arb_" + "z" * 12 + "_" + "x" * 43,
    "Basic dXNlcjpwYXNz",
    "Bearer",
    "bearer    ",
    "Token abc",
]


def _protected_routes(app: FastAPI) -> list[tuple[str, str]]:
    public = {"/healthz", "/readyz", "/metrics"}
    out = []
    for path, operations in app.openapi()["paths"].items():
        if path not in public:
            concrete = path.replace("{", "").replace("}", "")  # any value will do
            out += [(method.upper(), concrete) for method in operations]
    return out


async def test_every_protected_route_needs_a_key(app: FastAPI, make_http: MakeHTTP) -> None:
    """Every route in the OpenAPI schema (whoever added it) except the public three."""
    client = make_http()
    routes = _protected_routes(app)
    assert ("POST", "/v1/keys") in routes and len(routes) >= 7
    for method, path in routes:
        r = await client.request(method, path, json={})
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert r.headers["content-type"] in ("application/problem+json", "application/json")


@pytest.mark.parametrize("value", HOSTILE)
async def test_hostile_authorization_values_get_401_and_are_never_echoed(
    make_http: MakeHTTP, value: str
) -> None:
    r = await make_http(Authorization=value).get("/v1/keys")
    assert r.status_code == 401
    body = r.json()
    assert body["status"] == 401 and body["type"] == "urn:arbor:problem:auth"
    secret_part = value.partition(" ")[2].strip()
    if len(secret_part) >= 4:
        assert secret_part not in r.text and secret_part[:20] not in r.text


async def test_raw_hostile_bytes_in_headers_get_401(app: FastAPI) -> None:
    raw = [
        b"Bearer arb_abc\x00def",
        b"Bearer \xff\xfe\xfd",
        "Bearer arb_ключ".encode(),
        b"Bearer " + b"\x00" * 64,
    ]
    for value in raw:
        for header in (b"authorization", b"x-api-key"):
            status, body = await _raw_request(app, [(header, value)])
            assert status == 401, (header, value)
            assert value not in body and b"\x00" not in body


async def _raw_request(app: object, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """Send a request with arbitrary header bytes straight to the ASGI app."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v1/keys",
        "raw_path": b"/v1/keys",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await app(scope, receive, send)  # type: ignore[operator]
    status = int(sent[0]["status"])  # type: ignore[call-overload]
    body = b"".join(m.get("body", b"") for m in sent[1:])  # type: ignore[misc]
    return status, body


async def test_x_api_key_header_works_too(make_http: MakeHTTP, admin_key: str) -> None:
    r = await make_http(x_api_key=admin_key).get("/v1/keys")
    assert r.status_code == 200


async def test_revoked_rotated_and_expired_keys_are_refused_on_the_next_request(
    make_http: MakeHTTP, http: httpx.AsyncClient
) -> None:
    created = (await http.post("/v1/keys", json={"name": "a", "scopes": ["admin"]})).json()
    user = make_http(created["key"])
    assert (await user.get("/v1/keys")).status_code == 200
    rotated = (await http.post(f"/v1/keys/{created['id']}/rotate")).json()
    assert rotated["id"] == created["id"] and rotated["key"] != created["key"]
    r = await user.get("/v1/keys")
    assert r.status_code == 401 and created["key"] not in r.text
    user2 = make_http(rotated["key"])
    assert (await user2.get("/v1/keys")).status_code == 200
    assert (await http.post(f"/v1/keys/{created['id']}/revoke")).json()["status"] == "revoked"
    r = await user2.get("/v1/keys")
    assert r.status_code == 401 and "revoked" in r.json()["detail"]

    expiring = (await http.post("/v1/keys", json={"scopes": ["read"], "expires_in": 3600})).json()
    reader = make_http(expiring["key"])
    assert (await reader.get("/metrics")).status_code == 200
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    r = await http.patch(f"/v1/keys/{expiring['id']}", json={"expires_at": past})
    assert r.json()["status"] == "expired"
    r = await reader.get("/v1/keys/" + expiring["id"])
    assert r.status_code == 401 and "expired" in r.json()["detail"]


async def test_scopes_nest_and_a_missing_scope_is_403(
    make_http: MakeHTTP, service_ctx: ServiceContext
) -> None:
    read = (await service_ctx.keys.create("r", scopes=["read"])).key
    run = (await service_ctx.keys.create("x", scopes=["run"])).key
    for key in (read, run):
        r = await make_http(key).get("/v1/keys")
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"
        assert "admin" in r.json()["detail"] and "www-authenticate" not in r.headers
    ctx = service_ctx
    principal = await ctx.auth.authenticate({"authorization": f"Bearer {run}"})
    assert principal.scopes == {"read", "run"} and not principal.is_admin
    principal.require("read")
    principal.require("run")


async def test_per_key_rpm_answers_429_with_retry_after(
    make_http: MakeHTTP, service_ctx: ServiceContext
) -> None:
    key = (await service_ctx.keys.create("slow", scopes=["admin"], rpm=3)).key
    client = make_http(key)
    for _ in range(3):
        assert (await client.get("/v1/keys")).status_code == 200
    r = await client.get("/v1/keys")
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.json()["type"] == "urn:arbor:problem:rate_limited"


async def test_request_rate_limiter_slides() -> None:
    clock = FakeClock()
    limiter = RequestRateLimiter(InMemoryRateLimiter(clock))
    await limiter.hit("k", 2)
    clock.advance(10)
    await limiter.hit("k", 2)
    with pytest.raises(RequestRateLimitedError) as info:
        await limiter.hit("k", 2)
    assert info.value.retry_after == pytest.approx(50.0)
    clock.advance(50)
    await limiter.hit("k", 2)  # the first request left the window
    await limiter.hit("other", 1)  # keys are independent


async def test_key_limits_reach_the_llm_layer(service_ctx: ServiceContext) -> None:
    new = await service_ctx.keys.create("metered", rpm=100, tpm=5000, budget_usd=0.0)
    await service_ctx.auth.authenticate({"x-api-key": new.key})
    client = service_ctx.client
    assert client.key_limits("test:echo", new.record.id)[0][1].tpm == 5000
    assert client.budgets.limit(f"key:{new.record.id}") == 0.0
    request = ChatRequest(
        model="test:echo",
        messages=[Message.user("hi")],
        context=CallContext(key_id=new.record.id),
    )
    await client.complete(request)  # free (the double has no price): within budget
    # The pipeline reserves each keyed call's estimate in the "key:<id>" scope: refused now.
    with pytest.raises(BudgetExceededError, match=new.record.id):
        client.budgets.reserve([f"key:{new.record.id}"], 0.01)
    await service_ctx.keys.update(new.record.id, clear=["rpm", "tpm", "budget_usd"])
    await service_ctx.auth.authenticate({"x-api-key": new.key})
    assert client.key_limits("test:echo", new.record.id) == []
    assert client.budgets.limit(f"key:{new.record.id}") is None


def test_presented_key_parsing() -> None:
    assert presented_key({"authorization": "Bearer  arb_x "}) == "arb_x"
    assert presented_key({"authorization": "bearer arb_x"}) == "arb_x"
    assert presented_key({"x-api-key": "arb_y"}) == "arb_y"
    for headers in ({}, {"authorization": "Basic x"}, {"x-api-key": "  "}):
        with pytest.raises(AuthError, match=r"API key|Authorization"):
            presented_key(headers)
    p = Principal("key_1", "", frozenset({"read"}))
    assert p.display_name == "key_1"


async def test_keys_never_reach_the_logs(
    make_http: MakeHTTP, http: httpx.AsyncClient, admin_key: str
) -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    try:
        created = (await http.post("/v1/keys", json={"name": "logged"})).json()
        await make_http(Authorization="Bearer " + created["key"] + "x").get("/v1/keys")
        logging.getLogger("uvicorn.access").info('"GET /v1/keys" key=%s', created["key"])
        logging.getLogger("arbor").warning("saw %s and %s", admin_key, created["key"])
    finally:
        logging.getLogger().handlers = [
            h for h in logging.getLogger().handlers if not getattr(h, "_arbor", False)
        ]
    text = stream.getvalue()
    assert "saw" in text
    assert admin_key not in text and created["key"] not in text
    assert created["key"].split("_", 2)[2] not in text


async def test_changes_from_another_process_apply_within_the_cache_time(
    make_http: MakeHTTP, service_ctx: ServiceContext
) -> None:
    """Another process's repository (the ``arbor keys`` CLI) does not notify this one."""
    other = KeyRepository(service_ctx.db)
    new = await other.create("cli-made", scopes=["admin"])
    client = make_http(new.key)
    # The cache's time is a test clock: the entry expires when the test says, not when a
    # loaded machine gets round to the second request.
    clock = FakeClock()
    service_ctx.auth._ttl = 30
    service_ctx.auth._clock = clock.monotonic
    assert (await client.get("/v1/keys")).status_code == 200
    await other.revoke(new.record.id)
    clock.advance(29)
    assert (await client.get("/v1/keys")).status_code == 200  # still trusted from the cache
    clock.advance(2)
    r = await client.get("/v1/keys")
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


@pytest.mark.parametrize("service_settings_overrides", [{"service": {"key_cache_seconds": 0}}])
async def test_without_a_cache_every_request_asks_the_store(
    make_http: MakeHTTP, service_ctx: ServiceContext, service_settings_overrides: dict[str, Any]
) -> None:
    other = KeyRepository(service_ctx.db)
    new = await other.create("cli-made", scopes=["admin"])
    client = make_http(new.key)
    assert (await client.get("/v1/keys")).status_code == 200
    await other.revoke(new.record.id)
    assert (await client.get("/v1/keys")).status_code == 401


_ONE_CENT_A_TOKEN = {"input": 1e4, "output": 1e4}  # USD per million tokens


@pytest.mark.parametrize(
    "service_settings_overrides",
    [{"llm": {"cache": {"enabled": False}, "prices": {"test:echo": _ONE_CENT_A_TOKEN}}}],
)
async def test_a_keys_budget_stops_its_chat_calls(
    make_http: MakeHTTP, service_ctx: ServiceContext, service_settings_overrides: dict[str, Any]
) -> None:
    """End to end: budget registered by auth, enforced by the llm layer on the gateway call."""
    new = await service_ctx.keys.create("metered", scopes=["run"], budget_usd=1.0)
    client = make_http(new.key)
    body = {
        "model": "test:echo",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
    }
    statuses = []
    for _ in range(30):  # each call costs ~$0.1 (about 10 tokens at $0.01)
        r = await client.post("/v1/chat/completions", json=body)
        statuses.append(r.status_code)
        if r.status_code != 200:
            break
    assert statuses[0] == 200 and statuses[-1] == 402, statuses
    assert r.json()["error"]["code"] == "budget_exceeded"
    assert 3 <= len(statuses) <= 20
    spent = service_ctx.client.budgets.spent(f"key:{new.record.id}")
    assert 0.5 < spent <= 1.0


async def test_a_lookup_racing_a_revoke_is_not_cached(service_ctx: ServiceContext) -> None:
    new = await service_ctx.keys.create("racy", scopes=["read"])
    auth = service_ctx.auth
    auth._ttl = 60.0  # a cache long enough that a wrongly cached record would be used
    original = service_ctx.keys.verify

    async def verify_then_revoke(key: str) -> Any:
        record = await original(key)  # read before the revoke commits...
        await service_ctx.keys.revoke(new.record.id)  # ...which lands before we cache
        return record

    service_ctx.keys.verify = verify_then_revoke  # type: ignore[method-assign]
    try:
        await auth.authenticate({"x-api-key": new.key})  # was valid when it was read
    finally:
        service_ctx.keys.verify = original  # type: ignore[method-assign]
    with pytest.raises(AuthError, match="revoked"):
        await auth.authenticate({"x-api-key": new.key})
