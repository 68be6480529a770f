"""Scheduled data refreshes beside the daily bars: fundamentals on a weekly cycle, news every day.

**Fundamentals** (``refresh_fundamentals``, beat: ``features.refresh_fundamentals`` daily). Each active
ticker is refreshed from ``ML_FUNDAMENTALS_PROVIDER`` (a provider with a fundamentals endpoint:
``alphavantage``, its ``OVERVIEW``) once every ``ML_FUNDAMENTALS_REFRESH_DAYS`` (7) days. A day's
run takes the tickers that are due (last refreshed that many days ago or more, oldest first) and
then tickers never refreshed, up to the day's share of the universe (universe / cycle days, rounded
up: the first cycle spreads over the week, a missed day is caught up the next) and never more than
the provider's remaining daily request quota (counted across workers and runs, as price updates
count it) or ``ML_FUNDAMENTALS_MAX_REQUESTS_PER_DAY``. One request per ticker, metered as cost
records and stopped by the daily/monthly cost limit like every provider request. A ticker the
provider cannot answer (unknown to it, an unreadable reply) waits a cycle; after a transient failure
it is tried again the next day.

Point in time: a snapshot is stored with ``as_of`` = the New York date it was fetched, the day its
values became known (as a snapshot file's date), so features use it from the next bar on (the
feature engine joins the latest snapshot dated strictly before each bar). A second fetch on the same
day replaces that day's values; earlier snapshots are never changed.

**News** (``refresh_news``, beat: ``features.update_news`` daily): when ``ML_NEWS_PROVIDER`` names a
provider with a news endpoint (``alphavantage``: ``NEWS_SENTIMENT``), the active tickers' new
headlines are fetched, scored and stored (``features.services.news.update_news``, metered and
rate-limited the same way); without one the task does nothing and says why.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from features.fundamentals import overview_snapshot
from features.models import FundamentalSnapshot, IngestionRun, Ticker
from features.providers import PROVIDERS
from features.providers.base import BAD_RESPONSE, NOT_FOUND, BudgetExceededError, ProviderError
from features.services.ingestion import MAX_REJECTED_ROWS_STORED
from features.services.ingestion_runs import ERROR_MAX, Progress, failure_recorded, run_succeeded, say
from features.services.news import update_news
from features.services.provider_updates import MeteredProvider
from features.trading_calendar import MARKET_TZ

FUNDAMENTALS_PROVIDER_ENV = "ML_FUNDAMENTALS_PROVIDER"
NEWS_PROVIDER_ENV = "ML_NEWS_PROVIDER"
DEFAULT_REFRESH_DAYS = 7
FIELDS = ("price", "pe_ratio", "eps", "market_cap", "dividend_yield", "sector")
PERMANENT_FAILURES = (NOT_FOUND, BAD_RESPONSE)  # retried next cycle; other failures the next day


def _capable(key: str, *, what: str, flag: str, env: str) -> type:
    cls = PROVIDERS.get(key)
    if cls is None or not getattr(cls, flag, False):
        capable = sorted(name for name, c in PROVIDERS.items() if getattr(c, flag, False))
        raise ValueError(f"{env}={key!r}: not a provider with a {what} endpoint (use one of: {', '.join(capable)})")
    return cls


# Fundamentals -------------------------------------------------------------------------------------
@dataclass
class FundamentalsRefreshSummary:
    provider: str
    as_of: date | None = None
    cycle_days: int = DEFAULT_REFRESH_DAYS
    universe: int = 0
    due: int = 0  # last refreshed a cycle ago or more
    never_refreshed: int = 0
    planned: int = 0  # the day's share of the universe (or the configured cap)
    quota_left: int | None = None  # the provider's remaining requests today before this run (None: no cap)
    requested: list[str] = field(default_factory=list)
    refreshed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # ticker -> "reason: message"
    deferred: int = 0  # wanted today, left for the next runs (share or quota)
    rows_loaded: int = 0
    rows_updated: int = 0
    calls: int = 0
    cost_usd: float = 0.0
    warning: str = ""
    skipped: str = ""  # why nothing was attempted (no provider configured)
    ingestion_run: int | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider, "as_of": self.as_of.isoformat() if self.as_of else None,
            "cycle_days": self.cycle_days, "universe": self.universe, "due": self.due,
            "never_refreshed": self.never_refreshed, "planned": self.planned, "quota_left": self.quota_left,
            "requested": len(self.requested), "refreshed": sorted(self.refreshed),
            "failed": dict(sorted(self.failed.items())), "deferred": self.deferred,
            "rows_loaded": self.rows_loaded, "rows_updated": self.rows_updated, "calls": self.calls,
            "cost_usd": round(self.cost_usd, 6), "warning": self.warning, "skipped": self.skipped,
            "ingestion_run": self.ingestion_run, "seconds": round(self.seconds, 3),
        }


def _last_attempts(*, provider: str, tickers: list[str], since: date) -> dict[str, date]:
    """Per ticker, the New York date of its latest snapshot from ``provider``, or of a refresh since
    ``since`` that failed for good (unknown ticker, unreadable reply): a ticker the provider cannot
    answer waits for the next cycle instead of taking a request every day. A transient failure
    (timeout, 5xx, rate limit) does not count: the ticker is tried again the next day."""
    last = dict(
        FundamentalSnapshot.objects.filter(source=provider, ticker__symbol__in=tickers)
        .values("ticker__symbol").annotate(last=Max("as_of")).values_list("ticker__symbol", "last")
    )
    runs = IngestionRun.objects.filter(kind=IngestionRun.Kind.FUNDAMENTALS, source=provider,
                                       started_at__date__gte=since - timedelta(days=1), rows_rejected__gt=0)
    wanted = set(tickers)
    for rows in runs.values_list("rejected_rows", flat=True):
        for row in rows or []:
            ticker, when = row.get("ticker"), row.get("as_of")
            if ticker in wanted and row.get("reason") in PERMANENT_FAILURES and when:
                day = date.fromisoformat(when)
                if day >= since and (ticker not in last or day > last[ticker]):
                    last[ticker] = day
    return last


def fundamentals_plan(*, last: dict[str, date], tickers: list[str], today: date, cycle_days: int,
                      per_day: int | None) -> tuple[list[str], int, int]:
    """The tickers to refresh today, in order: the due ones (last refreshed ``cycle_days`` ago or
    more), oldest first, then the never refreshed, alphabetically, up to the day's share (at least
    every due ticker: a missed day is caught up); ``per_day`` caps the list. Returns (tickers, due
    count, never-refreshed count); the caller cuts the list to the provider's remaining quota."""
    due = sorted((last[t], t) for t in tickers if t in last and (today - last[t]).days >= cycle_days)
    never = sorted(t for t in tickers if t not in last)
    share = per_day if per_day is not None else math.ceil(len(tickers) / cycle_days)
    chosen = [t for _, t in due] + never[: max(0, share - len(due))]
    if per_day is not None:
        chosen = chosen[:per_day]
    return chosen, len(due), len(never)


def _store_snapshot(*, ticker_id: int, as_of: date, values: dict[str, Any], source: str) -> str:
    """Insert or replace the (ticker, as_of) snapshot; returns "loaded", "updated" or "unchanged"."""
    with transaction.atomic():
        current = FundamentalSnapshot.objects.select_for_update().filter(ticker_id=ticker_id, as_of=as_of).first()
        if current is None:
            FundamentalSnapshot.objects.create(ticker_id=ticker_id, as_of=as_of, source=source, **values)
            return "loaded"
        if all(getattr(current, f) == values[f] for f in FIELDS) and current.source == source:
            return "unchanged"
        for name, value in values.items():
            setattr(current, name, value)
        current.source = source
        current.save(update_fields=[*FIELDS, "source"])
        return "updated"


def refresh_fundamentals(*, provider: str | None = None, tickers: list[str] | None = None,
                         now: datetime | None = None, progress: Progress | None = None) -> FundamentalsRefreshSummary:
    """Refresh the day's share of the universe's fundamentals from ``provider`` (default
    ``ML_FUNDAMENTALS_PROVIDER``; none configured: nothing is done and ``skipped`` says why).
    ``tickers`` default to the active ones; ``now`` (tests) the current time."""
    started = time.perf_counter()
    key = (provider if provider is not None else settings.ML_FUNDAMENTALS_PROVIDER).strip().lower()
    summary = FundamentalsRefreshSummary(provider=key)
    if not key:
        summary.skipped = f"no fundamentals provider configured ({FUNDAMENTALS_PROVIDER_ENV})"
        return summary
    cls = _capable(key, what="fundamentals", flag="supports_fundamentals", env=FUNDAMENTALS_PROVIDER_ENV)
    cycle_days = settings.ML_FUNDAMENTALS_REFRESH_DAYS
    cap = settings.ML_FUNDAMENTALS_MAX_REQUESTS_PER_DAY or None
    now = now or timezone.now()
    quota_day = timezone.localdate(now)  # the day provider limits and cost records are counted by
    as_of = now.astimezone(MARKET_TZ).date()  # the day the values become known, New York time
    summary.as_of, summary.cycle_days = as_of, cycle_days

    metered = MeteredProvider(cls, key=key, day=quota_day)
    symbols = (sorted({t.strip().upper() for t in tickers if t.strip()}) if tickers is not None
               else list(Ticker.objects.filter(active=True).order_by("symbol").values_list("symbol", flat=True)))
    summary.universe = len(symbols)
    last = _last_attempts(provider=key, tickers=symbols, since=as_of - timedelta(days=cycle_days))
    plan, summary.due, summary.never_refreshed = fundamentals_plan(
        last=last, tickers=symbols, today=as_of, cycle_days=cycle_days, per_day=cap)
    summary.planned = len(plan)
    summary.quota_left = metered.limiter.remaining_today()
    todo = plan if summary.quota_left is None else plan[: summary.quota_left]
    summary.deferred = len(plan) - len(todo)
    if summary.deferred:
        summary.warning = (f"{key}: {summary.quota_left} requests left today of {metered.config.requests_per_day}; "
                           f"{summary.deferred} tickers wait for the next runs")
    if not todo:
        say(progress, f"{key} fundamentals: nothing to refresh today ({summary.due} due, "
            f"{summary.never_refreshed} never refreshed, quota left {summary.quota_left})")
        summary.seconds = time.perf_counter() - started
        return summary

    run = IngestionRun.objects.create(kind=IngestionRun.Kind.FUNDAMENTALS, source=key)
    summary.ingestion_run = run.id
    ids = dict(Ticker.objects.filter(symbol__in=todo).values_list("symbol", "id"))
    with failure_recorded(run, started=started):
        for index, symbol in enumerate(todo):
            summary.requested.append(symbol)
            try:
                payload = metered.source.fetch_fundamentals(symbol)
            except BudgetExceededError as exc:
                summary.warning = str(exc)
                summary.deferred += len(todo) - index
                summary.requested.pop()
                break
            except ProviderError as exc:
                summary.failed[symbol] = metered.failure(exc)
                if warning := metered.daily_limit_reached():
                    summary.warning = warning
                    summary.deferred += len(todo) - index - 1
                    break
                continue
            finally:  # paid for: recorded even if storing fails
                summary.calls, summary.cost_usd = metered.record_calls()
            if symbol not in ids:  # a ticker passed by name that is not in the universe
                ids[symbol] = Ticker.objects.get_or_create(symbol=symbol)[0].id
            outcome = _store_snapshot(ticker_id=ids[symbol], as_of=as_of, values=overview_snapshot(payload),
                                      source=key)
            summary.rows_loaded += int(outcome == "loaded")
            summary.rows_updated += int(outcome == "updated")
            summary.refreshed.append(symbol)
            say(progress, f"{key} fundamentals: {symbol} as of {as_of} ({index + 1}/{len(todo)})")
    summary.seconds = time.perf_counter() - started
    notes = [summary.warning] if summary.warning else []
    if summary.failed:
        notes.append(f"{len(summary.failed)} tickers failed: " + "; ".join(
            f"{t}: {m}" for t, m in sorted(summary.failed.items())[:200]))
    run_succeeded(
        run, seconds=summary.seconds, rows_read=len(summary.refreshed), rows_loaded=summary.rows_loaded,
        rows_updated=summary.rows_updated,
        rows_unchanged=len(summary.refreshed) - summary.rows_loaded - summary.rows_updated,
        rows_rejected=len(summary.failed), rejected_by_reason=_by_reason(summary.failed),
        rejected_rows=[{"ticker": t, "reason": m.split(":", 1)[0], "as_of": as_of.isoformat(), "message": m}
                       for t, m in sorted(summary.failed.items())][:MAX_REJECTED_ROWS_STORED],
        tickers=len(summary.refreshed), error="\n".join(notes)[:ERROR_MAX])
    say(progress, f"{key} fundamentals as of {as_of}: {len(summary.refreshed)} refreshed, {len(summary.failed)} "
        f"failed, {summary.deferred} deferred; {summary.calls} calls, ${summary.cost_usd:.4f}")
    return summary


def _by_reason(failed: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for message in failed.values():
        reason = message.split(":", 1)[0]
        out[reason] = out.get(reason, 0) + 1
    return dict(sorted(out.items()))


# News ---------------------------------------------------------------------------------------------
def refresh_news(*, progress: Progress | None = None) -> dict[str, Any]:
    """The day's news from ``ML_NEWS_PROVIDER`` for the active tickers; ``{"skipped": why}`` when no
    news provider is configured."""
    key = settings.ML_NEWS_PROVIDER
    if not key:
        return {"skipped": f"no news provider configured ({NEWS_PROVIDER_ENV})"}
    _capable(key, what="news", flag="supports_news", env=NEWS_PROVIDER_ENV)
    return update_news(provider=key, progress=progress).as_dict()
