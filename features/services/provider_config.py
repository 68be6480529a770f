"""The data providers as configured: which provider a name means (``ML_MARKET_DATA_PROVIDER``), its
limits from the pipeline config, its base URL and key from the environment, and the rate limiter
every worker shares."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from django.conf import settings

from features.providers import PROVIDERS, FileDropProvider, ProviderConfig
from features.providers.base import PriceProvider
from features.services.limits import shared_limiter

__all__ = [
    "DEFAULT_PROVIDER",
    "KEYED_PROVIDERS",
    "PROVIDER_NAMES",
    "build_provider",
    "default_provider_name",
    "provider_limits",
]

PROVIDER_NAMES = ("alphavantage", "stooq", "tiingo", "polygon", "files")
DEFAULT_PROVIDER = "files"
KEYED_PROVIDERS = ("alphavantage", "tiingo", "polygon")  # Stooq needs no key


def default_provider_name() -> str:
    """``ML_MARKET_DATA_PROVIDER``, else ``files`` (the bundled sample)."""
    return settings.ML_MARKET_DATA_PROVIDER or DEFAULT_PROVIDER


def provider_limits(name: str) -> dict[str, Any]:
    """The ``providers.<name>`` section of the pipeline config; 0 requests per minute/day = no limit."""
    configured = settings.PIPELINE_CONFIG.providers.get(name)
    if configured is None:
        return {}
    limits = configured.model_dump(exclude_unset=True)
    for key in ("requests_per_minute", "requests_per_day"):
        if key in limits and not limits[key]:
            limits[key] = None
    return limits


def build_provider(*, name: str, today: date | None = None) -> PriceProvider:
    """A configured provider: ``files`` (``ML_DATA_PATH/prices``), ``files:<folder>``, or an HTTP one
    with ``<NAME>_BASE_URL`` / ``<NAME>_API_KEY`` from the environment and limits from the config."""
    raw = name.strip()
    key = raw.lower()
    if key == "files":
        return FileDropProvider(Path(settings.ML_DATA_PATH) / "prices")
    if key.startswith("files:"):
        return FileDropProvider(raw.split(":", 1)[1])
    if key not in PROVIDERS:
        raise ValueError(f"unknown provider {name!r}; known: {', '.join(PROVIDER_NAMES)} (or files:<folder>)")
    config = ProviderConfig.from_env(key, provider_limits(key))
    if key in KEYED_PROVIDERS and not config.api_key:  # every request would fail: say so once
        raise ValueError(f"{key.upper()}_API_KEY is not set")
    # counted where every worker sees it (Redis or the database), seeded from today's cost records
    limiter = shared_limiter(provider=key, per_minute=config.requests_per_minute or None,
                             per_day=config.requests_per_day)
    kwargs: dict[str, Any] = {"limiter": limiter}
    if today is not None:
        kwargs["today"] = lambda: today
    return PROVIDERS[key](config, **kwargs)
