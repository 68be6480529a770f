"""Intraday snapshots: the session so far of some tickers from the provider's snapshot endpoint
(Polygon), metered like the daily updates; ``inference.quotes`` turns them into today's bars."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
from django.utils import timezone

from features.bar_updates import normalize_symbols
from features.providers.base import CallRecord, ProviderError
from features.providers.polygon import PolygonProvider
from features.services.limits import shared_budget
from features.services.provider_config import build_provider
from investml.ledger import record_api_calls

__all__ = ["SNAPSHOT_TICKERS_PER_REQUEST", "QuoteFetch", "fetch_quotes"]

logger = logging.getLogger(__name__)

SNAPSHOT_TICKERS_PER_REQUEST = 250  # more tickers than this: one request for the whole market instead


@dataclass
class QuoteFetch:
    frame: pd.DataFrame  # features.providers.polygon.SNAPSHOT_COLUMNS, the wanted tickers only
    calls: int = 0
    cost_usd: float = 0.0
    bytes: int = 0
    error: str = ""  # why the fetch stopped early (budget, request quota, provider error); "" when complete


def fetch_quotes(*, tickers: Iterable[str], provider: str = "polygon") -> QuoteFetch:
    """The session so far of ``tickers`` from the provider's snapshot endpoint (Polygon): one request
    per ``SNAPSHOT_TICKERS_PER_REQUEST`` tickers, or one for the whole market when more are wanted.
    Rate-limited, within the day's (and month's) budget and metered as ``data_api`` costs like the
    daily updates. A failed request ends the fetch with what came before it (``error``)."""
    name = provider.strip().lower()
    source = build_provider(name=name)
    if not isinstance(source, PolygonProvider):
        raise ValueError(f"provider {name!r} has no snapshot endpoint: intraday quotes come from polygon")
    wanted = normalize_symbols(tickers)
    empty = pd.DataFrame(columns=["ticker", "time", "open", "high", "low", "close", "volume", "price"])
    if not wanted:
        return QuoteFetch(frame=empty)
    per = SNAPSHOT_TICKERS_PER_REQUEST
    batches = [None] if len(wanted) > per else [wanted[i : i + per] for i in range(0, len(wanted), per)]
    calls: list[CallRecord] = []
    source.on_call, source.budget = calls.append, shared_budget()
    frames, error = [], ""
    try:
        for batch in batches:
            frame = source.fetch_snapshot(batch)
            frames.append(frame[frame["ticker"].isin(wanted)])
    except ProviderError as exc:
        error = f"{name}: {exc.reason}: {source.redact(str(exc))}"
        logger.warning("intraday snapshot stopped: %s", error)
    finally:  # what was paid for is recorded, whatever happened
        record_api_calls(records=calls, day=timezone.localdate())
    frame = pd.concat(frames, ignore_index=True) if frames else empty
    return QuoteFetch(frame=frame, calls=len(calls), cost_usd=sum(r.cost_usd for r in calls),
                      bytes=sum(r.bytes for r in calls), error=error)
