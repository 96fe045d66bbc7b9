"""What a call costs: genai-prices for known models, the policy's `prices:` for others or overrides.

A model nobody prices costs None (recorded as NULL), never 0: an unknown price is not a free call.
"""

from __future__ import annotations

import fnmatch
import logging
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from importlib.metadata import version

from genai_prices import Usage as PriceUsage
from genai_prices import calc_price
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import PriceCalculation

from douane.policy.model import Price
from douane.providers import Usage

log = logging.getLogger(__name__)

# douane provider name (or wire format, for custom providers) -> genai-prices provider id
PROVIDER_IDS = {"openai": "openai", "anthropic": "anthropic", "gemini": "google"}
GENAI_PRICES = f"genai-prices {version('genai-prices')}"
MTOK = Decimal(1_000_000)


@dataclass(frozen=True)
class Cost:
    usd: float
    source: str  # "genai-prices 0.2.3" or "policy prices.<glob>"


@dataclass(frozen=True)
class _FlatRate:
    """USD per million tokens of a model whose price has no tiers or conditions."""

    input: Decimal
    output: Decimal
    cached: Decimal


class Pricer:
    def __init__(self, overrides: dict[str, Price] | None = None):
        self.overrides = overrides or {}
        # (provider id, model, day) -> flat rate, or None where genai-prices must compute each call
        self._flat: dict[tuple[str | None, str, str], _FlatRate | None] = {}
        self._windows: dict[tuple[str | None, str], int | None] = {}

    def _override(self, model: str) -> tuple[str, Price] | None:
        for pattern, price in self.overrides.items():
            if fnmatch.fnmatchcase(model, pattern):
                return pattern, price
        return None

    def max_tokens(self, provider: str, model: str | None) -> int | None:
        """The most tokens a call of this model can produce, when known: the policy's
        `prices.<glob>.max_output_tokens`, else the model's context window (genai-prices)."""
        if not model:
            return None
        hit = self._override(model)
        if hit is not None and hit[1].max_output_tokens:
            return hit[1].max_output_tokens
        key = (PROVIDER_IDS.get(provider), model)
        if key not in self._windows:
            try:
                _, info = get_snapshot().find_provider_model(model, None, key[0], None)
                self._windows[key] = info.context_window
            except LookupError:
                self._windows[key] = None
        return self._windows[key]

    def cost(self, provider: str, model: str | None, usage: Usage, when: datetime | None = None) -> Cost | None:
        """The price of a finished call, from its reported usage; None when unknown."""
        if not model or usage.input_tokens is None and usage.output_tokens is None:
            return None
        return self._price(provider, model, usage.input_tokens or 0, usage.output_tokens or 0,
                           usage.cached_tokens or 0, when)

    def default_output(self, model: str | None, default: int) -> int:
        """Output tokens to assume for a call that sets no cap: the policy's price entry's
        max_output_tokens for the model, else `default`."""
        hit = self._override(model) if model else None
        return hit[1].max_output_tokens if hit and hit[1].max_output_tokens else default

    def worst_case(self, provider: str, model: str | None, input_tokens: int, max_output_tokens: int | None,
                   default_output: int) -> Cost | None:
        """The most a call can cost: its input estimate and every output token it may produce."""
        if not model:
            return None
        cap = max_output_tokens or self.default_output(model, default_output)
        return self._price(provider, model, input_tokens, cap, 0, None)

    def _price(self, provider: str, model: str, input_tokens: int, output_tokens: int, cached: int,
               when: datetime | None) -> Cost | None:
        hit = self._override(model)
        if hit is not None:
            pattern, p = hit
            cached_rate = p.cached_input_per_mtok if p.cached_input_per_mtok is not None else p.input_per_mtok
            usd = ((input_tokens - cached) * p.input_per_mtok + cached * cached_rate
                   + output_tokens * p.output_per_mtok) / 1_000_000
            return Cost(usd, f"policy prices.{pattern}")
        provider_id = PROVIDER_IDS.get(provider)
        key = (provider_id, model, (when or datetime.now(UTC)).strftime("%Y-%m-%d"))
        if key in self._flat and self._flat[key] is not None:
            rate = self._flat[key]
            assert rate is not None
            flat = ((input_tokens - cached) * rate.input + cached * rate.cached + output_tokens * rate.output) / MTOK
            return Cost(float(flat), GENAI_PRICES)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                usage = PriceUsage(input_tokens=input_tokens, output_tokens=output_tokens,
                                   cache_read_tokens=cached or None)
                calc = calc_price(usage, model_ref=model, provider_id=provider_id, genai_request_timestamp=when)
        except LookupError:
            return None
        if key not in self._flat:
            self._flat[key] = _flat_rate(calc, input_tokens, output_tokens, cached)
        return Cost(float(calc.total_price), GENAI_PRICES)


def _flat_rate(calc: PriceCalculation, input_tokens: int, output_tokens: int, cached: int) -> _FlatRate | None:
    """The per-token rates, when genai-prices only multiplies for this model (no tiers, no fees).

    Checked against the price genai-prices just computed, so a model with anything more to its
    price (tiers, per-request fees) keeps going through genai-prices on every call.
    """
    price = calc.model_price
    values = (price.input_mtok, price.output_mtok, price.cache_read_mtok or price.input_mtok)
    if not all(isinstance(v, Decimal) for v in values) or input_tokens < 1:
        return None
    rate = _FlatRate(*values)  # type: ignore[arg-type]
    flat = ((input_tokens - cached) * rate.input + cached * rate.cached + output_tokens * rate.output) / MTOK
    return rate if flat == calc.total_price else None
