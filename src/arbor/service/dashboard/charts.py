"""The overview's numbers over time, and the geometry of the inline SVG charts drawing them.

Prometheus counters only ever grow, so a rate needs two readings: :class:`MetricsHistory`
keeps a bounded series of readings of the app's HTTP metrics (taken when the overview is
viewed, at most one a second) and turns consecutive pairs into requests/s, error share and a
p95 latency read off the histogram's bucket deltas. Charts are plain SVG polylines and bars
computed here as numbers, rendered by a template: no chart library, no client-side code.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from arbor.core.metrics import BREAKER_STATES, Metrics
from arbor.service.http_metrics import HTTPMetrics

__all__ = [
    "Bar",
    "BreakerRow",
    "MetricsHistory",
    "Point",
    "Reading",
    "Sparkline",
    "bars",
    "breaker_rows",
    "read_http",
    "sparkline",
]

_STATE_NAMES = {value: name for name, value in BREAKER_STATES.items()}
#: Breakers listed worst first.
_SEVERITY = {"open": 0, "half_open": 1}


@dataclass(frozen=True, slots=True)
class Reading:
    """Cumulative HTTP counts at one moment."""

    at: float
    requests: float
    server_errors: float
    client_errors: float
    #: (upper bound in seconds, cumulative count) per histogram bucket, ascending.
    buckets: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class Point:
    """What happened between two readings."""

    at: float
    rps: float
    #: Share of requests answered 5xx (None when there were none).
    error_rate: float | None
    client_error_rate: float | None
    #: Upper bound of the bucket holding the 95th percentile, in ms (None: no requests).
    p95_ms: float | None


def read_http(http: HTTPMetrics, skip: Callable[[str], bool], at: float) -> Reading:
    """Sum the request counter and latency histogram over routes ``skip`` does not reject
    (the dashboard leaves out its own pages, whose polling would otherwise dominate)."""
    total = server = client = 0.0
    for family in http.requests.collect():
        for s in family.samples:
            if not s.name.endswith("_total") or skip(s.labels.get("route", "")):
                continue
            total += s.value
            status = s.labels.get("status", "")
            if status.startswith("5"):
                server += s.value
            elif status.startswith("4"):
                client += s.value
    buckets: dict[float, float] = {}
    for family in http.latency.collect():
        for s in family.samples:
            if not s.name.endswith("_bucket") or skip(s.labels.get("route", "")):
                continue
            le = float(s.labels["le"])
            buckets[le] = buckets.get(le, 0.0) + s.value
    return Reading(at, total, server, client, tuple(sorted(buckets.items())))


def _p95(before: Reading, after: Reading) -> float | None:
    old = dict(before.buckets)
    deltas = [(le, count - old.get(le, 0.0)) for le, count in after.buckets]
    if not deltas or deltas[-1][1] <= 0:
        return None
    wanted = 0.95 * deltas[-1][1]  # the +Inf bucket holds every request
    for le, count in deltas:
        if count >= wanted:
            return le * 1000.0 if math.isfinite(le) else None
    return None


class MetricsHistory:
    """A bounded series of readings (one app's), and the points between them."""

    def __init__(
        self,
        *,
        capacity: int = 120,
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_interval = min_interval
        self._clock = clock
        self._readings: deque[Reading] = deque(maxlen=capacity + 1)

    def record(self, http: HTTPMetrics, skip: Callable[[str], bool]) -> None:
        """Take a reading unless the last one is younger than ``min_interval``."""
        now = self._clock()
        if self._readings and now - self._readings[-1].at < self.min_interval:
            return
        self._readings.append(read_http(http, skip, now))

    def points(self) -> list[Point]:
        readings = list(self._readings)
        return [_point(a, b) for a, b in itertools.pairwise(readings)]


def _point(a: Reading, b: Reading) -> Point:
    seconds = max(b.at - a.at, 1e-9)
    count = max(b.requests - a.requests, 0.0)
    return Point(
        at=b.at,
        rps=count / seconds,
        error_rate=(b.server_errors - a.server_errors) / count if count else None,
        client_error_rate=(b.client_errors - a.client_errors) / count if count else None,
        p95_ms=_p95(a, b),
    )


@dataclass(frozen=True, slots=True)
class Sparkline:
    """An SVG polyline's ``points`` attribute for a series, with its last and top values."""

    points: str
    width: int
    height: int
    last: float | None
    top: float


def sparkline(values: Sequence[float | None], *, width: int = 240, height: int = 48) -> Sparkline:
    """Scale ``values`` (None counts as 0) into a ``width`` by ``height`` box, newest right."""
    series = [v or 0.0 for v in values]
    top = max(series, default=0.0)
    if len(series) < 2:
        series = [series[0] if series else 0.0] * 2
    step = width / (len(series) - 1)
    scale = (height - 4) / top if top > 0 else 0.0
    coords = [f"{i * step:.1f},{height - 2 - v * scale:.1f}" for i, v in enumerate(series)]
    last = next((v for v in reversed(values) if v is not None), None)
    return Sparkline(" ".join(coords), width, height, last, top)


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: float
    #: Width in percent of the longest bar (0-100).
    percent: float


def bars(items: Iterable[tuple[str, float]]) -> list[Bar]:
    rows = list(items)
    top = max((v for _, v in rows), default=0.0)
    return [Bar(label, v, (v / top * 100.0) if top > 0 else 0.0) for label, v in rows]


@dataclass(frozen=True, slots=True)
class BreakerRow:
    provider: str
    model: str
    state: str


def breaker_rows(metrics: Metrics) -> list[BreakerRow]:
    """Every circuit breaker that has changed state, from the metrics registry's gauge
    (a breaker that never tripped is closed and has no series)."""
    rows = []
    for family in metrics.breaker_state.collect():
        for s in family.samples:
            state = _STATE_NAMES.get(s.value, "unknown")
            rows.append(BreakerRow(s.labels["provider"], s.labels["model"], state))
    return sorted(rows, key=lambda r: (_SEVERITY.get(r.state, 2), r.provider, r.model))
