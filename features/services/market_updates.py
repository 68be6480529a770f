"""Daily market-data updates from the data providers.

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

What is decided without the database (which tickers and days to ask for, which rows are new, how a
split or dividend in the gap rescales stored history) is ``features.bar_updates``; the providers
as configured are ``features.services.provider_config``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from django.conf import settings
from django.db import transaction
from django.db.models import BigIntegerField, ExpressionWrapper, F, FloatField, Max, Value
from django.db.models.functions import Cast, Round
from django.utils import timezone

from features.bar_updates import (
    BULK_MAX_GAP_DAYS,
    adjusted_frames,
    bulk_window,
    freshness_probe,
    gap_adjustment,
    is_quota_failure,
    normalize_symbols,
    rows_after,
    stale_tickers,
    tickers_split_after,
)
from features.common import chunked
from features.models import CorporateAction, IngestionRun, PriceBar, Ticker
from features.pricefiles import ParsedPrices, parse_price_frame
from features.providers import FileDropProvider
from features.providers.base import (
    NOT_FOUND,
    BudgetExceededError,
    CallRecord,
    DailyBudget,
    HttpProvider,
    PriceProvider,
    ProviderError,
    SharedBudget,
    UpdateResult,
    update_prices,
)
from features.providers.polygon import PolygonProvider
from features.services.ingestion import MAX_REJECTED_ROWS_STORED, ensure_tickers, merge_bars
from features.services.ingestion_runs import Progress, failure_recorded, say
from features.services.limits import shared_budget
from features.services.provider_config import build_provider, default_provider_name
from features.trading_calendar import MARKET_TZ, last_completed_trading_day
from investml.ledger import cost_for_day, record_api_calls

__all__ = ["CHUNK_TICKERS", "UpdateSummary", "update_market_data"]

logger = logging.getLogger(__name__)

CHUNK_TICKERS = 50
RESCALE_TOLERANCE = 1e-9


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
    # seconds spent waiting for the provider's requests-per-minute limit (Polygon's free tier: 5 a
    # minute, so a daily update of 3 requests waits 24 s whatever the universe's size)
    rate_limit_wait_seconds: float = 0.0
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
            "rate_limit_wait_seconds": round(self.rate_limit_wait_seconds, 3),
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


# Storing -------------------------------------------------------------------------------------------
def _rescale_updates(*, price_ratio: float, adj_ratio: float) -> dict[str, Any]:
    """``update()`` arguments that rescale stored bars: prices x ``price_ratio`` (volumes / it) and
    adjusted closes x ``adj_ratio``, each only when it is not 1 within RESCALE_TOLERANCE."""
    updates: dict[str, Any] = {}
    if abs(price_ratio - 1.0) > RESCALE_TOLERANCE:
        for column in ("open", "high", "low", "close"):
            updates[column] = F(column) * Value(price_ratio)
        updates["volume"] = Cast(
            Round(ExpressionWrapper(F("volume") * Value(1.0 / price_ratio), output_field=FloatField())),
            output_field=BigIntegerField(),
        )
    if abs(adj_ratio - 1.0) > RESCALE_TOLERANCE:
        updates["adj_close"] = F("adj_close") * Value(adj_ratio)
    return updates


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
    split_after = tickers_split_after(actions, last)
    rescaled = []
    for row in overlap.itertuples(index=False):
        tid = ticker_ids[row.ticker]
        old = stored.get((tid, row.date))
        if old is None or not old[0] or not old[1]:
            continue
        price_ratio = row.close / old[0]
        adj_ratio = row.adj_close / old[1]
        # With split coefficients in the reply, only a split moves raw prices; without them
        # (Stooq adjusts its whole series) any change of the last bar's close is an adjustment.
        prices_move = row.ticker not in split_aware or row.ticker in split_after
        updates = _rescale_updates(price_ratio=price_ratio if prices_move else 1.0, adj_ratio=adj_ratio)
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
    bars = rows_after(bars, since)
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
    moment = now or timezone.now()
    as_of = last_completed_trading_day(now=moment)
    today = (moment.astimezone(MARKET_TZ) if moment.tzinfo is not None else moment).date()
    source = name.lower() if not name.lower().startswith("files:") else "files"
    source_obj = build_provider(name=name, today=today)
    summary = UpdateSummary(provider=source, as_of=as_of, limit_usd=float(settings.ML_DAILY_COST_LIMIT_USD),
                            spent_today_usd=float(cost_for_day(day=timezone.localdate())))
    is_http = isinstance(source_obj, HttpProvider)

    explicit = tickers is not None
    symbols = normalize_symbols(tickers) if explicit else _default_tickers(source_obj)
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
            say(progress, f"{source}: {len(parsed.bars):,} new rows for {len(parsed.tickers)} tickers "
                 f"in {source_obj.folder}")
            _store(parsed=parsed, last=last, source=source, split_aware=set(), summary=summary)
            # Rows the file parser rejected (per file, whatever their date): reported, not stored.
            for reasons in source_obj.rejected.values():
                for reason, count in reasons.items():
                    summary.rejected_by_reason[reason] = summary.rejected_by_reason.get(reason, 0) + count
                    summary.rows_rejected += count
    summary.tickers_updated = len(summary._updated)
    if is_http:
        summary.rate_limit_wait_seconds = float(source_obj.limiter.total_wait)
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
            if is_quota_failure(reason, message):
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
        probe = freshness_probe(todo=todo, last=last)
        if probe is not None:
            todo.remove(probe)
            frame = run_chunk([probe]).frames.get(probe)
            if frame is not None:
                final = frame[frame["date"] <= pd.Timestamp(as_of)]
                newest = final["date"].max().date() if not final.empty else last[probe]
                if newest <= last[probe]:
                    behind = {s for s in todo if s in last and last[s] >= last[probe]}
                    todo = [s for s in todo if s not in behind]
                    summary.tickers_fresh += len(behind) + 1  # the checked ticker had nothing new either
                    say(progress, f"{name}: freshness check on {probe}: nothing after {last[probe]} yet; "
                        f"{len(behind)} tickers at that day skipped")
        done = 0
        for chunk in chunked(todo, chunk_size):
            run_chunk(chunk)
            done += len(chunk)
            say(progress, f"{name}: {done}/{len(todo)} tickers, "
                f"{summary.rows_added:,} rows added, {len(summary.failed)} failed, {summary.calls} calls, "
                f"${summary.cost_usd:.4f}")
    except _Stop as signal:
        _stop(summary, signal.message, [s for s in todo if s not in handled], budget=signal.budget)


def _stale_and_budget(provider: HttpProvider, symbols: list[str], last: dict[str, date], as_of: date,
                      summary: UpdateSummary, progress: Progress | None) -> tuple[list[str], SharedBudget | None]:
    """The tickers behind ``as_of`` and today's budget (None: nothing to do, or no budget left)."""
    stale = stale_tickers(symbols=symbols, last=last, as_of=as_of)
    summary.tickers_fresh = len(symbols) - len(stale)
    budget = shared_budget()
    spent, limit = budget.spent_usd, budget.limit_usd
    summary.spent_today_usd, summary.limit_usd = spent, limit
    say(progress, f"{provider.name}: {len(symbols)} tickers, {summary.tickers_fresh} already up to date with "
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
    window = bulk_window(stale=stale, last=last, as_of=as_of)
    if window.behind:
        summary.skipped.extend(window.behind)
        say(progress, f"{provider.name}: {len(window.behind)} tickers more than {BULK_MAX_GAP_DAYS} days behind "
            f"the others (e.g. {', '.join(window.behind[:5])}) are left to a per-ticker backfill")
    stale, first, days = window.tickers, window.first, window.days
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
            say(progress, f"{provider.name}: {day} {i}/{len(days)}: {len(grouped):,} bars in the market, "
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
    bars = rows_after(pd.concat(frames, ignore_index=True), last).copy()
    fetched_through = max(days[: len(frames)])
    missing = sorted(wanted - set(bars["ticker"]))
    if missing:
        say(progress, f"{provider.name}: {len(missing)} tickers had no bar in {first}..{fetched_through} "
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
    done: dict[str, set[tuple[date, str]]] = {}
    for t, d, k in (CorporateAction.objects.filter(ticker_id__in=ids.values())
                    .values_list("ticker__symbol", "date", "kind")):
        done.setdefault(t, set()).add((d, k))
    rescaled = []
    for ticker in involved:
        stored_last = last.get(ticker)
        new_days = bars.loc[bars["ticker"] == ticker].sort_values("date")
        tid = ids.get(ticker)
        last_close = None
        if stored_last is not None and tid is not None:
            last_close = PriceBar.objects.filter(ticker_id=tid, date=stored_last).values_list("close", flat=True).first()
        gap = gap_adjustment(
            new_bars=new_days,
            # a ticker without a row has no stored history for a split to move
            splits=splits[splits["ticker"] == ticker] if tid is not None else splits.iloc[:0],
            dividends=dividends[dividends["ticker"] == ticker],
            stored_last=stored_last, last_close=last_close, recorded=done.get(ticker, set()),
        )
        for day, value in gap.splits:
            CorporateAction.objects.create(ticker_id=tid, date=day, kind="split", value=value, source=source)
        if tid is not None:
            for day, cash in gap.dividends:
                CorporateAction.objects.update_or_create(ticker_id=tid, date=day, kind="dividend",
                                                         defaults={"value": cash, "source": source})
        if len(new_days):
            bars.loc[new_days.index, "adj_close"] = gap.new_adj_close
        updates = _rescale_updates(price_ratio=gap.price_ratio, adj_ratio=gap.adj_ratio)
        if updates and tid is not None and stored_last is not None:
            count = PriceBar.objects.filter(ticker_id=tid, date__lte=stored_last).update(**updates)
            logger.info("%s: rescaled %d stored bars (prices x%.6f, adjusted close x%.6f)", ticker, count,
                        gap.price_ratio, gap.adj_ratio)
            rescaled.append(ticker)
    return rescaled


def _stop(summary: UpdateSummary, message: str, rest: list[str], *, budget: bool = False) -> None:
    summary.warning = message
    summary.budget_exceeded = summary.budget_exceeded or budget
    summary.skipped = list(dict.fromkeys([*summary.skipped, *rest]))
    logger.warning(message)


