"""Metrics: label cardinality stays bounded whatever model ids callers send."""

from __future__ import annotations

from arbor.core.metrics import OTHER, Metrics


def _series(metrics: Metrics, name: str) -> set[tuple[str, str]]:
    samples = [s for family in metrics.registry.collect() for s in family.samples]
    return {(s.labels["provider"], s.labels["model"]) for s in samples if s.name == name}


def test_models_beyond_the_cap_are_counted_as_other() -> None:
    metrics = Metrics(max_models=3)
    metrics.pin("openai", "gpt-4o")
    for i in range(50):
        metrics.model("openai", f"random-{i}").ok.inc()
        metrics.error("openai", f"random-{i}", "http")
        metrics.set_breaker("openai", f"random-{i}", "open")
    metrics.model("openai", "gpt-4o").ok.inc()  # pinned: own labels though past the cap
    metrics.model("evil", "x").ok.inc()  # a provider never seen: both labels collapse
    series = _series(metrics, "arbor_llm_requests_total")
    assert series == {
        ("openai", "random-0"),
        ("openai", "random-1"),
        ("openai", "random-2"),
        ("openai", OTHER),
        ("openai", "gpt-4o"),
        (OTHER, OTHER),
    }
    assert len(_series(metrics, "arbor_llm_errors_total")) == 4
    assert len(_series(metrics, "arbor_llm_breaker_state")) == 4
    other = metrics.model("openai", "random-40")
    assert other is metrics.model("openai", "random-41")  # one child set for all of them
    text = metrics.render().decode()
    assert 'arbor_llm_requests_total{model="other",provider="openai",status="ok"} 47.0' in text


def test_models_within_the_cap_keep_their_names() -> None:
    metrics = Metrics()
    for name in ("a", "b", "c"):
        metrics.model("p", name).ok.inc()
    assert _series(metrics, "arbor_llm_requests_total") == {("p", "a"), ("p", "b"), ("p", "c")}
