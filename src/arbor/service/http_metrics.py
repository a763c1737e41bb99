"""HTTP metrics of the service on the context's own Prometheus registry.

Labels use the route *template* (``/v1/keys/{key_id}``), never the raw path, so a client
cannot grow the series count by requesting random URLs; unmatched paths share one label, and
so do methods outside HTTP's standard ones (some HTTP parsers accept any token as a method).
Label children are cached, so recording a request is two dict lookups and two updates.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from arbor.core.metrics import Metrics

__all__ = ["OTHER_METHOD", "UNMATCHED_ROUTE", "HTTPMetrics"]

UNMATCHED_ROUTE = "(unmatched)"
#: The method label of any method not in :data:`_METHODS`.
OTHER_METHOD = "OTHER"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class HTTPMetrics:
    """``arbor_http_requests_total{method,route,status}`` and
    ``arbor_http_request_duration_seconds{method,route}``."""

    def __init__(self, metrics: Metrics, namespace: str = "arbor") -> None:
        self.requests = Counter(
            "http_requests",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            namespace=namespace,
            registry=metrics.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time from request start to the end of the response body",
            ["method", "route"],
            buckets=_BUCKETS,
            namespace=namespace,
            registry=metrics.registry,
        )
        self._counters: dict[tuple[str, str, int], Counter] = {}
        self._histograms: dict[tuple[str, str], Histogram] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in _METHODS:
            method = OTHER_METHOD
        counter = self._counters.get((method, route, status))
        if counter is None:
            counter = self._counters[(method, route, status)] = self.requests.labels(
                method, route, str(status)
            )
        hist = self._histograms.get((method, route))
        if hist is None:
            hist = self._histograms[(method, route)] = self.latency.labels(method, route)
        counter.inc()
        hist.observe(seconds)
