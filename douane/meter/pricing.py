"""What a call costs: genai-prices for known models, the policy's `prices:` for others or overrides.

A model nobody prices costs None (recorded as NULL), never 0: an unknown price is not a free call.
"""

from __future__ import annotations

import fnmatch
import logging
import warnings
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version

from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from douane.policy.model import Price
from douane.providers import Usage

log = logging.getLogger(__name__)

# douane provider name (or wire format, for custom providers) -> genai-prices provider id
PROVIDER_IDS = {"openai": "openai", "anthropic": "anthropic", "gemini": "google"}
GENAI_PRICES = f"genai-prices {version('genai-prices')}"


@dataclass(frozen=True)
class Cost:
    usd: float
    source: str  # "genai-prices 0.2.3" or "policy prices.<glob>"


class Pricer:
    def __init__(self, overrides: dict[str, Price] | None = None):
        self.overrides = overrides or {}

    def _override(self, model: str) -> tuple[str, Price] | None:
        for pattern, price in self.overrides.items():
            if fnmatch.fnmatchcase(model, pattern):
                return pattern, price
        return None

    def cost(self, provider: str, model: str | None, usage: Usage, when: datetime | None = None) -> Cost | None:
        """The price of a finished call, from its reported usage; None when unknown."""
        if not model or usage.input_tokens is None and usage.output_tokens is None:
            return None
        return self._price(provider, model, usage.input_tokens or 0, usage.output_tokens or 0,
                           usage.cached_tokens or 0, when)

    def worst_case(self, provider: str, model: str | None, input_tokens: int, max_output_tokens: int | None,
                   default_output: int) -> Cost | None:
        """The most a call can cost: its input estimate and every output token it may produce."""
        if not model:
            return None
        hit = self._override(model)
        cap = max_output_tokens or (hit[1].max_output_tokens if hit and hit[1].max_output_tokens else None) \
            or default_output
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
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                usage = PriceUsage(input_tokens=input_tokens, output_tokens=output_tokens,
                                   cache_read_tokens=cached or None)
                calc = calc_price(usage, model_ref=model, provider_id=PROVIDER_IDS.get(provider),
                                  genai_request_timestamp=when)
        except LookupError:
            return None
        return Cost(float(calc.total_price), GENAI_PRICES)
