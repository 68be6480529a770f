"""Framework-free market-data providers: HTTP adapters, rate limiting, metering and budget.

Nothing in this package imports Django. Typical use::

    from features.providers import DailyBudget, ProviderConfig, get_provider, update_prices

    provider = get_provider("alphavantage", limits={"requests_per_minute": 5, "requests_per_day": 25})
    result = update_prices(provider, ["AAPL", "MSFT"], since_by_symbol={"AAPL": date(2024, 1, 2)},
                           on_call=write_cost_record, budget=DailyBudget(10.0, spent_today))
"""

from __future__ import annotations

from typing import Any

from .alphavantage import AlphaVantageProvider
from .base import (
    AUTH,
    BAD_RESPONSE,
    BUDGET_EXCEEDED,
    NOT_FOUND,
    PRICE_COLUMNS,
    RATE_LIMITED,
    REASONS,
    SERVER_ERROR,
    TIMEOUT,
    AuthError,
    BadResponseError,
    Budget,
    BudgetExceededError,
    CallRecord,
    DailyBudget,
    HttpProvider,
    NotFoundError,
    PriceProvider,
    ProviderConfig,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    RemainingBudget,
    ServerError,
    UpdateResult,
    budget_message,
    update_prices,
)
from .files import FileDropProvider
from .http import HttpClient, redact
from .polygon import PolygonProvider
from .ratelimit import DailyLimitReached, RateLimiter, get_limiter, reset_limiters
from .stocktwits import StockTwitsProvider
from .stooq import StooqProvider
from .tiingo import TiingoProvider

PROVIDERS: dict[str, type[HttpProvider]] = {
    "alphavantage": AlphaVantageProvider,
    "stooq": StooqProvider,
    "tiingo": TiingoProvider,
    "polygon": PolygonProvider,
}
# Social-media providers (``features.services.social.update_social``): not price sources.
SOCIAL_PROVIDERS: dict[str, type[HttpProvider]] = {
    "stocktwits": StockTwitsProvider,
}


def get_provider(name: str, limits: dict[str, Any] | None = None, **kwargs: Any) -> PriceProvider:
    """An HTTP provider configured from the environment (``<NAME>_BASE_URL``, ``<NAME>_API_KEY``)
    and ``limits``; ``files:<folder>`` gives a FileDropProvider."""
    key = name.strip().lower()
    if key.startswith("files:"):
        return FileDropProvider(name.split(":", 1)[1])
    try:
        cls = PROVIDERS[key]
    except KeyError:
        raise ValueError(f"unknown provider {name!r}; known: {', '.join(sorted(PROVIDERS))}, files:<folder>") from None
    return cls(ProviderConfig.from_env(key, limits), **kwargs)


__all__ = [
    "AUTH", "BAD_RESPONSE", "BUDGET_EXCEEDED", "NOT_FOUND", "PRICE_COLUMNS", "PROVIDERS", "RATE_LIMITED",
    "REASONS", "SERVER_ERROR", "TIMEOUT",
    "AlphaVantageProvider", "AuthError", "BadResponseError", "Budget", "BudgetExceededError", "CallRecord",
    "DailyBudget", "DailyLimitReached", "FileDropProvider", "HttpClient", "HttpProvider", "NotFoundError",
    "PolygonProvider", "PriceProvider", "ProviderConfig", "ProviderError", "ProviderTimeoutError", "RateLimitedError",
    "RateLimiter", "RemainingBudget", "SOCIAL_PROVIDERS", "ServerError", "StockTwitsProvider", "StooqProvider",
    "TiingoProvider", "UpdateResult",
    "budget_message", "get_limiter", "get_provider", "redact", "reset_limiters", "update_prices",
]
