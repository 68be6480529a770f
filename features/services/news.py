"""News items: file ingestion, provider updates, and the daily sentiment the feature store reads.

Every headline is scored with ``features.sentiment.score_text`` (VADER with a finance overlay, no
download at run time), whatever its origin, so scores from files and providers are comparable.
Items are de-duplicated on (ticker, published time, sha256 of the whitespace-normalized headline).

Times: a date without a time of day is stored as midnight New York time and counts for that day;
a time of day without an offset is New York time; times with an offset (``Z``, ``+01:00``) are
converted. ``daily_sentiment`` maps items to the trading day they can first affect (after the
16:00 close or on a closed day: the next trading day) through ``features.sentiment.aggregate_daily``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from features.models import IngestionRun, NewsItem, Ticker
from features.providers import PROVIDERS
from features.sentiment import aggregate_daily, score_many
from features.services.ingestion import ensure_tickers
from features.services.ingestion_runs import (
    FileIngestSummary,
    Progress,
    failure_recorded,
    file_run_succeeded,
    say,
)
from features.services.provider_updates import (
    MeteredProvider,
    TickerUpdateSummary,
    newest_by_ticker,
    requested_tickers,
    update_each_ticker,
)
from features.trading_calendar import MARKET_TZ, trading_holidays

READ_CHUNK_ROWS = 100_000
BATCH_SIZE = 1_000
MAX_REJECTED_ROWS_STORED = 1_000
URL_MAX = NewsItem._meta.get_field("url").max_length
SOURCE_MAX = NewsItem._meta.get_field("source").max_length

_COLUMN_ALIASES = {
    "date": ("date", "published_at", "time_published", "datetime", "timestamp"),
    "ticker": ("ticker", "symbol"),
    "headline": ("headline", "title"),
    "time": ("time",),
    "source": ("source",),
    "url": ("url", "link"),
}


class NewsFileError(ValueError):
    """The news file as a whole cannot be read (missing columns, not a CSV)."""


def content_hash(headline: str) -> str:
    """sha256 of the headline with its whitespace collapsed (the de-duplication key)."""
    return hashlib.sha256(" ".join(str(headline).split()).encode("utf-8")).hexdigest()


# Parsing (no database) -------------------------------------------------------------------------------
def parse_news_times(dates: pd.Series, times: pd.Series | None = None) -> pd.Series:
    """Aware UTC timestamps from date (and optional time-of-day) strings; NaT where unreadable."""
    text = dates.astype("string").str.strip()
    if times is not None:
        clock = times.astype("string").str.strip().fillna("")
        text = text.where(clock == "", text + " " + clock)
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    has_offset = text.str.contains(r"(?:Z|UTC|[+-]\d{2}:?\d{2})$", regex=True).fillna(False).astype(bool)
    if has_offset.any():
        out[has_offset] = pd.to_datetime(text[has_offset], errors="coerce", utc=True, format="ISO8601")
    local = ~has_offset
    if local.any():
        naive = pd.to_datetime(text[local], errors="coerce", format="ISO8601")
        retry = naive.isna() & text[local].notna()
        if retry.any():  # "07/06/2011", "Jul 6 2011 4:05PM"...
            naive[retry] = pd.to_datetime(text[local][retry], errors="coerce", format="mixed")
        aware = naive.dt.tz_localize(MARKET_TZ, ambiguous="NaT", nonexistent="shift_forward")
        out[local] = aware.dt.tz_convert(UTC)
    return out


def _rename(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    lower = {str(c).strip().lower(): c for c in frame.columns}
    rename = {}
    for canonical, aliases in _COLUMN_ALIASES.items():
        for alias in aliases:
            if alias in lower:
                rename[lower[alias]] = canonical
                break
    missing = [c for c in ("date", "ticker", "headline") if c not in rename.values()]
    if missing:
        raise NewsFileError(f"{path}: missing required column(s) {', '.join(missing)} "
                            f"(found: {', '.join(map(str, frame.columns))})")
    return frame[list(rename)].rename(columns=rename)


def read_news_chunks(path: Path, *, limit: int | None = None, chunk_rows: int = READ_CHUNK_ROWS):
    """Yield DataFrames ``ticker, published_at (UTC), headline, source, url`` plus ``reason`` (None when
    valid, else missing_ticker / missing_headline / unparseable_date) from a CSV or CSV.gz."""
    try:
        header = pd.read_csv(path, nrows=0)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise NewsFileError(f"{path}: cannot read: {exc}") from exc
    wanted = {a for aliases in _COLUMN_ALIASES.values() for a in aliases}
    usecols = [c for c in header.columns if str(c).strip().lower() in wanted]
    _rename(header[usecols], path)  # fail early on missing columns
    # keep_default_na=False: "NA" and "NULL" are tickers, not missing values.
    reader = pd.read_csv(path, usecols=usecols, dtype=str, keep_default_na=False, na_values=[],
                         chunksize=chunk_rows, nrows=limit)
    for raw in reader:
        frame = _rename(raw, path)
        ticker = frame["ticker"].str.strip().str.upper()
        headline = frame["headline"].str.strip()
        published = parse_news_times(frame["date"], frame.get("time"))
        reason = pd.Series(None, index=frame.index, dtype=object)
        reason[published.isna()] = "unparseable_date"
        reason[headline == ""] = "missing_headline"
        reason[ticker == ""] = "missing_ticker"
        yield pd.DataFrame({
            "ticker": ticker,
            "published_at": published,
            "headline": headline,
            "source": frame["source"].str.strip().str.slice(0, SOURCE_MAX) if "source" in frame else "",
            "url": frame["url"].str.strip().str.slice(0, URL_MAX) if "url" in frame else "",
            "reason": reason,
        })


# Storing ---------------------------------------------------------------------------------------------
@dataclass
class StoreCounts:
    inserted: int = 0
    existing: int = 0  # already stored, or a duplicate within the input
    unknown_rows: int = 0
    unknown_tickers: set[str] = field(default_factory=set)
    tickers: set[str] = field(default_factory=set)
    days: set[date] = field(default_factory=set)


def store_news(*, items: pd.DataFrame, provider: str, create_tickers: bool = False) -> StoreCounts:
    """Insert new items (columns ticker, published_at (aware), headline, source, url); score only the
    new ones. Items of unknown tickers are skipped and counted unless ``create_tickers``."""
    counts = StoreCounts()
    if items.empty:
        return counts
    symbols = sorted(items["ticker"].unique())
    if create_tickers:
        ids = ensure_tickers(symbols=symbols)
    else:
        ids = {}
        for start in range(0, len(symbols), 500):
            ids.update(Ticker.objects.filter(symbol__in=symbols[start : start + 500]).values_list("symbol", "id"))
    known = items["ticker"].isin(ids.keys())
    counts.unknown_rows = int((~known).sum())
    counts.unknown_tickers = set(items.loc[~known, "ticker"])
    items = items[known]
    if items.empty:
        return counts
    items = items.assign(content_hash=[content_hash(h) for h in items["headline"]])
    before = len(items)
    items = items.drop_duplicates(["ticker", "published_at", "content_hash"])
    counts.existing += before - len(items)
    items = items.assign(ticker_id=items["ticker"].map(ids).astype("int64"))
    # Which of these are stored already: one range query per batch of tickers.
    stamps = [ts.to_pydatetime() for ts in items["published_at"]]
    items = items.assign(when=stamps)
    existing: set[tuple[int, datetime, str]] = set()
    ticker_ids = sorted(items["ticker_id"].unique().tolist())
    lo, hi = min(stamps), max(stamps)
    for start in range(0, len(ticker_ids), 500):
        existing.update(
            NewsItem.objects.filter(ticker_id__in=ticker_ids[start : start + 500], published_at__gte=lo,
                                    published_at__lte=hi).values_list("ticker_id", "published_at", "content_hash")
        )
    is_new = [(t, w, h) not in existing for t, w, h in zip(items["ticker_id"], items["when"], items["content_hash"],
                                                            strict=True)]
    new = items[is_new]
    counts.existing += len(items) - len(new)
    if not new.empty:
        scores = score_many(new["headline"].tolist())
        rows = [
            NewsItem(ticker_id=int(r.ticker_id), published_at=r.when, headline=r.headline, source=r.source or "",
                     url=r.url or "", provider=provider, sentiment=float(score), content_hash=r.content_hash)
            for r, score in zip(new.itertuples(index=False), scores, strict=True)
        ]
        with transaction.atomic():
            NewsItem.objects.bulk_create(rows, batch_size=BATCH_SIZE, ignore_conflicts=True)
        counts.inserted += len(rows)
    counts.tickers |= set(items["ticker"])
    counts.days |= set(items["published_at"].dt.tz_convert(MARKET_TZ).dt.date)
    return counts


NewsIngestSummary = FileIngestSummary


def ingest_news_file(*, path: Path, create_tickers: bool = False, limit: int | None = None,
                     progress: Progress | None = None) -> NewsIngestSummary:
    """Load a news CSV (date, ticker, headline; optional time, source, url), recording an IngestionRun."""
    started = time.perf_counter()
    path = Path(path)
    if not path.is_file():
        raise NewsFileError(f"{path}: no such file")
    run = IngestionRun.objects.create(kind=IngestionRun.Kind.NEWS, source="file", file=str(path))
    summary = NewsIngestSummary(ingestion_run=run.id)
    rejected_rows: list[dict[str, Any]] = []
    unknown: set[str] = set()
    tickers: set[str] = set()
    days: set[date] = set()
    with failure_recorded(run, started=started):
        offset = 0
        for chunk in read_news_chunks(path, limit=limit):
            summary.rows_read += len(chunk)
            bad = chunk["reason"].notna()
            summary.count_rejected(chunk.loc[bad, "reason"].value_counts())
            if len(rejected_rows) < MAX_REJECTED_ROWS_STORED:
                for index in chunk.index[bad][: MAX_REJECTED_ROWS_STORED - len(rejected_rows)]:
                    rejected_rows.append({"line": int(offset + index + 2), "ticker": chunk.at[index, "ticker"],
                                          "reason": chunk.at[index, "reason"]})
            offset += len(chunk)
            counts = store_news(items=chunk[~bad].drop(columns="reason"), provider="file",
                                create_tickers=create_tickers)
            summary.rows_loaded += counts.inserted
            summary.rows_unchanged += counts.existing
            if counts.unknown_rows:
                summary.count_rejected({"unknown_ticker": counts.unknown_rows})
            unknown |= counts.unknown_tickers
            tickers |= counts.tickers
            days |= counts.days
            say(progress, f"{path.name}: {summary.rows_read:,} rows read, {summary.rows_loaded:,} new")
    summary.tickers, summary.days = len(tickers), len(days)
    file_run_succeeded(run, summary=summary, rejected_rows=rejected_rows, unknown=unknown,
                       unknown_hint="pass --create-tickers to add them", started=started)
    return summary


# Provider news ---------------------------------------------------------------------------------------
class NewsUpdateSummary(TickerUpdateSummary):
    NOUN = "items"
    items_read = property(lambda self: self.read)
    items_added = property(lambda self: self.added)
    items_unchanged = property(lambda self: self.unchanged)


def update_news(*, provider: str = "alphavantage", tickers: list[str] | None = None,
                progress: Progress | None = None) -> NewsUpdateSummary:
    """Fetch news since each ticker's newest stored item of ``provider`` (a provider with a news
    endpoint: Alpha Vantage ``NEWS_SENTIMENT``), score and store it. One request per ticker, metered
    and budgeted like price updates; ``tickers`` default to the active ones."""
    started = time.perf_counter()
    key = provider.strip().lower()
    cls = PROVIDERS.get(key)
    if cls is None or not cls.supports_news:
        news_capable = sorted(n for n, c in PROVIDERS.items() if c.supports_news)
        raise ValueError(f"{provider!r} has no news endpoint (news providers: {', '.join(news_capable)})")
    symbols = requested_tickers(tickers)
    metered = MeteredProvider(cls, key=key, day=timezone.localdate())
    newest = newest_by_ticker(NewsItem.objects.filter(provider=key), symbols=symbols, newest=Max("published_at"))

    def fetch(symbol: str) -> pd.DataFrame:
        last = newest.get(symbol)
        # time_from = the newest stored item's day (overlap; duplicates are skipped on insert)
        since = last.astimezone(MARKET_TZ).date() - timedelta(days=1) if last else None
        return metered.source.fetch_news(symbol, since=since)

    def store(symbol: str, frame: pd.DataFrame) -> StoreCounts:
        stamps = pd.to_datetime(frame["time_published"])
        if stamps.dt.tz is None:  # Alpha Vantage stamps are US/Eastern
            stamps = stamps.dt.tz_localize(MARKET_TZ, ambiguous="NaT", nonexistent="shift_forward")
        items = pd.DataFrame({
            "ticker": symbol, "published_at": stamps.dt.tz_convert(UTC),
            "headline": frame["title"].astype(str).str.strip(),
            "source": frame["source"].astype(str).str.slice(0, SOURCE_MAX),
            "url": frame["url"].astype(str).str.slice(0, URL_MAX),
        }).dropna(subset=["published_at"])
        items = items[items["headline"] != ""]
        return store_news(items=items, provider=key, create_tickers=True)

    summary = update_each_ticker(kind=IngestionRun.Kind.NEWS, summary=NewsUpdateSummary(provider=key),
                                 provider=metered, symbols=symbols, fetch=fetch, store=store, started=started,
                                 progress=progress)
    say(progress, f"{key} news: {summary.items_added} new items for {summary.tickers_updated} tickers, "
        f"{summary.calls} calls")
    return summary


# Reads for the feature store ---------------------------------------------------------------------------
def daily_sentiment(*, tickers: Iterable[str] | None = None, start: date | None = None,
                    end: date | None = None) -> pd.DataFrame:
    """Mean headline sentiment per ticker and trading day: ``ticker, date, score, count``.

    ``date`` (datetime64, midnight) is the trading day an item can first affect (NYSE calendar;
    after the close or on a closed day it counts for the next trading day). ``start``/``end``
    bound that day, inclusive.
    """
    items = NewsItem.objects.filter(sentiment__isnull=False)
    if tickers is not None:
        symbols = sorted({t.strip().upper() for t in tickers})
        items = items.filter(ticker__symbol__in=symbols)
    # Items up to a week before ``start`` can land on it (weekends, holidays, after-close news).
    if start is not None:
        items = items.filter(published_at__gte=datetime.combine(start - timedelta(days=7), datetime.min.time(),
                                                                tzinfo=MARKET_TZ))
    if end is not None:
        items = items.filter(published_at__lt=datetime.combine(end + timedelta(days=1), datetime.min.time(),
                                                               tzinfo=MARKET_TZ))
    rows = list(items.values_list("ticker__symbol", "published_at", "sentiment").iterator(chunk_size=20_000))
    frame = pd.DataFrame(rows, columns=["ticker", "published_at", "score"])
    if frame.empty:
        return aggregate_daily(None)
    # New York wall time, naive: date-only items (stored at New York midnight) stay on their day.
    local = pd.to_datetime(frame["published_at"], utc=True).dt.tz_convert(MARKET_TZ).dt.tz_localize(None)
    frame["published_at"] = local
    years = range(local.min().year, local.max().year + 2)
    out = aggregate_daily(frame, time_col="published_at", holidays=trading_holidays(years=years))
    if start is not None:
        out = out[out["date"] >= pd.Timestamp(start)]
    if end is not None:
        out = out[out["date"] <= pd.Timestamp(end)]
    return out.reset_index(drop=True)
