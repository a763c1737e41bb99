"""Overview figures: rates and p95 from counter and histogram deltas, sparkline and bar
geometry, breaker states read from the metrics registry."""

from __future__ import annotations

import pytest

from arbor.core.metrics import Metrics
from arbor.service.dashboard.charts import MetricsHistory, bars, breaker_rows, sparkline
from arbor.service.http_metrics import HTTPMetrics


def test_history_turns_counters_into_rates_error_share_and_p95() -> None:
    metrics = Metrics()
    http = HTTPMetrics(metrics)
    now = [0.0]
    history = MetricsHistory(min_interval=1.0, clock=lambda: now[0])
    skip = lambda route: route.startswith("/dash")  # noqa: E731
    history.record(http, skip)
    for _ in range(18):
        http.observe("GET", "/v1/a", 200, 0.003)
    http.observe("GET", "/v1/a", 500, 0.2)
    http.observe("GET", "/v1/a", 404, 0.002)
    for _ in range(100):
        http.observe("GET", "/dash", 200, 5.0)  # left out
    now[0] = 2.0
    history.record(http, skip)
    history.record(http, skip)  # too soon: ignored
    (point,) = history.points()
    assert point.rps == pytest.approx(10.0)
    assert point.error_rate == pytest.approx(0.05)
    assert point.client_error_rate == pytest.approx(0.05)
    # 19 of 20 requests took <= 5 ms (the 0.005 bucket), so p95 is that bucket's bound.
    assert point.p95_ms == pytest.approx(5.0)
    http.observe("GET", "/v1/a", 200, 0.2)
    http.observe("GET", "/v1/a", 200, 0.003)
    now[0] = 3.0
    history.record(http, skip)
    assert history.points()[-1].p95_ms == pytest.approx(250.0)  # half of them slow
    now[0] = 5.0
    history.record(http, skip)
    quiet = history.points()[-1]
    assert quiet.rps == 0
    assert quiet.error_rate is None and quiet.p95_ms is None


def test_sparkline_scales_into_the_box() -> None:
    line = sparkline([0.0, 5.0, None, 10.0], width=30, height=20)
    coords = [tuple(map(float, p.split(","))) for p in line.points.split()]
    assert [x for x, _ in coords] == [0.0, 10.0, 20.0, 30.0]
    assert coords[3][1] == pytest.approx(2.0)  # the top value touches the top margin
    assert coords[0][1] == pytest.approx(18.0)
    assert line.last == 10.0 and line.top == 10.0
    flat = sparkline([])
    assert flat.last is None and len(flat.points.split()) == 2


def test_bars_are_relative_to_the_longest() -> None:
    rows = bars([("a", 2.0), ("b", 8.0), ("c", 0.0)])
    assert [r.percent for r in rows] == [25.0, 100.0, 0.0]
    assert bars([("z", 0.0)])[0].percent == 0.0


def test_breaker_rows_come_from_the_gauge() -> None:
    metrics = Metrics()
    assert breaker_rows(metrics) == []
    metrics.set_breaker("openai", "gpt", "open")
    metrics.set_breaker("local", "tiny", "closed")
    metrics.set_breaker("openai", "mini", "half_open")
    rows = [(r.provider, r.model, r.state) for r in breaker_rows(metrics)]
    assert rows == [
        ("openai", "gpt", "open"),
        ("openai", "mini", "half_open"),
        ("local", "tiny", "closed"),
    ]
