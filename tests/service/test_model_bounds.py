"""Model ids come from requests: through the gateway, a key naming a new id per request must
not grow the server's per-model state or metric series without limit, and
``llm.allowed_models`` refuses ids outside the list before anything reaches the upstream."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from _openai import provider_settings

from arbor.core.metrics import OTHER
from arbor.service.context import ServiceContext
from arbor.testing.mock_upstream import spawn_mock_upstream

MakeHTTP = Callable[..., httpx.AsyncClient]


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with spawn_mock_upstream(chunks=2) as url:
        yield url


@pytest.fixture
def service_settings_overrides(upstream_url: str) -> dict[str, Any]:
    settings = provider_settings(upstream_url)
    settings["llm"].update(max_models=8, allowed_models=["mock:rand-*", "test:*"])
    return settings


def _model_labels(ctx: ServiceContext) -> set[str]:
    samples = [s for family in ctx.metrics.registry.collect() for s in family.samples]
    return {
        s.labels["model"]
        for s in samples
        if s.name == "arbor_llm_requests_total" and s.labels["provider"] == "mock"
    }


async def test_a_new_model_id_per_request_keeps_state_bounded(
    make_http: MakeHTTP, service_ctx: ServiceContext
) -> None:
    key = (await service_ctx.keys.create("run-only", scopes=["run"], rpm=1000, tpm=10**6)).key
    client = make_http(key)
    service_ctx.metrics.max_models = 20  # the cap, small enough to pass in a short test
    for i in range(60):
        body = {"model": f"mock:rand-{i}", "messages": [{"role": "user", "content": "hi"}]}
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
    llm = service_ctx.client
    assert len(llm._parts.runners) <= 8 and len(llm.registry._models) <= 8
    labels = _model_labels(service_ctx)
    assert OTHER in labels and len(labels) <= 20 + 1
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "mock:rand-0", "messages": [{"role": "user", "content": "again"}]},
    )
    assert r.status_code == 200  # an evicted model is simply built again


async def test_ids_outside_allowed_models_are_404_and_reach_nothing(
    make_http: MakeHTTP, admin_key: str, upstream_url: str
) -> None:
    client = make_http(admin_key)
    stats = upstream_url.removesuffix("/v1") + "/_stats"
    async with httpx.AsyncClient() as raw:
        before = (await raw.get(stats)).json()["requests"]
        for model in ("mock:mock-1", "mock:evil", "openai:gpt-4o", "other:x"):
            for stream in (False, True):
                body = {
                    "model": model,
                    "messages": [{"role": "user", "content": "hi"}],
                    "stream": stream,
                }
                r = await client.post("/v1/chat/completions", json=body)
                assert r.status_code == 404, r.text
        r = await client.post(
            "/v1/chat/completions",
            json={"model": "mock:evil", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert "not allowed" in r.json()["error"]["message"]
        r = await client.post("/v1/embeddings", json={"model": "openai:emb", "input": "x"})
        assert r.status_code == 404 and "not allowed" in r.json()["error"]["message"]
        assert (await raw.get(stats)).json()["requests"] == before
