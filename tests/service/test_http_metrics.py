"""HTTP metrics: label values stay bounded whatever a client sends."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from arbor.core.metrics import Metrics
from arbor.service.context import ServiceContext
from arbor.service.http_metrics import OTHER_METHOD, UNMATCHED_ROUTE, HTTPMetrics

MakeHTTP = Callable[..., httpx.AsyncClient]


def _label_sets(metrics: Metrics) -> set[tuple[str, str, str]]:
    samples = [s for family in metrics.registry.collect() for s in family.samples]
    return {
        (s.labels["method"], s.labels["route"], s.labels["status"])
        for s in samples
        if s.name == "arbor_http_requests_total"
    }


def test_unknown_methods_share_one_label() -> None:
    metrics = Metrics()
    http = HTTPMetrics(metrics)
    for i in range(50):
        http.observe(f"X-METHOD-{i}", "/v1/keys", 405, 0.001)
    http.observe("GET", "/v1/keys", 200, 0.001)
    assert _label_sets(metrics) == {(OTHER_METHOD, "/v1/keys", "405"), ("GET", "/v1/keys", "200")}


async def test_random_paths_and_methods_add_no_series(
    make_http: MakeHTTP, service_ctx: ServiceContext
) -> None:
    client = make_http()
    for i in range(30):
        await client.get(f"/random/{i}")
        await client.request(f"BREW{i}", "/v1/keys")
    labels = _label_sets(service_ctx.metrics)
    assert (OTHER_METHOD, "/v1/keys", "405") in labels
    assert ("GET", UNMATCHED_ROUTE, "404") in labels
    assert len(labels) == 2
