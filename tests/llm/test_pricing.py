"""Costs from the default price table and from settings overrides."""

from __future__ import annotations

import pytest

from arbor.core.config import Settings
from arbor.llm.pricing import DEFAULT_PRICES, PriceTable
from arbor.llm.types import Usage


def usage(inp: int = 0, out: int = 0, cached: int = 0) -> Usage:
    return Usage(input_tokens=inp, output_tokens=out, cached_input_tokens=cached)


def test_cost_of_gpt_4o_mini() -> None:
    prices = PriceTable(Settings())
    # 1M input at $0.15 + 1M output at $0.60
    assert prices.cost("openai", "gpt-4o-mini", usage(1_000_000, 1_000_000)) == pytest.approx(0.75)


def test_cached_input_is_billed_at_the_cached_price() -> None:
    prices = PriceTable(Settings())
    # gpt-4o: 1,000 input of which 400 cached: 600 * 2.50 + 400 * 1.25, 100 output at 10.00
    expected = (600 * 2.50 + 400 * 1.25 + 100 * 10.00) / 1e6
    assert prices.cost("openai", "gpt-4o", usage(1000, 100, cached=400)) == pytest.approx(expected)


def test_cached_input_without_a_cached_price_costs_the_input_price() -> None:
    prices = PriceTable(Settings())
    assert prices.cost("openai", "o3-pro", usage(100, cached=100)) == pytest.approx(100 * 20 / 1e6)


@pytest.mark.parametrize(
    ("provider", "model", "base"),
    [
        ("openai", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # dated snapshot
        ("router", "openai/gpt-4.1", "gpt-4.1"),  # a router's vendor prefix
        ("azure", "gpt-5-nano", "gpt-5-nano"),  # same model, any provider
    ],
)
def test_model_name_variants(provider: str, model: str, base: str) -> None:
    prices = PriceTable(Settings())
    p = DEFAULT_PRICES[base]
    assert prices.cost(provider, model, usage(1_000_000)) == pytest.approx(p.input)
    assert prices.lookup(provider, model).known


def test_a_listed_snapshot_keeps_its_own_price() -> None:
    prices = PriceTable(Settings())
    assert prices.cost("openai", "gpt-4o-2024-05-13", usage(1_000_000)) == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("local", "smollm2"),
        ("local", "/models/x.gguf"),
        ("mock", "gpt-4o"),
        ("test", "a"),
        ("bench", "mock-1"),
    ],
)
def test_local_mock_and_test_models_are_free_and_known(provider: str, model: str) -> None:
    prices = PriceTable(Settings())
    assert prices.cost(provider, model, usage(10_000, 10_000)) == 0.0
    assert prices.lookup(provider, model).known


def test_overrides_most_specific_wins() -> None:
    settings = Settings(
        llm={
            "prices": {
                "gpt-4o": {"input": 1.0, "output": 2.0},
                "router:gpt-4o": {"input": 3.0, "output": 4.0, "cached_input": 0.5},
                "my-model": {"input": 7.0, "output": 8.0},
            }
        }
    )
    prices = PriceTable(settings)
    assert prices.cost("openai", "gpt-4o", usage(1_000_000, 1_000_000)) == pytest.approx(3.0)
    assert prices.cost("router", "gpt-4o", usage(1_000_000, 1_000_000)) == pytest.approx(7.0)
    assert prices.cost("router", "gpt-4o", usage(1_000_000, cached=1_000_000)) == pytest.approx(0.5)
    assert prices.cost("vllm", "my-model", usage(0, 1_000_000)) == pytest.approx(8.0)
    # an override also prices a model the table does not know, and a local one
    local = PriceTable(Settings(llm={"prices": {"local:smollm2": {"input": 1, "output": 1}}}))
    assert local.cost("local", "smollm2", usage(1_000_000)) == pytest.approx(1.0)


def test_unknown_model_costs_zero_and_is_flagged_once() -> None:
    prices = PriceTable(Settings())
    first = prices.lookup("ollama", "llama3.1:8b")
    again = prices.lookup("ollama", "llama3.1:8b")
    assert (first.known, first.first_miss) == (False, True)
    assert (again.known, again.first_miss) == (False, False)
    assert prices.cost("ollama", "llama3.1:8b", usage(1000, 1000)) == 0.0
    assert prices.unknown == {"ollama:llama3.1:8b"}


def test_estimate_is_an_upper_bound_for_reservations() -> None:
    prices = PriceTable(Settings())
    est = prices.estimate("openai", "gpt-4.1", 1000, 500)
    assert est == pytest.approx((1000 * 2.00 + 500 * 8.00) / 1e6)
    assert est >= prices.cost("openai", "gpt-4.1", usage(1000, 500, cached=1000))
    assert prices.estimate("local", "smollm2", 1000, 1000) == 0.0


def test_tables_are_independent() -> None:
    a = PriceTable(Settings(llm={"prices": {"x": {"input": 1, "output": 1}}}))
    b = PriceTable(Settings())
    assert a.lookup("p", "x").known and not b.lookup("p", "x").known
    assert PriceTable().lookup("openai", "gpt-4o").known  # settings are optional


def test_every_default_price_is_sane() -> None:
    for name, price in DEFAULT_PRICES.items():
        assert price.input >= 0 and price.output >= 0, name
        if price.cached_input is not None:
            assert price.cached_input <= price.input, name
