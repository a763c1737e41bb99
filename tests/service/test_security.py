"""Security properties of the service beyond the per-route tests: secrets stay out of every
response, header and log line even when a provider echoes them; a key's budget stops its
calls through the llm layer; revocation applies on the next request even with a key cache;
agent definitions cannot carry endpoints or credentials; SQL- and path-shaped values are
inert; oversized headers are refused; the key is checked before anything else is said.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from arbor.core.errors import ProviderHTTPError
from arbor.core.logging import configure_logging
from arbor.llm.model import Model
from arbor.llm.types import ChatRequest
from arbor.service.context import ServiceContext
from arbor.testing import FunctionModel
from arbor.testing.mock_upstream import MockConfig, MockUpstream

MakeHTTP = Callable[..., httpx.AsyncClient]

PROVIDER_KEY = "sk-proj-provider-secret-0123456789abcdef"
SESSION_SECRET = "session-signing-secret-0123456789abcdef"
SK_LIKE = "sk-live-something-else-9876543210"


@pytest.fixture
def service_settings_overrides() -> dict[str, Any]:
    return {
        "openai_api_key": PROVIDER_KEY,
        "service": {"session_secret": SESSION_SECRET},
        "llm": {
            "cache": {"enabled": False},
            "retry": {"max_attempts": 1},
            # 2 USD per million tokens: a short chat call costs a few hundred-thousandths.
            "prices": {"test:echo": {"input": 2.0, "output": 2.0}},
        },
    }


@pytest.fixture
def leaked() -> list[str]:
    """Secrets the leaky double puts in its error (the caller's API key is added by tests)."""
    return [PROVIDER_KEY, SESSION_SECRET, SK_LIKE]


@pytest.fixture
def service_models(leaked: list[str]) -> dict[str, Model]:
    def echo(request: ChatRequest) -> str:
        return "echo: " + (request.messages[-1].content or "")

    def leaky(request: ChatRequest) -> str:
        status = int((request.messages[-1].content or "401").split()[-1])
        secrets = " ".join(leaked)
        raise ProviderHTTPError(
            f"upstream {status}: invalid key {secrets}; Authorization: Bearer {leaked[-1]}",
            status_code=status,
            body=json.dumps({"error": {"message": f"bad key {secrets}", "api_key": secrets}}),
            provider="test",
            model="leaky",
        )

    return {
        "test:echo": FunctionModel(echo, name="echo"),
        "test:leaky": FunctionModel(leaky, name="leaky"),
    }


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    yield stream
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not getattr(h, "_arbor", False)]


def _everything(r: httpx.Response) -> str:
    return r.text + "\n" + "\n".join(f"{k}: {v}" for k, v in r.headers.items())


# ---- secrets --------------------------------------------------------------------------
@pytest.mark.parametrize("status", [400, 401, 404, 422, 500])
async def test_a_provider_error_echoing_keys_leaks_none_of_them(
    make_http: MakeHTTP,
    service_ctx: ServiceContext,
    leaked: list[str],
    logs: io.StringIO,
    status: int,
) -> None:
    key = (await service_ctx.keys.create("caller", scopes=["run"])).key
    leaked.append(key)  # the double echoes the caller's own key too
    client = make_http(key)
    seen = []
    for stream in (False, True):
        body = {
            "model": "test:leaky",
            "messages": [{"role": "user", "content": f"fail with {status}"}],
            "stream": stream,
        }
        r = await client.post("/v1/chat/completions", json=body)
        assert 400 <= r.status_code < 600 and r.status_code != 500, r.text
        assert r.json()["error"]["message"]  # still says something useful
        seen.append(_everything(r))
    r = await client.post("/v1/embeddings", json={"model": "test:leaky", "input": "x"})
    seen.append(_everything(r))
    text = "\n".join(seen) + logs.getvalue()
    for secret in leaked:
        assert secret not in text, secret
        assert secret[-16:] not in text, secret  # not even a tail of one


async def test_an_error_message_about_the_header_format_stays_readable(
    make_http: MakeHTTP,
) -> None:
    r = await make_http().get("/v1/keys")
    assert r.status_code == 401
    assert r.json()["detail"] == "missing API key: send 'Authorization: Bearer <API key>'"


# ---- budgets --------------------------------------------------------------------------
async def test_a_tiny_key_budget_is_spent_then_refused_402(
    make_http: MakeHTTP, service_ctx: ServiceContext
) -> None:
    budget = 0.0001
    new = await service_ctx.keys.create("metered", scopes=["run"], budget_usd=budget)
    client = make_http(new.key)
    body = {"model": "test:echo", "messages": [{"role": "user", "content": "hi"}]}
    statuses = []
    for _ in range(40):
        r = await client.post("/v1/chat/completions", json={**body, "max_tokens": 5})
        statuses.append(r.status_code)
        if r.status_code != 200:
            break
    assert statuses[0] == 200 and statuses[-1] == 402, statuses
    assert r.json()["error"]["code"] == "budget_exceeded"
    spent = service_ctx.client.budgets.spent(f"key:{new.record.id}")
    assert 0 < spent <= budget
    # Refused from then on, streamed or not; another key is not affected.
    r = await client.post("/v1/chat/completions", json={**body, "stream": True})
    assert r.status_code == 402
    other = (await service_ctx.keys.create("other", scopes=["run"])).key
    assert (await make_http(other).post("/v1/chat/completions", json=body)).status_code == 200
    sink = service_ctx.client.usage_sink
    assert sink is not None
    await sink.flush()  # usage rows are written in batches
    usage = await make_http(new.key).get("/v1/usage", params={"group_by": "key"})
    assert usage.json()["totals"]["cost_usd"] == pytest.approx(spent, rel=1e-6)


# ---- revocation -----------------------------------------------------------------------
@pytest.mark.parametrize("service_settings_overrides", [{"service": {"key_cache_seconds": 30}}])
async def test_revoked_key_is_refused_next_request_despite_the_key_cache(
    make_http: MakeHTTP,
    http: httpx.AsyncClient,
    service_ctx: ServiceContext,
    service_settings_overrides: dict[str, Any],
) -> None:
    created = (await http.post("/v1/keys", json={"name": "soon-gone"})).json()
    chat = {"model": "test:echo", "messages": [{"role": "user", "content": "hi"}]}
    for header in ({"Authorization": f"Bearer {created['key']}"}, {"x-api-key": created["key"]}):
        client = make_http(**{k.replace("-", "_"): v for k, v in header.items()})
        assert (await client.post("/v1/chat/completions", json=chat)).status_code == 200
    assert (await http.post(f"/v1/keys/{created['id']}/revoke")).status_code == 200
    for header in ({"Authorization": f"Bearer {created['key']}"}, {"x-api-key": created["key"]}):
        client = make_http(**{k.replace("-", "_"): v for k, v in header.items()})
        r = await client.post("/v1/chat/completions", json=chat)
        assert r.status_code == 401 and created["key"] not in _everything(r)
        assert (await client.get("/v1/models")).status_code == 401


# ---- no endpoint or credential from a request ------------------------------------------
@pytest.mark.parametrize(
    "field", ["api_base", "base_url", "api_key", "headers", "provider", "openai_api_key"]
)
async def test_agent_definitions_cannot_carry_endpoints_or_credentials(
    http: httpx.AsyncClient, field: str
) -> None:
    value = "http://169.254.169.254/latest" if "base" in field else SK_LIKE
    r = await http.post("/v1/agents", json={"name": "sneaky", "instructions": "x", field: value})
    assert r.status_code == 422, r.text
    assert value not in r.text
    r = await http.post("/v1/agents", json={"name": "plain", "instructions": "x"})
    assert r.status_code == 201
    r = await http.patch("/v1/agents/plain", json={field: value})
    assert r.status_code == 422 and value not in r.text


async def test_a_run_cannot_point_its_model_at_a_url(
    http: httpx.AsyncClient, service_ctx: ServiceContext
) -> None:
    async with MockUpstream(MockConfig(port=0)) as evil:
        body = {"workflow": "review-loop", "input": {"task": "Write add(a, b)."}}
        r = await http.post("/v1/runs", json={**body, "api_base": evil.url})
        assert r.status_code == 422 and evil.url not in r.text
        for model in (evil.url, f"{evil.origin}/v1", f"openai:{evil.url}"):
            r = await http.post("/v1/runs", json={**body, "model": model})
            if r.status_code == 201:  # accepted as an id: it fails without reaching anything
                assert service_ctx.runs is not None
                run = await service_ctx.runs.wait(r.json()["id"], timeout=10)
                assert run.status == "failed", run.status
            else:
                assert r.status_code == 422, r.text
        assert evil.stats.requests == 0


# ---- SQL- and path-shaped values ---------------------------------------------------------
SQLISH = [
    "x' OR '1'='1",
    "x'; DROP TABLE api_keys; --",
    '" UNION SELECT hash FROM api_keys --',
    "1; DELETE FROM agents",
]


async def test_sql_shaped_ids_names_and_filters_are_inert(
    http: httpx.AsyncClient, service_ctx: ServiceContext
) -> None:
    assert (await http.post("/v1/agents", json={"name": "keeper", "instructions": "x"})).is_success
    keys_before = len(await service_ctx.keys.list())
    for value in SQLISH:
        for path in ("/v1/agents/{}", "/v1/keys/{}", "/v1/runs/{}", "/v1/runs/{}/events"):
            r = await http.get(path.format(value))
            assert r.status_code == 404, (path, value, r.status_code)
        r = await http.post("/v1/agents", json={"name": value, "instructions": "x"})
        assert r.status_code == 422
        r = await http.post("/v1/keys", json={"name": value})
        assert r.status_code == 201 and r.json()["name"] == value  # stored as plain text
        r = await http.get("/v1/runs", params={"workflow": value})
        assert r.status_code == 200 and r.json()["items"] == []
        r = await http.get("/v1/runs", params={"status": value})
        assert r.status_code == 422
        r = await http.get("/v1/usage", params={"key_id": value, "group_by": "key"})
        assert r.status_code == 200 and r.json()["totals"]["requests"] == 0
        r = await make_sql_probe(http, value)
        assert r.status_code in (400, 404)
    names = [a["name"] for a in (await http.get("/v1/agents")).json()["items"]]
    assert names == ["keeper"]
    assert len(await service_ctx.keys.list()) == keys_before + len(SQLISH)


async def make_sql_probe(http: httpx.AsyncClient, value: str) -> httpx.Response:
    """An SQL-shaped model id on the gateway."""
    body = {"model": f"agent:{value}", "messages": [{"role": "user", "content": "hi"}]}
    return await http.post("/v1/chat/completions", json=body)


TRAVERSALS = [
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e/%2e%2e/pyproject.toml",
    "....//....//etc/passwd",
]


async def test_path_traversal_in_ids_reaches_no_file(
    http: httpx.AsyncClient, make_http: MakeHTTP
) -> None:
    anon = make_http()
    for value in TRAVERSALS:
        for path in (
            "/v1/agents/",
            "/v1/keys/",
            "/v1/runs/",
            "/v1/models/",
            "/v1/models/local:",
            "/static/",
        ):
            for client in (http, anon):
                r = await client.get(path + value)
                assert r.status_code in (401, 404), (path, value, r.status_code)
                assert "root:" not in r.text and "[project]" not in r.text
        body = {"model": f"local:{value}", "messages": [{"role": "user", "content": "hi"}]}
        r = await http.post("/v1/chat/completions", json=body)
        assert r.status_code == 404 and "root:" not in r.text


# ---- sizes ------------------------------------------------------------------------------
async def test_oversized_headers_are_431_not_500(make_http: MakeHTTP, admin_key: str) -> None:
    client = make_http(admin_key)
    assert (await client.get("/v1/keys", headers={"X-Filler": "a" * 8_000})).status_code == 200
    for headers in (
        {"X-Filler": "a" * 40_000},
        {f"X-Many-{i}": "b" * 400 for i in range(100)},
        {"Cookie": "arbor_session=" + "c" * 40_000},
    ):
        r = await client.get("/v1/keys", headers=headers)
        assert r.status_code == 431, r.status_code
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 431 and r.headers["x-request-id"]
    r = await make_http().get("/healthz", headers={"X-Filler": "a" * 40_000})
    assert r.status_code == 431  # public routes too: the limit is before routing


async def test_a_malformed_body_without_a_key_is_401_not_a_parse_error(
    make_http: MakeHTTP, service_ctx: ServiceContext
) -> None:
    """FastAPI parses the body before running dependencies; the key must still come first."""
    anon = make_http()
    reader = make_http((await service_ctx.keys.create("r", scopes=["read"])).key)
    broken = {"content": b"{not json", "headers": {"content-type": "application/json"}}
    for path in ("/v1/keys", "/v1/agents", "/v1/runs", "/v1/chat/completions", "/v1/embeddings"):
        assert (await anon.post(path, **broken)).status_code == 401, path  # type: ignore[arg-type]
        r = await reader.post(path, **broken)  # type: ignore[arg-type]
        assert r.status_code == 403, (path, r.status_code)


# ---- CORS -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "service_settings_overrides", [{"service": {"cors_origins": ["https://ui.example"]}}]
)
async def test_cors_lets_a_browser_read_the_run_and_request_ids(
    make_http: MakeHTTP, admin_key: str, service_settings_overrides: dict[str, Any]
) -> None:
    client = make_http(admin_key, Origin="https://ui.example")
    r = await client.get("/v1/models")
    assert r.headers["access-control-allow-origin"] == "https://ui.example"
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert {"x-arbor-run-id", "x-request-id", "retry-after"} <= exposed
    r = await make_http(admin_key, Origin="https://evil.example").get("/v1/models")
    assert "access-control-allow-origin" not in r.headers


async def test_concurrent_bad_keys_do_not_starve_good_ones(
    make_http: MakeHTTP, admin_key: str
) -> None:
    bad = make_http(Authorization="Bearer arb_" + "x" * 60)
    good = make_http(admin_key)
    results = await asyncio.gather(*(bad.get("/v1/keys") for _ in range(30)), good.get("/v1/keys"))
    assert [r.status_code for r in results[:-1]] == [401] * 30
    assert results[-1].status_code == 200
