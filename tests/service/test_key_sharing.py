"""Two servers on one Redis share each API key's HTTP requests/min and its spending."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from arbor.core.config import Settings
from arbor.llm._redis_limiter import RedisRateLimiter
from arbor.llm.redis_backends import key_sharing
from arbor.llm.types import CallContext, ChatRequest, Message
from arbor.service.app import create_app
from arbor.service.auth import Authenticator
from arbor.service.context import ServiceContext, open_context
from arbor.service.errors import RequestRateLimitedError
from arbor.testing import FunctionModel

pytestmark = pytest.mark.redis

# $0.001 per token in and out: a short chat call costs about a cent.
PRICES = {"test:echo": {"input": 1000.0, "output": 1000.0}}


@pytest.fixture
async def replicas(
    redis_server_url: str, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[tuple[ServiceContext, ServiceContext]]:
    settings = Settings(
        home=tmp_path,
        redis_url=redis_server_url,
        database_url=sqlite_url,
        default_model="test:echo",
        llm={"cache": {"enabled": False}, "prices": PRICES},
    )
    models = {"test:echo": FunctionModel(lambda r: "echo", name="echo")}
    a = await open_context(settings, models=models)
    b = await open_context(settings, models=models)
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()


async def _admitted(auth: Authenticator, key: str) -> bool:
    try:
        await auth.authenticate({"x-api-key": key})
    except RequestRateLimitedError:
        return False
    return True


async def test_two_servers_together_admit_a_keys_rpm(
    replicas: tuple[ServiceContext, ServiceContext],
) -> None:
    a, b = replicas
    key = (await a.keys.create("shared", scopes=["read"], rpm=5)).key
    results = [await _admitted(ctx.auth, key) for _ in range(6) for ctx in (a, b)]
    assert sum(results) == 5  # not 5 per server
    with pytest.raises(RequestRateLimitedError) as info:
        await b.auth.authenticate({"x-api-key": key})
    assert 0 < info.value.retry_after <= 60


async def test_the_shared_window_refills_for_both_servers(
    replicas: tuple[ServiceContext, ServiceContext],
) -> None:
    """A three-second window (the per-minute window, shortened) observed whole: each round
    of eight requests must fall inside one window, however slowly a loaded machine sends
    them (one second left a loaded machine too little room)."""
    window = 3.0
    a, b = replicas
    key = (await a.keys.create("windowed", scopes=["read"], rpm=3)).key
    auths = [
        Authenticator(
            ctx.keys,
            ctx.client,
            ctx.auth.usage,
            sharing=key_sharing(ctx.settings, ctx.client, window=window),
        )
        for ctx in (a, b)
    ]
    first = [await _admitted(auth, key) for _ in range(4) for auth in auths]
    assert sum(first) == 3
    await asyncio.sleep(window + 0.05)  # every admission of the first round has expired
    second = [await _admitted(auth, key) for _ in range(4) for auth in auths]
    assert sum(second) == 3


async def test_a_budget_spent_through_one_server_is_refused_by_the_other(
    replicas: tuple[ServiceContext, ServiceContext],
) -> None:
    a, b = replicas
    new = await a.keys.create("budgeted", scopes=["run", "read"], budget_usd=0.012)
    body = {"model": "test:echo", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {new.key}"}
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(create_app(a)), base_url="http://a") as ha,
        httpx.AsyncClient(transport=httpx.ASGITransport(create_app(b)), base_url="http://b") as hb,
    ):
        r = await ha.post("/v1/chat/completions", json=body, headers=headers)
        assert r.status_code == 200, r.text
        scope = f"key:{new.record.id}"
        spent = a.client.budgets.spent(scope)
        assert spent > 0.006
        sharing = a.auth.sharing.budgets
        assert sharing is not None
        await sharing.flush()
        assert await sharing.spent(scope) == pytest.approx(spent)
        r = await hb.post("/v1/chat/completions", json=body, headers=headers)
        assert r.status_code == 402, r.text
        assert b.client.budgets.spent(scope) == pytest.approx(spent)


async def test_without_redis_the_limits_stay_in_process(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, default_model="test:echo")
    ctx = await open_context(settings, models={"test:echo": FunctionModel(lambda r: "x")})
    try:
        assert ctx.auth.sharing.budgets is None
        assert type(ctx.auth.sharing.limiter).__name__ == "InMemoryRateLimiter"
        key = (await ctx.keys.create("local", scopes=["read"], rpm=2)).key
        assert [await _admitted(ctx.auth, key) for _ in range(3)] == [True, True, False]
    finally:
        await ctx.aclose()


async def test_a_keys_llm_rpm_and_tpm_are_one_window_for_both_servers(
    replicas: tuple[ServiceContext, ServiceContext],
) -> None:
    """The LLM layer's per-key limits already run on the shared Redis limiter."""
    a, b = replicas
    new = await a.keys.create("metered", scopes=["run"], rpm=100, tpm=50_000)
    for ctx in (a, b):
        await ctx.auth.authenticate({"x-api-key": new.key})  # hands the limits to its client
        request = ChatRequest(
            model="test:echo",
            messages=[Message.user("hi")],
            max_tokens=2,
            context=CallContext(key_id=new.record.id),
        )
        await ctx.client.complete(request)
    limiter = a.client.limiter
    assert isinstance(limiter, RedisRateLimiter)
    count, tokens = await limiter.usage(f"key:{new.record.id}")
    assert count == 2 and tokens > 0  # both servers' calls in one window
