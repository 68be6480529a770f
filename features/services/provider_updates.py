"""What the provider updates beside the daily bars share (news, social posts, fundamentals): a
provider behind the shared rate limiter and budget whose calls go to the cost ledger, and the
ticker-by-ticker fetch-and-store loop of news and posts with its summary."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, ClassVar

import pandas as pd
from django.db.models import QuerySet

from features.models import IngestionRun, Ticker
from features.providers import ProviderConfig
from features.providers.base import BudgetExceededError, CallRecord, ProviderError
from features.services.ingestion_runs import ERROR_MAX, Progress, failure_recorded, run_succeeded, say
from features.services.limits import shared_budget, shared_limiter
from features.services.provider_config import KEYED_PROVIDERS, provider_limits
from investml.ledger import record_api_calls

logger = logging.getLogger(__name__)


class MeteredProvider:
    """``source``: a provider of ``cls`` configured from the environment and the pipeline config,
    behind the rate limiter and budget of ``day`` that every worker shares; its calls wait in memory
    until ``record_calls`` writes them to the cost ledger."""

    def __init__(self, cls: type, *, key: str, day: date) -> None:
        config = ProviderConfig.from_env(key, provider_limits(key))
        if key in KEYED_PROVIDERS and not config.api_key:  # every request would fail: say so once
            raise ValueError(f"{key.upper()}_API_KEY is not set")
        self.key, self.day, self.config = key, day, config
        self.limiter = shared_limiter(provider=key, per_minute=config.requests_per_minute or None,
                                      per_day=config.requests_per_day, day=day)
        self._records: list[CallRecord] = []
        self.source = cls(config, on_call=self._records.append, budget=shared_budget(day=day), limiter=self.limiter)
        self.calls, self.cost_usd = 0, 0.0

    def record_calls(self) -> tuple[int, float]:
        """Write the calls made since the last time to the cost ledger; returns all calls so far and their cost."""
        record_api_calls(records=self._records, day=self.day)
        self.calls += len(self._records)
        self.cost_usd += sum(r.cost_usd for r in self._records)
        self._records.clear()
        return self.calls, self.cost_usd

    def failure(self, exc: ProviderError) -> str:
        """``reason: message`` of a failed request, secrets redacted."""
        return f"{exc.reason}: {self.source.redact(str(exc))}"

    def daily_limit_reached(self) -> str:
        """The warning when the day's requests are used up, else ""."""
        if self.limiter.per_day is not None and self.limiter.remaining_today() == 0:
            return f"{self.key}: daily request limit reached ({self.limiter.per_day}/day)"
        return ""


def requested_tickers(tickers: list[str] | None) -> list[str]:
    """``tickers`` upper-cased, once each, in order; None: the active tickers."""
    if tickers is not None:
        return list(dict.fromkeys(t.strip().upper() for t in tickers if t.strip()))
    return list(Ticker.objects.filter(active=True).order_by("symbol").values_list("symbol", flat=True))


def newest_by_ticker(stored: QuerySet, *, symbols: list[str], newest: Any) -> dict[str, Any]:
    """``newest`` (an aggregate: ``Max("published_at")``) of the ``stored`` rows, per ticker symbol."""
    if len(symbols) <= 500:  # more: every ticker's, rather than a long IN list
        stored = stored.filter(ticker__symbol__in=symbols)
    return dict(stored.values("ticker__symbol").annotate(last=newest).values_list("ticker__symbol", "last"))


@dataclass
class TickerUpdateSummary:
    """A ticker-by-ticker update's counts; ``as_dict`` names the read/added/unchanged ones after
    ``NOUN`` (``items_added``, ``posts_added``)."""

    NOUN: ClassVar[str] = "items"
    provider: str
    tickers_requested: int = 0
    tickers_updated: int = 0
    read: int = 0
    added: int = 0
    unchanged: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    calls: int = 0
    cost_usd: float = 0.0
    budget_exceeded: bool = False
    warning: str = ""
    ingestion_run: int | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        noun = self.NOUN
        return {
            "provider": self.provider, "tickers_requested": self.tickers_requested,
            "tickers_updated": self.tickers_updated, f"{noun}_read": self.read, f"{noun}_added": self.added,
            f"{noun}_unchanged": self.unchanged, "failed": dict(sorted(self.failed.items())),
            "skipped": sorted(self.skipped), "calls": self.calls, "cost_usd": round(self.cost_usd, 6),
            "budget_exceeded": self.budget_exceeded, "warning": self.warning,
            "ingestion_run": self.ingestion_run, "seconds": round(self.seconds, 3),
        }


def update_each_ticker(*, kind: str, summary: TickerUpdateSummary, provider: MeteredProvider, symbols: list[str],
                       fetch: Callable[[str], pd.DataFrame], store: Callable[[str, pd.DataFrame], Any],
                       started: float, progress: Progress | None = None) -> TickerUpdateSummary:
    """Fetch and store ``symbols`` one by one under an IngestionRun of ``kind``: ``fetch(symbol)`` asks
    the provider, ``store(symbol, frame)`` keeps what is new and returns its counts (``inserted``,
    ``existing``). A failed request is that ticker's, the others go on; the budget spent or the day's
    requests used up stops the update, the rest skipped. What was paid for is recorded, whatever happened."""
    key = summary.provider
    summary.tickers_requested = len(symbols)
    run = IngestionRun.objects.create(kind=kind, source=key)
    summary.ingestion_run = run.id
    with failure_recorded(run, started=started):
        for index, symbol in enumerate(symbols):
            try:
                frame = fetch(symbol)
            except BudgetExceededError as exc:
                summary.budget_exceeded, summary.warning = True, str(exc)
                summary.skipped = symbols[index:]
                logger.warning(summary.warning)
                break
            except ProviderError as exc:
                summary.failed[symbol] = provider.failure(exc)
                if warning := provider.daily_limit_reached():
                    summary.warning, summary.skipped = warning, symbols[index + 1:]
                    logger.warning(summary.warning)
                    break
                continue
            finally:
                summary.calls, summary.cost_usd = provider.record_calls()
            summary.read += len(frame)
            if frame.empty:
                continue
            counts = store(symbol, frame)
            summary.added += counts.inserted
            summary.unchanged += counts.existing
            summary.tickers_updated += 1 if counts.inserted else 0
            if (index + 1) % 25 == 0:
                say(progress, f"{key}: {index + 1}/{len(symbols)} tickers, {summary.added} new {summary.NOUN}")
    summary.seconds = time.perf_counter() - started
    notes = [summary.warning] if summary.warning else []
    if summary.failed:
        notes.append(f"{len(summary.failed)} tickers failed: " + "; ".join(sorted(summary.failed)[:200]))
    run_succeeded(run, seconds=summary.seconds, rows_read=summary.read, rows_loaded=summary.added,
                  rows_unchanged=summary.unchanged, tickers=summary.tickers_updated,
                  error="\n".join(notes)[:ERROR_MAX])
    return summary
