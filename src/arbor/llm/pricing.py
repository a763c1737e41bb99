"""What a call costs, in USD, from its token usage.

The default table holds OpenAI's list prices per one million tokens (input / output / cached
input) as published on https://openai.com/api/pricing, **as of 2025-08** (gpt-5 family release;
o3 after its June 2025 price cut). Prices change: override any of them, or price other
vendors' models, with ``settings.llm.prices`` (``ARBOR_LLM__PRICES__...`` or ``arbor.toml``)
keyed by ``provider:model`` or a bare model name; the most specific key wins::

    [llm.prices."openrouter:gpt-4o"]
    input = 2.5
    output = 10.0

Dated snapshots (``gpt-4o-mini-2024-07-18``) are priced as their base model unless listed.
Local models, the mock upstream and test doubles cost 0. A model with no price anywhere also
costs 0 and is added to :attr:`PriceTable.unknown`; :meth:`PriceTable.lookup` says whether a
price is known and flags the first miss, so callers can log it once, not on every call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from arbor.core.config import Price, Settings
from arbor.llm.types import Usage

__all__ = ["DEFAULT_PRICES", "FREE_PROVIDERS", "PriceLookup", "PriceTable"]

_M = 1_000_000.0


def _p(inp: float, out: float, cached: float | None = None) -> Price:
    return Price(input=inp, output=out, cached_input=cached)


#: OpenAI list prices, USD per 1M tokens, as of 2025-08 (see the module docstring).
DEFAULT_PRICES: dict[str, Price] = {
    # GPT-5 family
    "gpt-5": _p(1.25, 10.00, 0.125),
    "gpt-5-mini": _p(0.25, 2.00, 0.025),
    "gpt-5-nano": _p(0.05, 0.40, 0.005),
    "gpt-5-chat-latest": _p(1.25, 10.00, 0.125),
    # GPT-4.1 family
    "gpt-4.1": _p(2.00, 8.00, 0.50),
    "gpt-4.1-mini": _p(0.40, 1.60, 0.10),
    "gpt-4.1-nano": _p(0.10, 0.40, 0.025),
    # GPT-4o family
    "gpt-4o": _p(2.50, 10.00, 1.25),
    "gpt-4o-2024-05-13": _p(5.00, 15.00),
    "chatgpt-4o-latest": _p(5.00, 15.00),
    "gpt-4o-mini": _p(0.15, 0.60, 0.075),
    # reasoning models
    "o1": _p(15.00, 60.00, 7.50),
    "o1-mini": _p(1.10, 4.40, 0.55),
    "o1-pro": _p(150.00, 600.00),
    "o3": _p(2.00, 8.00, 0.50),
    "o3-mini": _p(1.10, 4.40, 0.55),
    "o3-pro": _p(20.00, 80.00),
    "o4-mini": _p(1.10, 4.40, 0.275),
    # older chat models
    "gpt-4-turbo": _p(10.00, 30.00),
    "gpt-4": _p(30.00, 60.00),
    "gpt-3.5-turbo": _p(0.50, 1.50),
    # embeddings (input only)
    "text-embedding-3-small": _p(0.02, 0.0),
    "text-embedding-3-large": _p(0.13, 0.0),
    "text-embedding-ada-002": _p(0.10, 0.0),
}

#: Providers whose calls cost nothing: the embedded GGUF runtime and test doubles.
FREE_PROVIDERS = frozenset({"local", "mock", "test"})
_FREE = Price(input=0.0, output=0.0, cached_input=0.0)
_DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class PriceLookup:
    price: Price
    #: False when no price was found and the call is counted as free.
    known: bool
    #: True the first time this model was found unknown: the moment to log it.
    first_miss: bool = False


class PriceTable:
    """Prices from settings over the default table, resolved once per model id."""

    def __init__(
        self, settings: Settings | None = None, *, defaults: dict[str, Price] | None = None
    ) -> None:
        self._overrides = dict(settings.llm.prices) if settings is not None else {}
        self._defaults = DEFAULT_PRICES if defaults is None else defaults
        self._resolved: dict[tuple[str, str], Price | None] = {}
        #: ``provider:model`` ids priced at 0 for lack of a price.
        self.unknown: set[str] = set()

    def lookup(self, provider: str, model: str) -> PriceLookup:
        key = (provider, model)
        try:
            price = self._resolved[key]
        except KeyError:
            price = self._resolved[key] = self._resolve(provider, model)
        if price is not None:
            return PriceLookup(price, known=True)
        model_id = f"{provider}:{model}"
        first = model_id not in self.unknown
        self.unknown.add(model_id)
        return PriceLookup(_FREE, known=False, first_miss=first)

    def cost(self, provider: str, model: str, usage: Usage) -> float:
        """USD for a call's usage; cached input tokens at the cached price where one is set."""
        price = self.lookup(provider, model).price
        cached = min(usage.cached_input_tokens, usage.input_tokens)
        cached_rate = price.input if price.cached_input is None else price.cached_input
        return (
            (usage.input_tokens - cached) * price.input
            + cached * cached_rate
            + usage.output_tokens * price.output
        ) / _M

    def estimate(
        self, provider: str, model: str, input_tokens: int, max_output_tokens: int
    ) -> float:
        """An upper bound for a budget reservation: no cache discount, every output token."""
        price = self.lookup(provider, model).price
        return (input_tokens * price.input + max_output_tokens * price.output) / _M

    def _resolve(self, provider: str, model: str) -> Price | None:
        overrides = self._overrides
        for key in (f"{provider}:{model}", model):
            if key in overrides:
                return overrides[key]
        if provider in FREE_PROVIDERS or model.startswith("mock-"):
            return _FREE
        for key in _candidates(model):
            if key in overrides:
                return overrides[key]
            if key in self._defaults:
                return self._defaults[key]
        return None


def _candidates(model: str) -> list[str]:
    """``openai/gpt-4o-2024-08-06`` (as routers spell it) → itself, ``gpt-4o-2024-08-06``,
    ``gpt-4o``."""
    names = [model]
    bare = model.rpartition("/")[2]
    if bare != model:
        names.append(bare)
    undated = _DATE_SUFFIX.sub("", bare)
    if undated != bare:
        names.append(undated)
    return names
