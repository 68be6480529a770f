"""Daily market-data updates from the data providers, and the universe sync.

``update_market_data`` is the first stage of the daily pipeline. For each ticker it asks the
provider only for bars after the last stored one, validates them like a price file (bad rows are
rejected with their reason), merges them through the ingestion merge path and records one
``IngestionRun``. Every HTTP request becomes a ``data_api`` cost record, and the day's tracked
cost (all categories) is checked against ``ML_DAILY_COST_LIMIT_USD`` before every request.

Efficiency rules (the free Alpha Vantage tier allows 25 requests a day):

* **freshness**: a ticker whose last stored bar is the last completed trading day (NYSE calendar,
  a day counts as complete from 18:00 New York time) is not requested at all;
* **freshness check**: when the remaining tickers all stopped at the same day, the one with the
  newest bar is requested first; if the provider has nothing after it, the provider has not
  published the next day yet and the others are skipped. A second update on the same day
  therefore makes no request, or exactly one when the provider lags the calendar;
* **incremental**: a request asks only for the dates from the last stored bar on (Stooq
  ``d1``, Tiingo ``startDate``, Alpha Vantage ``outputsize=compact`` when that is within 100
  days). The last stored bar is asked for again on purpose: comparing it with the stored copy
  reveals a split or dividend after it, and then the stored history is rescaled by the same ratio
  (no extra request, no re-download of the history);
* bars of a day that has not closed yet (Alpha Vantage returns the current day while the market is
  open) are not stored, so tomorrow's update fetches the final bar;
* the per-day request limit is counted from today's cost records, so it holds across runs;
* tickers are processed in chunks: bars and cost records are written after every chunk, so an
  interrupted run keeps what it paid for.

The universe: ``sync_universe`` upserts the exchanges' symbol directories into ``Ticker`` and
marks listed-before tickers that left the directory inactive (never deleted: their bars stay).
"""

from __future__ import annotations

import gzip
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
from django.conf import settings
from django.db import transaction
from django.db.models import BigIntegerField, ExpressionWrapper, F, FloatField, Max, Value
from django.db.models.functions import Cast, Round
from django.utils import timezone

from features.common import chunked
from features.models import CorporateAction, IngestionRun, PriceBar, Ticker
from features.pricefiles import ParsedPrices, parse_price_frame
from features.providers import PROVIDERS, FileDropProvider, ProviderConfig
from features.providers.base import (
    NOT_FOUND,
    RATE_LIMITED,
    BadResponseError,
    BudgetExceededError,
    CallRecord,
    DailyBudget,
    HttpProvider,
    NotFoundError,
    PriceProvider,
    ProviderError,
    SharedBudget,
    UpdateResult,
    update_prices,
)
from features.providers.http import HttpResponse
from features.providers.polygon import PolygonProvider, dividend_adjusted_close
from features.services.ingestion import MAX_REJECTED_ROWS_STORED, ensure_tickers, merge_bars
from features.services.ingestion_runs import failure_recorded
from features.services.limits import shared_budget, shared_limiter
from features.universe import load_universe, parse_symbol_directory
from investml.ledger import cost_for_day, record_api_calls

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

PROVIDER_NAMES = ("alphavantage", "stooq", "tiingo", "polygon", "files")
DEFAULT_PROVIDER = "files"
PROVIDER_ENV = "ML_MARKET_DATA_PROVIDER"
KEYED_PROVIDERS = ("alphavantage", "tiingo", "polygon")  # Stooq needs no key
CHUNK_TICKERS = 50
BULK_MAX_GAP_DAYS = 31  # calendar days a ticker may lag the universe's newest bar in a bulk update
BULK_GAP_QUANTILE = 0.1  # the share of stale tickers that may lag and still set the bulk window
MARKET_TZ = ZoneInfo("America/New_York")
DATA_READY = dtime(18, 0)  # New York time from which a trading day's bar counts as final
RESCALE_TOLERANCE = 1e-9
NASDAQTRADER_DEFAULT_URL = "https://www.nasdaqtrader.com/dynamic/SymDir"
SYMBOL_DIRECTORY_FILES = ("nasdaqlisted.txt", "otherlisted.txt")


def _log(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)
    else:
        logger.info(message)


# Trading calendar ----------------------------------------------------------------------------------
@lru_cache(maxsize=128)
def _holidays_of(year: int) -> frozenset[date]:
    try:  # ``holidays`` comes with prophet (requirements/base.txt); weekends only without it
        import holidays as holidays_lib

        return frozenset(holidays_lib.financial_holidays("NYSE", years=year).keys())
    except Exception:  # pragma: no cover - package missing or without the NYSE calendar
        return frozenset()


def trading_holidays(*, years: Iterable[int]) -> list[date]:
    """NYSE full-day closures of ``years`` (holidays and special closings)."""
    return sorted(d for year in set(years) for d in _holidays_of(year))


def is_trading_day(day: date) -> bool:
    return day.weekday() < 5 and day not in _holidays_of(day.year)


def last_completed_trading_day(*, now: datetime | None = None) -> date:
    """The newest NYSE trading day whose bar is final at ``now`` (from 18:00 New York time).

    A naive ``now`` is read as New York time.
    """
    now = now or timezone.now()
    local = now.astimezone(MARKET_TZ) if now.tzinfo is not None else now.replace(tzinfo=MARKET_TZ)
    day = local.date()
    if is_trading_day(day) and local.time() >= DATA_READY:
        return day
    day -= timedelta(days=1)
    while not is_trading_day(day):
        day -= timedelta(days=1)
    return day


# Providers -----------------------------------------------------------------------------------------
def default_provider_name() -> str:
    """``ML_MARKET_DATA_PROVIDER`` (setting or environment), else ``files`` (the bundled sample)."""
    name = getattr(settings, PROVIDER_ENV, "") or os.environ.get(PROVIDER_ENV, "")
    return name.strip().lower() or DEFAULT_PROVIDER


def provider_limits(name: str) -> dict[str, Any]:
    """The ``providers.<name>`` section of the pipeline config; 0 requests per minute/day = no limit."""
    limits = dict(settings.PIPELINE_CONFIG.get("providers", {}).get(name, {}))
    for key in ("requests_per_minute", "requests_per_day"):
        if key in limits and not limits[key]:
            limits[key] = None
    if limits.get("requests_per_day") is not None:
        limits["requests_per_day"] = int(limits["requests_per_day"])
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


# Summary -------------------------------------------------------------------------------------------
@dataclass
class UpdateSummary:
    provider: str
    as_of: date | None = None  # the last completed trading day the update aimed for
    tickers_requested: int = 0
    tickers_fresh: int = 0  # already up to date: not requested
    tickers_checked: int = 0  # requested from the provider
    tickers_updated: int = 0  # got at least one new bar
    rows_read: int = 0
    rows_added: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0
    rows_rejected: int = 0
    rows_not_final: int = 0  # bars of a day not closed yet: not stored
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    history_rescaled: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # ticker -> "reason: message"
    failed_reasons: dict[str, str] = field(default_factory=dict)  # ticker -> reason code
    skipped: list[str] = field(default_factory=list)  # not requested: budget or daily quota used up
    calls: int = 0
    bytes: int = 0
    cost_usd: float = 0.0
    spent_today_usd: float = 0.0
    limit_usd: float = 0.0
    budget_exceeded: bool = False
    warning: str = ""
    ingestion_run: int | None = None
    seconds: float = 0.0
    _updated: set[str] = field(default_factory=set, repr=False)

    @property
    def failed_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for reason in self.failed_reasons.values():
            counts[reason] = counts.get(reason, 0) + 1
        return dict(sorted(counts.items()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "tickers_requested": self.tickers_requested,
            "tickers_fresh": self.tickers_fresh,
            "tickers_checked": self.tickers_checked,
            "tickers_updated": self.tickers_updated,
            "rows_read": self.rows_read,
            "rows_added": self.rows_added,
            "rows_updated": self.rows_updated,
            "rows_unchanged": self.rows_unchanged,
            "rows_rejected": self.rows_rejected,
            "rows_not_final": self.rows_not_final,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "history_rescaled": sorted(self.history_rescaled),
            "failed": dict(sorted(self.failed.items())),
            "failed_by_reason": self.failed_by_reason,
            "skipped": sorted(self.skipped),
            "calls": self.calls,
            "bytes": self.bytes,
            "cost_usd": round(self.cost_usd, 6),
            "spent_today_usd": round(self.spent_today_usd, 6),
            "limit_usd": self.limit_usd,
            "budget_exceeded": self.budget_exceeded,
            "warning": self.warning,
            "ingestion_run": self.ingestion_run,
            "seconds": round(self.seconds, 3),
        }


# Reads used by the update (kept private: features/selectors.py belongs to the feature store) -------
def _last_bar_dates(symbols: list[str]) -> dict[str, date]:
    """Last stored bar per ticker, in one aggregate query."""
    rows = PriceBar.objects.values("ticker__symbol").annotate(last=Max("date"))
    if len(symbols) <= 500:
        rows = rows.filter(ticker__symbol__in=symbols)
    wanted = set(symbols)
    return {r["ticker__symbol"]: r["last"] for r in rows if r["ticker__symbol"] in wanted}


def _default_tickers(provider: PriceProvider) -> list[str]:
    active = list(Ticker.objects.filter(active=True).order_by("symbol").values_list("symbol", flat=True))
    if isinstance(provider, FileDropProvider):
        # A file drop holds what it holds: every ticker in it that is not marked inactive.
        inactive = set(Ticker.objects.filter(active=False).values_list("symbol", flat=True))
        return [s for s in provider.symbols() if s not in inactive]
    return active


def _normalize(tickers: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(t.strip().upper() for t in tickers if t and t.strip()))


# Storing -------------------------------------------------------------------------------------------
def _rescale_history(*, bars: pd.DataFrame, actions: pd.DataFrame, last: dict[str, date],
                     ticker_ids: dict[str, int], split_aware: set[str]) -> list[str]:
    """Rescale stored bars before each ticker's re-fetched last bar when the provider's copy of that
    bar differs by a split or dividend ratio. Runs before the merge (which then updates that bar)."""
    if bars.empty or not last:
        return []
    overlap = bars[bars["date"] == bars["ticker"].map(last)]
    if overlap.empty:
        return []
    ids = [ticker_ids[t] for t in overlap["ticker"].unique()]
    stored = {
        (tid, day): (close, adj)
        for tid, day, close, adj in PriceBar.objects.filter(
            ticker_id__in=ids, date__in=set(overlap["date"])
        ).values_list("ticker_id", "date", "close", "adj_close")
    }
    split_after: set[str] = set()
    if not actions.empty:
        splits = actions[actions["kind"] == "split"]
        split_after = {t for t, d in zip(splits["ticker"], splits["date"], strict=True) if t in last and d > last[t]}
    rescaled = []
    for row in overlap.itertuples(index=False):
        tid = ticker_ids[row.ticker]
        old = stored.get((tid, row.date))
        if old is None or not old[0] or not old[1]:
            continue
        price_ratio = row.close / old[0]
        adj_ratio = row.adj_close / old[1]
        updates: dict[str, Any] = {}
        # With split coefficients in the reply, only a split moves raw prices; without them
        # (Stooq adjusts its whole series) any change of the last bar's close is an adjustment.
        if abs(price_ratio - 1.0) > RESCALE_TOLERANCE and (row.ticker not in split_aware or row.ticker in split_after):
            for column in ("open", "high", "low", "close"):
                updates[column] = F(column) * Value(price_ratio)
            updates["volume"] = Cast(
                Round(ExpressionWrapper(F("volume") * Value(1.0 / price_ratio), output_field=FloatField())),
                output_field=BigIntegerField(),
            )
        if abs(adj_ratio - 1.0) > RESCALE_TOLERANCE:
            updates["adj_close"] = F("adj_close") * Value(adj_ratio)
        if updates:
            count = PriceBar.objects.filter(ticker_id=tid, date__lt=row.date).update(**updates)
            logger.info("%s: rescaled %d stored bars (prices x%.6f, adjusted close x%.6f)",
                        row.ticker, count, price_ratio if "close" in updates else 1.0, adj_ratio)
            rescaled.append(row.ticker)
    return rescaled


def _parse_frames(frames: dict[str, pd.DataFrame], *, source: str, today: date) -> ParsedPrices:
    parts = [f.assign(ticker=symbol) for symbol, f in frames.items() if not f.empty]
    raw = pd.concat(parts, ignore_index=True)
    return parse_price_frame(raw, source=Path(f"{source}.update"), today=today)


def _store(*, parsed: ParsedPrices, last: dict[str, date], source: str, split_aware: set[str],
           summary: UpdateSummary) -> None:
    """Merge validated bars (rescaling stored history first when needed) and add to the summary."""
    bars = parsed.bars
    summary.rows_read += parsed.rows_read
    summary.rows_rejected += len(parsed.rejected)
    for reason, count in parsed.rejected_by_reason.items():
        summary.rejected_by_reason[reason] = summary.rejected_by_reason.get(reason, 0) + count
    if bars.empty:
        return
    with transaction.atomic():
        ticker_ids = ensure_tickers(symbols=bars["ticker"].unique().tolist())
        summary.history_rescaled += _rescale_history(
            bars=bars, actions=parsed.actions, last=last, ticker_ids=ticker_ids, split_aware=split_aware
        )
        inserted, updated, unchanged = merge_bars(parsed=parsed, source=source)
    summary.rows_added += inserted
    summary.rows_updated += updated
    summary.rows_unchanged += unchanged
    newest = bars.groupby("ticker")["date"].max()
    summary._updated |= {t for t, d in newest.items() if t not in last or d > last[t]}


def _fetch_files(provider: FileDropProvider, symbols: list[str], since: dict[str, date | None],
                 explicit: bool) -> tuple[ParsedPrices, dict[str, str]]:
    """All requested tickers' rows from the file drop in one pass (no per-ticker scans)."""
    bars = provider.load_all()
    rows_in_files = len(bars)
    bars = bars[bars["ticker"].isin(symbols)]
    bars = bars.drop_duplicates(["ticker", "date"], keep="last")
    days = pd.to_datetime(bars["date"])
    floor = pd.to_datetime(bars["ticker"].map(since))  # NaT for tickers with no stored bar
    bars = bars[floor.isna().to_numpy() | (days > floor).to_numpy()]
    bars = bars.sort_values(["ticker", "date"], kind="stable").reset_index(drop=True)
    missing: dict[str, str] = {}
    if explicit:
        present = set(bars["ticker"]) | {s for s in symbols if since.get(s) is not None}
        missing = {s: f"{NOT_FOUND}: no rows for this ticker in {provider.folder}" for s in symbols if s not in present}
    logger.debug("file drop %s: %d rows in files, %d new", provider.folder, rows_in_files, len(bars))
    parsed = ParsedPrices(
        bars=bars[["ticker", "date", "open", "high", "low", "close", "adj_close", "volume"]],
        rejected=pd.DataFrame({"line": [], "ticker": [], "date": [], "reason": []}),
        actions=pd.DataFrame({"ticker": [], "date": [], "kind": [], "value": []}),
        rows_read=len(bars),
        tickers=sorted(bars["ticker"].unique().tolist()),
    )
    return parsed, missing


class _Stop(Exception):
    def __init__(self, message: str, *, budget: bool = False) -> None:
        self.message = message
        self.budget = budget
        super().__init__(message)


def _is_quota_failure(reason: str, message: str) -> bool:
    low = message.lower()
    return reason == RATE_LIMITED and ("daily request limit" in low or "daily quota" in low or "daily hits" in low
                                       or "allocation" in low)


def update_market_data(
    *,
    provider: str | None = None,
    tickers: list[str] | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
    chunk_size: int = CHUNK_TICKERS,
) -> UpdateSummary:
    """Fetch and store the new daily bars of ``tickers`` (default: the active tickers; for ``files``
    every ticker in the drop that is not inactive) from ``provider`` (default
    ``default_provider_name()``). One ticker's failure does not stop the others; a used-up budget or
    daily request quota stops the run (``summary.warning``). ``now`` is for tests."""
    started = time.perf_counter()
    name = (provider or default_provider_name()).strip()
    as_of = last_completed_trading_day(now=now)
    moment = now or timezone.now()
    today = (moment.astimezone(MARKET_TZ) if moment.tzinfo is not None else moment).date()
    source = name.lower() if not name.lower().startswith("files:") else "files"
    source_obj = build_provider(name=name, today=today)
    summary = UpdateSummary(provider=source, as_of=as_of, limit_usd=float(settings.ML_DAILY_COST_LIMIT_USD),
                            spent_today_usd=float(cost_for_day(day=timezone.localdate())))
    is_http = isinstance(source_obj, HttpProvider)

    explicit = tickers is not None
    symbols = _normalize(tickers) if explicit else _default_tickers(source_obj)
    summary.tickers_requested = len(symbols)
    run = IngestionRun.objects.create(
        kind=IngestionRun.Kind.PRICES, source=source,
        file=str(getattr(source_obj, "folder", "")) if not is_http else "",
    )
    summary.ingestion_run = run.id
    rejected_rows: list[dict[str, Any]] = []
    with failure_recorded(run, started=started):
        last = _last_bar_dates(symbols)
        if isinstance(source_obj, PolygonProvider):
            _update_bulk(source_obj, symbols, last, as_of, today, summary, rejected_rows, progress)
        elif is_http:
            _update_http(source_obj, symbols, last, as_of, today, summary, rejected_rows, progress, chunk_size)
        else:
            since = {s: last.get(s) for s in symbols}
            parsed, missing = _fetch_files(source_obj, symbols, since, explicit)
            for symbol, message in missing.items():
                summary.failed[symbol] = message
                summary.failed_reasons[symbol] = NOT_FOUND
            summary.tickers_checked = len(symbols)
            _log(progress, f"{source}: {len(parsed.bars):,} new rows for {len(parsed.tickers)} tickers "
                 f"in {source_obj.folder}")
            _store(parsed=parsed, last=last, source=source, split_aware=set(), summary=summary)
            # Rows the file parser rejected (per file, whatever their date): reported, not stored.
            for reasons in source_obj.rejected.values():
                for reason, count in reasons.items():
                    summary.rejected_by_reason[reason] = summary.rejected_by_reason.get(reason, 0) + count
                    summary.rows_rejected += count
    summary.tickers_updated = len(summary._updated)
    summary.seconds = time.perf_counter() - started
    run.status = IngestionRun.Status.SUCCEEDED
    run.rows_read, run.rows_loaded, run.rows_updated = summary.rows_read, summary.rows_added, summary.rows_updated
    run.rows_unchanged, run.rows_rejected = summary.rows_unchanged, summary.rows_rejected
    run.rejected_by_reason = dict(sorted(summary.rejected_by_reason.items()))
    run.rejected_rows = rejected_rows[:MAX_REJECTED_ROWS_STORED]
    run.tickers = summary.tickers_updated
    notes = []
    if summary.warning:
        notes.append(f"{summary.warning}; {len(summary.skipped)} tickers skipped")
    if summary.failed:
        listed = "; ".join(f"{t} ({r})" for t, r in sorted(summary.failed_reasons.items())[:200])
        notes.append(f"{len(summary.failed)} tickers failed: {listed}")
    run.error = "\n".join(notes)[:5000]
    run.finished_at, run.duration_seconds = timezone.now(), summary.seconds
    run.save()
    return summary


def _update_http(provider: HttpProvider, symbols: list[str], last: dict[str, date], as_of: date, today: date,
                 summary: UpdateSummary, rejected_rows: list[dict[str, Any]], progress: Progress | None,
                 chunk_size: int) -> None:
    name = provider.name
    stale, budget = _stale_and_budget(provider, symbols, last, as_of, summary, progress)
    if budget is None:
        return
    day = timezone.localdate()

    # Ask for the last stored bar again (see the module docstring): since = the day before it.
    since = {s: (last[s] - timedelta(days=1)) if s in last else None for s in stale}
    split_aware: set[str] = set()
    handled: set[str] = set()

    def run_chunk(chunk: list[str]) -> UpdateResult:
        handled.update(chunk)
        calls: list[CallRecord] = []
        try:
            result = update_prices(provider, chunk, since_by_symbol=since, budget=budget, on_call=calls.append)
        finally:  # what was paid for is recorded, whatever happened
            record_api_calls(records=calls, day=day)
            summary.calls += len(calls)
            summary.cost_usd += sum(r.cost_usd for r in calls)
            summary.bytes += sum(r.bytes for r in calls)
        summary.tickers_checked += len([s for s in chunk if s not in result.skipped])
        frames: dict[str, pd.DataFrame] = {}
        for symbol, frame in result.frames.items():
            if "split_coefficient" in frame.columns:
                split_aware.add(symbol)
            final = frame[frame["date"] <= pd.Timestamp(as_of)]
            summary.rows_not_final += len(frame) - len(final)
            frames[symbol] = final
        quota = []
        for symbol, message in result.failed.items():
            reason = result.failed_reasons.get(symbol, "")
            if symbol in result.skipped:
                continue
            if _is_quota_failure(reason, message):
                quota.append(symbol)
                continue
            summary.failed[symbol] = message
            summary.failed_reasons[symbol] = reason
        if any(not f.empty for f in frames.values()):
            parsed = _parse_frames(frames, source=name, today=today)
            rejected_rows.extend(
                {"line": None, "ticker": r.ticker, "date": r.date, "reason": r.reason}
                for r in parsed.rejected.head(MAX_REJECTED_ROWS_STORED).itertuples(index=False)
            )
            _store(parsed=parsed, last=last, source=name, split_aware=split_aware, summary=summary)
        if result.skipped:  # the budget ran out inside this chunk
            summary.skipped.extend(result.skipped)
            raise _Stop(result.failed[result.skipped[0]], budget=True)
        used_up = provider.limiter.per_day is not None and provider.limiter.remaining_today() == 0
        if quota or (used_up and any(s not in handled for s in todo)):
            summary.skipped.extend(quota)
            detail = f" ({provider.limiter.per_day}/day)" if provider.limiter.per_day is not None else ""
            raise _Stop(f"{name}: daily request limit reached{detail}")
        return result

    todo = list(stale)
    try:
        # The freshness check: the stale ticker with the newest stored bar goes first, alone.
        with_history = [s for s in todo if s in last]
        if len(todo) > 1 and with_history:
            probe = max(with_history, key=lambda s: (last[s], s))
            todo.remove(probe)
            frame = run_chunk([probe]).frames.get(probe)
            if frame is not None:
                final = frame[frame["date"] <= pd.Timestamp(as_of)]
                newest = final["date"].max().date() if not final.empty else last[probe]
                if newest <= last[probe]:
                    behind = {s for s in todo if s in last and last[s] >= last[probe]}
                    todo = [s for s in todo if s not in behind]
                    summary.tickers_fresh += len(behind) + 1  # the checked ticker had nothing new either
                    _log(progress, f"{name}: freshness check on {probe}: nothing after {last[probe]} yet; "
                         f"{len(behind)} tickers at that day skipped")
        done = 0
        for chunk in chunked(todo, chunk_size):
            run_chunk(chunk)
            done += len(chunk)
            _log(progress, f"{name}: {done}/{len(todo)} tickers, "
                 f"{summary.rows_added:,} rows added, {len(summary.failed)} failed, {summary.calls} calls, "
                 f"${summary.cost_usd:.4f}")
    except _Stop as signal:
        _stop(summary, signal.message, [s for s in todo if s not in handled], budget=signal.budget)


def _stale_and_budget(provider: HttpProvider, symbols: list[str], last: dict[str, date], as_of: date,
                      summary: UpdateSummary, progress: Progress | None) -> tuple[list[str], SharedBudget | None]:
    """The tickers behind ``as_of`` and today's budget (None: nothing to do, or no budget left)."""
    stale = [s for s in symbols if not (s in last and last[s] >= as_of)]
    summary.tickers_fresh = len(symbols) - len(stale)
    budget = shared_budget()
    spent, limit = budget.spent_usd, budget.limit_usd
    summary.spent_today_usd, summary.limit_usd = spent, limit
    _log(progress, f"{provider.name}: {len(symbols)} tickers, {summary.tickers_fresh} already up to date with "
         f"{as_of}, {len(stale)} to update; ${spent:.2f} of ${limit:.2f} spent today")
    if not stale:
        return stale, None
    try:  # a look only, on a copy: ``budget.check`` would reserve the cost
        DailyBudget(limit, spent).check(provider.config.cost_per_call_usd)
    except BudgetExceededError as exc:
        _stop(summary, str(exc), stale, budget=True)
        return stale, None
    return stale, budget


def _update_bulk(provider: PolygonProvider, symbols: list[str], last: dict[str, date], as_of: date, today: date,
                 summary: UpdateSummary, rejected_rows: list[dict[str, Any]], progress: Progress | None) -> None:
    """The whole universe from one grouped-daily request per missing trading day, plus the splits
    and dividends of the gap (usually 3 requests for a daily update).

    Grouped bars are split-adjusted as of the request, so a split executed after a ticker's last
    stored bar rescales that stored history; a cash dividend going ex in the gap rescales the stored
    adjusted closes, and the new bars' adjusted closes are computed the same way (the last bar's
    adjusted close is its close). Each applied action is recorded as a ``CorporateAction`` in the
    same transaction, and an action already recorded is never applied again."""
    stale, budget = _stale_and_budget(provider, symbols, last, as_of, summary, progress)
    if budget is None:
        return
    # A few tickers far behind the others (delisted, halted) would make every daily update fetch
    # each day since their last bar: the window starts at the last bar of the 10th percentile of
    # the stale tickers (a gap most of the universe shares is filled; stragglers are not), never
    # more than BULK_MAX_GAP_DAYS back, and the tickers before it are left to a per-ticker backfill.
    known = sorted(last[s] for s in stale if s in last)
    if known:
        horizon = max(known[int(len(known) * BULK_GAP_QUANTILE)], known[-1] - timedelta(days=BULK_MAX_GAP_DAYS))
    else:
        horizon = as_of
    behind = sorted(s for s in stale if s in last and last[s] < horizon)
    left_behind = set(behind)
    if behind:
        summary.skipped.extend(behind)
        _log(progress, f"{provider.name}: {len(behind)} tickers more than {BULK_MAX_GAP_DAYS} days behind the "
             f"others (e.g. {', '.join(behind[:5])}) are left to a per-ticker backfill")
    stale = [s for s in stale if s not in left_behind]
    first = (min(last[s] for s in stale if s in last) + timedelta(days=1)) if any(s in last for s in stale) else as_of
    days = [d.date() for d in pd.date_range(first, as_of, freq="D") if is_trading_day(d.date())]
    wanted = set(stale)
    calls: list[CallRecord] = []
    saved = provider.on_call, provider.budget
    provider.on_call, provider.budget = calls.append, budget
    frames: list[pd.DataFrame] = []
    splits = dividends = None
    try:
        splits = provider.fetch_splits(start=first, end=today)
        dividends = provider.fetch_dividends(start=first, end=today)
        for i, day in enumerate(days, start=1):
            grouped = provider.fetch_grouped(day)
            frames.append(grouped[grouped["ticker"].isin(wanted)])
            summary.tickers_checked = len(wanted)
            _log(progress, f"{provider.name}: {day} {i}/{len(days)}: {len(grouped):,} bars in the market, "
                 f"{len(frames[-1]):,} for the universe; {len(calls)} requests")
    except ProviderError as exc:
        budget_hit = isinstance(exc, BudgetExceededError)
        fetched = len(frames)
        _stop(summary, f"{provider.name}: {exc.reason}: {provider.redact(str(exc))} after {fetched} of "
                       f"{len(days)} days", [] if fetched else stale, budget=budget_hit)
    finally:
        provider.on_call, provider.budget = saved
        record_api_calls(records=calls, day=timezone.localdate())
        summary.calls += len(calls)
        summary.cost_usd += sum(r.cost_usd for r in calls)
        summary.bytes += sum(r.bytes for r in calls)
    if not frames or splits is None or dividends is None:
        return
    bars = pd.concat(frames, ignore_index=True)
    floor = pd.to_datetime(bars["ticker"].map(last))
    bars = bars[floor.isna().to_numpy() | (bars["date"] > floor).to_numpy()].copy()
    fetched_through = max(days[: len(frames)])
    missing = sorted(wanted - set(bars["ticker"]))
    if missing:
        _log(progress, f"{provider.name}: {len(missing)} tickers had no bar in {first}..{fetched_through} "
             f"(e.g. {', '.join(missing[:5])}): delisted, halted or unknown to Polygon")
    with transaction.atomic():
        adjusted = _apply_corporate_actions(bars=bars, last=last, splits=splits, dividends=dividends,
                                            source=provider.name)
        summary.history_rescaled += adjusted
        if not bars.empty:
            parsed = _parse_frames({t: f.drop(columns=["ticker"]) for t, f in adjusted_frames(bars).items()},
                                   source=provider.name, today=today)
            rejected_rows.extend(
                {"line": None, "ticker": r.ticker, "date": r.date, "reason": r.reason}
                for r in parsed.rejected.head(MAX_REJECTED_ROWS_STORED).itertuples(index=False)
            )
            _store(parsed=parsed, last=last, source=provider.name, split_aware=set(parsed.tickers), summary=summary)


def adjusted_frames(bars: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per ticker: its new bars with ``adj_close`` set by ``_apply_corporate_actions``."""
    cols = ["ticker", "date", "open", "high", "low", "close", "adj_close", "volume"]
    return {t: f[cols].sort_values("date") for t, f in bars.groupby("ticker", sort=True)}


def _apply_corporate_actions(*, bars: pd.DataFrame, last: dict[str, date], splits: pd.DataFrame,
                             dividends: pd.DataFrame, source: str) -> list[str]:
    """Rescale stored history for splits and dividends after each ticker's last stored bar, and set
    ``bars["adj_close"]`` (in place) for the new bars. Returns the tickers whose history moved."""
    bars["adj_close"] = bars["close"]
    tickers = set(bars["ticker"]) | {t for t in last if t in set(splits["ticker"]) | set(dividends["ticker"])}
    splits = splits[splits["ticker"].isin(tickers)]
    dividends = dividends[dividends["ticker"].isin(tickers) & (dividends["cash_amount"] > 0)]
    involved = sorted(set(splits["ticker"]) | set(dividends["ticker"]))
    if not involved:
        return []
    ids = dict(Ticker.objects.filter(symbol__in=involved).values_list("symbol", "id"))
    done = {(t, d, k) for t, d, k in CorporateAction.objects.filter(ticker_id__in=ids.values())
            .values_list("ticker__symbol", "date", "kind")}
    rescaled = []
    for ticker in involved:
        stored_last = last.get(ticker)
        mine = bars["ticker"] == ticker
        new_days = bars.loc[mine].sort_values("date")
        tid = ids.get(ticker)
        # splits: stored bars are on the old share count; the grouped bars already on the new one
        ratio = 1.0
        for row in splits[splits["ticker"] == ticker].itertuples(index=False):
            day = row.date.date()
            if stored_last is None or day <= stored_last or (ticker, day, "split") in done or tid is None:
                continue
            ratio *= row.split_from / row.split_to
            CorporateAction.objects.create(ticker_id=tid, date=day, kind="split",
                                           value=row.split_to / row.split_from, source=source)
        # dividends: the adjusted close of every earlier day drops by (1 - D / previous close)
        last_close = None
        if stored_last is not None and tid is not None:
            last_close = PriceBar.objects.filter(ticker_id=tid, date=stored_last).values_list("close", flat=True).first()
        series_dates = ([pd.Timestamp(stored_last)] if last_close is not None else []) + list(new_days["date"])
        closes = pd.Series(([last_close * ratio] if last_close is not None else []) + list(new_days["close"]),
                           index=pd.DatetimeIndex(series_dates), dtype="float64")
        cash = pd.Series(0.0, index=closes.index)
        for row in dividends[dividends["ticker"] == ticker].itertuples(index=False):
            day = row.date.date()
            if (stored_last is not None and day <= stored_last) or (ticker, day, "dividend") in done:
                continue
            if row.date in cash.index:
                cash[row.date] += row.cash_amount
                if tid is not None:
                    CorporateAction.objects.update_or_create(ticker_id=tid, date=day, kind="dividend",
                                                             defaults={"value": float(row.cash_amount),
                                                                       "source": source})
        adj = dividend_adjusted_close(closes, cash)
        if len(new_days):
            bars.loc[new_days.index, "adj_close"] = adj.iloc[-len(new_days):].to_numpy()
        factor = float(adj.iloc[0] / closes.iloc[0]) if last_close is not None and len(closes) else 1.0
        updates: dict[str, Any] = {}
        if abs(ratio - 1.0) > RESCALE_TOLERANCE:
            for column in ("open", "high", "low", "close"):
                updates[column] = F(column) * Value(ratio)
            updates["volume"] = Cast(Round(ExpressionWrapper(F("volume") * Value(1.0 / ratio),
                                                             output_field=FloatField())),
                                     output_field=BigIntegerField())
        if abs(ratio * factor - 1.0) > RESCALE_TOLERANCE:
            updates["adj_close"] = F("adj_close") * Value(ratio * factor)
        if updates and tid is not None and stored_last is not None:
            count = PriceBar.objects.filter(ticker_id=tid, date__lte=stored_last).update(**updates)
            logger.info("%s: rescaled %d stored bars (prices x%.6f, adjusted close x%.6f)", ticker, count, ratio,
                        ratio * factor)
            rescaled.append(ticker)
    return rescaled


def _stop(summary: UpdateSummary, message: str, rest: list[str], *, budget: bool = False) -> None:
    summary.warning = message
    summary.budget_exceeded = summary.budget_exceeded or budget
    summary.skipped = list(dict.fromkeys([*summary.skipped, *rest]))
    logger.warning(message)


# Intraday snapshots (the API's "today so far" bars, inference.quotes) ------------------------------
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
    wanted = _normalize(tickers)
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


# Universe ------------------------------------------------------------------------------------------
class UniverseSyncError(Exception):
    pass


@dataclass
class UniverseSyncSummary:
    sources: list[str] = field(default_factory=list)
    exchanges_covered: list[str] = field(default_factory=list)
    rows_read: int = 0
    listed: int = 0  # tickers kept after the exchange/ETF filters
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deactivated: int = 0
    reactivated: int = 0
    deactivated_tickers: list[str] = field(default_factory=list)
    calls: int = 0
    ingestion_run: int | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "sources": self.sources, "exchanges_covered": self.exchanges_covered, "rows_read": self.rows_read,
            "listed": self.listed, "added": self.added, "updated": self.updated, "unchanged": self.unchanged,
            "deactivated": self.deactivated, "reactivated": self.reactivated,
            "deactivated_tickers": self.deactivated_tickers, "calls": self.calls,
            "ingestion_run": self.ingestion_run, "seconds": round(self.seconds, 3),
        }


def _directory_text(source: str | Path | bytes) -> str:
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.decode("utf-8-sig", errors="replace")


def _covered_exchanges(text: str) -> set[str]:
    header = text.lstrip().split("\n", 1)[0]
    if header.startswith("Symbol|"):
        return {"NASDAQ"}
    if header.startswith("ACT Symbol|"):
        return {"NYSE", "AMEX", "OTHER"}
    raise UniverseSyncError(f"not a symbol directory file (header {header[:60]!r})")


class SymbolDirectoryDownloader(HttpProvider):
    """Downloads ``nasdaqlisted.txt`` / ``otherlisted.txt`` with the provider layer's retries,
    rate limit and metering. Base URL: ``NASDAQTRADER_BASE_URL`` (default: the official location)."""

    name = "nasdaqtrader"

    def fetch_daily(self, symbol: str, *, since: date | None = None) -> pd.DataFrame:
        raise NotImplementedError("the symbol directory has no price bars")

    def fetch_file(self, filename: str) -> bytes:
        def parse(response: HttpResponse) -> bytes:
            text = response.body[:200].decode("utf-8-sig", errors="replace").lstrip()
            if not (text.startswith("Symbol|") or text.startswith("ACT Symbol|")):
                raise BadResponseError(f"{filename} is not a symbol directory file: {text[:60]!r}")
            return response.body

        return self.request(f"{self.config.base_url}/{filename}", endpoint=filename, symbol=None, parse=parse)

    def _classify_status(self, response: HttpResponse, symbol: str | None):
        error = super()._classify_status(response, symbol)
        if isinstance(error, NotFoundError):  # not a ticker: say which file is missing
            return NotFoundError(f"{self.redact(response.url)} not found (HTTP 404)", provider=self.name, status=404)
        return error


def download_symbol_directory(*, files: Iterable[str] = SYMBOL_DIRECTORY_FILES,
                              progress: Progress | None = None) -> tuple[list[bytes], int]:
    """Download the symbol directory files; every request is metered. Returns (contents, calls)."""
    limits = {"base_url": NASDAQTRADER_DEFAULT_URL, "requests_per_minute": 60.0, "requests_per_day": None,
              **provider_limits("nasdaqtrader")}
    config = ProviderConfig.from_env("nasdaqtrader", limits)
    records: list[CallRecord] = []
    day = timezone.localdate()
    downloader = SymbolDirectoryDownloader(config, on_call=records.append, budget=shared_budget(day=day))
    contents = []
    try:
        for filename in files:
            _log(progress, f"downloading {config.base_url}/{filename}")
            contents.append(downloader.fetch_file(filename))
    finally:
        record_api_calls(records=records, day=day)
    return contents, len(records)


def sync_universe(
    *,
    sources: list[str | Path | bytes],
    exchanges: Iterable[str] = ("NYSE", "NASDAQ", "AMEX"),
    include_etfs: bool = True,
    common_only: bool = False,
    force: bool = False,
    source_label: str = "file",
    progress: Progress | None = None,
) -> UniverseSyncSummary:
    """Upsert the tickers of the symbol-directory ``sources`` and deactivate the ones that left.

    Kept: listings on ``exchanges`` (ETFs unless ``include_etfs=False``; only common stock with
    ``common_only``), inserted or updated (name, exchange, ETF flag) and made active.
    Deactivated: active tickers absent from every given file, among the exchanges the files cover
    (``nasdaqlisted`` covers NASDAQ, ``otherlisted`` NYSE, AMEX and the rest); tickers of unknown
    exchange (created by a price file) only when both files are given. Listings filtered out by
    ``exchanges``/ETF/common-only are left as they are. Nothing is deleted; bars stay.
    A sync that would deactivate more than 10% (and over 25) of the tickers in scope stops unless
    ``force``: a truncated download must not retire the universe.
    """
    started = time.perf_counter()
    summary = UniverseSyncSummary(sources=[s if isinstance(s, str) else str(s) if isinstance(s, Path) else "<download>"
                                           for s in sources])
    run = IngestionRun.objects.create(kind=IngestionRun.Kind.UNIVERSE, source=source_label,
                                      file=", ".join(summary.sources)[:500])
    summary.ingestion_run = run.id
    with failure_recorded(run, started=started):
        texts = [_directory_text(s) for s in sources]
        covered: set[str] = set()
        listed_anywhere: set[str] = set()
        for text in texts:
            covered |= _covered_exchanges(text)
            frame = parse_symbol_directory(text)
            summary.rows_read += len(frame)
            listed_anywhere |= set(frame["symbol"])
        kept = load_universe(texts, exchanges=[e.upper() for e in exchanges], include_etfs=include_etfs,
                             common_only=common_only)
        kept = kept[kept["symbol"].str.len() <= Ticker._meta.get_field("symbol").max_length]
        summary.listed = len(kept)
        summary.exchanges_covered = sorted(covered)
        full = {"NASDAQ", "NYSE", "AMEX"} <= covered
        with transaction.atomic():
            _upsert_listed(kept, summary)
            scope = Ticker.objects.filter(active=True, exchange__in=sorted(covered | ({""} if full else set())))
            in_scope = scope.count()
            gone = sorted(set(scope.values_list("symbol", flat=True)) - listed_anywhere)
            if len(gone) > max(25, 0.10 * in_scope) and not force:
                raise UniverseSyncError(
                    f"refusing to deactivate {len(gone)} of {in_scope} active tickers on {', '.join(sorted(covered))} "
                    "(is a directory file truncated?); pass --force to apply"
                )
            for start in range(0, len(gone), 500):
                Ticker.objects.filter(symbol__in=gone[start : start + 500]).update(active=False, updated_at=timezone.now())
            summary.deactivated = len(gone)
            summary.deactivated_tickers = gone
    summary.seconds = time.perf_counter() - started
    run.status = IngestionRun.Status.SUCCEEDED
    run.rows_read, run.rows_loaded = summary.rows_read, summary.added
    run.rows_updated = summary.updated + summary.reactivated + summary.deactivated
    run.rows_unchanged, run.tickers = summary.unchanged, summary.listed
    if summary.deactivated:
        run.error = f"deactivated {summary.deactivated}: {', '.join(summary.deactivated_tickers[:200])}"[:5000]
    run.finished_at, run.duration_seconds = timezone.now(), summary.seconds
    run.save()
    _log(progress, f"universe: {summary.listed} listed, {summary.added} added, {summary.updated} updated, "
         f"{summary.reactivated} reactivated, {summary.deactivated} deactivated")
    return summary


def _upsert_listed(kept: pd.DataFrame, summary: UniverseSyncSummary) -> None:
    symbols = kept["symbol"].tolist()
    existing: dict[str, Ticker] = {}
    for start in range(0, len(symbols), 500):
        for ticker in Ticker.objects.filter(symbol__in=symbols[start : start + 500]):
            existing[ticker.symbol] = ticker
    now = timezone.now()
    new, changed = [], []
    for row in kept.itertuples(index=False):
        name = str(row.name)[:200]
        ticker = existing.get(row.symbol)
        if ticker is None:
            new.append(Ticker(symbol=row.symbol, name=name, exchange=row.exchange, is_etf=bool(row.is_etf),
                              active=True))
            continue
        if not ticker.active:
            summary.reactivated += 1
        elif (ticker.name, ticker.exchange, ticker.is_etf) != (name, row.exchange, bool(row.is_etf)):
            summary.updated += 1
        else:
            summary.unchanged += 1
            continue
        ticker.name, ticker.exchange, ticker.is_etf, ticker.active, ticker.updated_at = (
            name, row.exchange, bool(row.is_etf), True, now)
        changed.append(ticker)
    Ticker.objects.bulk_create(new, batch_size=1_000, ignore_conflicts=True)
    Ticker.objects.bulk_update(changed, ["name", "exchange", "is_etf", "active", "updated_at"], batch_size=1_000)
    summary.added = len(new)


__all__ = [
    "DEFAULT_PROVIDER",
    "PROVIDER_NAMES",
    "SymbolDirectoryDownloader",
    "UniverseSyncError",
    "UniverseSyncSummary",
    "UpdateSummary",
    "build_provider",
    "default_provider_name",
    "download_symbol_directory",
    "is_trading_day",
    "last_completed_trading_day",
    "provider_limits",
    "sync_universe",
    "trading_holidays",
    "update_market_data",
]
