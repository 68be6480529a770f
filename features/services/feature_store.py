"""Writes of the feature store: feature-set versions, builds into the offline store, the online store,
benchmark returns.

A build reads bars, fundamentals, benchmark returns and news sentiment from the database (raw SQL
into numpy, no model instances), runs the framework-free pipeline of ``features.build`` chunk by
chunk and commits the Parquet files atomically, records a ``FeatureMaterialization`` and refreshes
the online store (the Django cache).

Market series: SPY returns (``BenchmarkReturn``) on the days it has, else the equal-weighted mean
return of every ticker with bars that day (a ticker's return from its previous bar, when that bar
is at most ``EW_MAX_GAP_DAYS`` calendar days older). The series a build used is stored with the
features; an incremental build reuses it and appends only the new days, so its values equal a full
rebuild's. Backfilled history (bars, benchmark returns or news added for days already built) is
only picked up by a ``full`` build.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from features.build import ChunkData, combine_market, equal_weighted_returns, materialize
from features.common import chunked
from features.feature_sets import DEFAULT_SPEC, FEATURE_SETS, FeatureSpec
from features.intraday import EngineWindow, close_of
from features.models import (
    BenchmarkReturn,
    FeatureMaterialization,
    FeatureSet,
    FeatureSetVersion,
    FundamentalSnapshot,
    NewsItem,
    PriceBar,
    Ticker,
)
from features.selectors import (
    DEFAULT_FEATURE_SET,
    benchmark_returns,
    configured_feature_set,
    feature_store_for,
    online_columns_key,
    online_current_key,
    online_index_key,
    online_payload,
    resolve_feature_set_version,
    storage_path,
)
from features.sentiment import aggregate_daily
from features.services.social import social_posts_frame
from features.social import aggregate_social_daily
from features.store import FeatureStore
from features.store_format import ReplaceScope, atomic_write_bytes
from features.versioning import content_hash, next_version, version_content

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

DEFAULT_CHUNK_SIZE = 500
EW_MAX_GAP_DAYS = 120
MARKET_SYMBOL = "SPY"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class FeatureStoreError(Exception):
    """A build or export that cannot run as asked (unknown ticker or feature set, bad dates, no bars)."""


def _log(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)
    else:
        logger.info(message)


# --------------------------------------------------------------------------------------------
# Feature-set versions
# --------------------------------------------------------------------------------------------


def _semver_key(version: FeatureSetVersion) -> tuple[int, ...]:
    return tuple(int(p) for p in version.version.split("."))


def ensure_feature_set_version(*, name: str = DEFAULT_FEATURE_SET, spec: FeatureSpec | dict | None = DEFAULT_SPEC,
                               description: str = "") -> FeatureSetVersion:
    """The version row of ``spec`` in feature set ``name``: the existing row when the content hash
    (ordered features with parameters, engine parameters, storage format) is known, else a new row
    whose semantic version bumps the highest one (see ``features.versioning.next_version``)."""
    if not _NAME_RE.match(name):
        raise FeatureStoreError(f"invalid feature set name {name!r} (letters, digits, '_', '.', '-')")
    spec = FeatureSpec.from_params(spec)
    content = version_content(spec)
    digest = content_hash(content)
    for _attempt in range(3):
        try:
            with transaction.atomic():
                feature_set, _ = FeatureSet.objects.get_or_create(name=name, defaults={"description": description})
                # serialize version creation per feature set (a row lock on PostgreSQL)
                feature_set = FeatureSet.objects.select_for_update().get(pk=feature_set.pk)
                existing = feature_set.versions.filter(content_hash=digest).first()
                if existing is not None:
                    return existing
                previous = max(feature_set.versions.all(), key=_semver_key, default=None)
                number = next_version(
                    previous.version if previous else None,
                    previous.features if previous else None,
                    previous.params if previous else None,
                    content["features"],
                    content["params"],
                )
                return FeatureSetVersion.objects.create(
                    feature_set=feature_set, version=number, features=content["features"],
                    params=content["params"], content_hash=digest,
                )
        except IntegrityError:  # a concurrent caller created it first
            continue
    return FeatureSetVersion.objects.get(feature_set__name=name, content_hash=digest)


def _version_for_build(feature_set: str) -> FeatureSetVersion:
    if feature_set in FEATURE_SETS:  # the engine's named sets: their current spec
        return ensure_feature_set_version(name=feature_set, spec=FEATURE_SETS[feature_set])
    version = (
        FeatureSetVersion.objects.select_related("feature_set")
        .filter(feature_set__name=feature_set)
        .order_by("-id")
        .first()
    )
    if version is None:
        known = ", ".join(FeatureSet.objects.order_by("name").values_list("name", flat=True)) or "none"
        raise FeatureStoreError(f"unknown feature set {feature_set!r} (known: {known})")
    return version


# --------------------------------------------------------------------------------------------
# Reads for a build (raw SQL into numpy: no model instances)
# --------------------------------------------------------------------------------------------

_BAR_COLUMNS = ["open", "high", "low", "close", "adj_close", "volume"]


def _day_sql(column: str) -> str:
    """SQL for the day number (days since 1970-01-01) of a date column."""
    if connection.vendor == "postgresql":
        return f"({column} - DATE '1970-01-01')"
    if connection.vendor == "sqlite":
        return f"CAST(julianday({column}) - 2440587.5 AS INTEGER)"
    raise FeatureStoreError(f"the feature store reads bars from SQLite or PostgreSQL, not {connection.vendor}")


def _in_clause(column: str, ids: list[int]) -> str:
    return f"{column} IN ({', '.join(str(int(i)) for i in ids)})"


def _fetch(sql: str, params: list[Any]) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _load_bars(*, ids: list[int], symbols: dict[int, str], since: date | None, end: date | None) -> pd.DataFrame:
    """Bars of ``ids`` dated in [since, end], as the engine takes them (ticker, date, OHLC, adj_close, volume)."""
    if not ids:
        return pd.DataFrame(columns=["ticker", "date", *_BAR_COLUMNS])
    table = PriceBar._meta.db_table
    where, params = [_in_clause("ticker_id", ids)], []
    if since is not None:
        where.append("date >= %s")
        params.append(since)
    if end is not None:
        where.append("date <= %s")
        params.append(end)
    rows = _fetch(
        f"SELECT ticker_id, {_day_sql('date')}, {', '.join(_BAR_COLUMNS)} FROM {table} "
        f"WHERE {' AND '.join(where)} ORDER BY ticker_id, date",
        params,
    )
    if not rows:
        return pd.DataFrame(columns=["ticker", "date", *_BAR_COLUMNS])
    arr = np.array(rows, dtype=np.float64)
    ticker_ids = arr[:, 0].astype(np.int64)
    uniq = np.unique(ticker_ids)
    cats = sorted(symbols[i] for i in uniq.tolist())
    code_of = {s: k for k, s in enumerate(cats)}
    codes = np.array([code_of[symbols[i]] for i in uniq.tolist()], dtype=np.int64)[np.searchsorted(uniq, ticker_ids)]
    frame = pd.DataFrame(
        {
            "ticker": pd.Categorical.from_codes(codes, categories=cats),
            "date": arr[:, 1].astype(np.int64).astype("datetime64[D]").astype("datetime64[ns]"),
        }
    )
    for k, col in enumerate(_BAR_COLUMNS):
        frame[col] = arr[:, 2 + k]
    return frame


def _load_fundamentals(*, ids: list[int], symbols: dict[int, str], end: date | None) -> pd.DataFrame:
    qs = FundamentalSnapshot.objects.filter(ticker_id__in=ids).order_by()
    if end is not None:
        qs = qs.filter(as_of__lte=end)
    rows = list(qs.values_list("ticker_id", "as_of", "pe_ratio", "eps", "market_cap", "dividend_yield"))
    frame = pd.DataFrame(rows, columns=["ticker_id", "as_of", "pe_ratio", "eps", "market_cap", "dividend_yield"])
    frame.insert(0, "ticker", frame.pop("ticker_id").map(symbols))
    frame["as_of"] = pd.to_datetime(frame["as_of"])
    for col in ("pe_ratio", "eps", "market_cap", "dividend_yield"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


def _load_sentiment(*, ids: list[int], symbols: dict[int, str], since: date | None, end: date | None) -> pd.DataFrame:
    """Daily mean sentiment per ticker and trading day (``features.sentiment.aggregate_daily``)."""
    qs = NewsItem.objects.filter(ticker_id__in=ids, sentiment__isnull=False).order_by()
    if since is not None:
        qs = qs.filter(published_at__gte=datetime.combine(since - timedelta(days=7), dt_time.min, tzinfo=UTC))
    if end is not None:
        qs = qs.filter(published_at__lt=datetime.combine(end + timedelta(days=2), dt_time.min, tzinfo=UTC))
    rows = list(qs.values_list("ticker_id", "published_at", "sentiment"))
    if not rows:
        return aggregate_daily(None)
    frame = pd.DataFrame(rows, columns=["ticker_id", "published_at", "score"])
    frame.insert(0, "ticker", frame.pop("ticker_id").map(symbols))
    frame["published_at"] = pd.to_datetime(frame["published_at"], utc=True)
    return aggregate_daily(frame, time_col="published_at")


def _load_social(*, ids: list[int], symbols: dict[int, str], since: date | None, end: date | None) -> pd.DataFrame:
    """Posts per ticker and trading day (``features.social.aggregate_social_daily``), for a feature set
    with social columns."""
    return aggregate_social_daily(social_posts_frame(ticker_ids=ids, symbols=symbols, since=since, end=end))


def _universe_dates(*, after: date | None, end: date | None) -> pd.DatetimeIndex:
    qs = PriceBar.objects.all()
    if after is not None:
        qs = qs.filter(date__gt=after)
    if end is not None:
        qs = qs.filter(date__lte=end)
    return pd.DatetimeIndex(sorted(qs.order_by().values_list("date", flat=True).distinct()))


def _equal_weighted(*, dates: pd.DatetimeIndex) -> pd.Series:
    """Equal-weighted market return on ``dates`` over every ticker (see the module docstring)."""
    if len(dates) == 0:
        return pd.Series(dtype=np.float64)
    lo = dates.min().date() - timedelta(days=EW_MAX_GAP_DAYS)
    hi = dates.max().date()
    rows = _fetch(
        f"SELECT ticker_id, {_day_sql('date')}, adj_close FROM {PriceBar._meta.db_table} "
        "WHERE date >= %s AND date <= %s ORDER BY ticker_id, date",
        [lo, hi],
    )
    if not rows:
        return pd.Series(dtype=np.float64)
    arr = np.array(rows, dtype=np.float64)
    days = arr[:, 1].astype(np.int64)
    ew = equal_weighted_returns(arr[:, 0].astype(np.int64), days.astype("datetime64[D]"), arr[:, 2],
                                max_gap_days=EW_MAX_GAP_DAYS)
    return ew[ew.index.isin(dates)]


def _market(*, dates: pd.DatetimeIndex, stored: pd.Series | None) -> tuple[pd.Series, pd.Series, dict[str, int]]:
    """(returns, source, counts) covering ``dates``: stored days first, then SPY, then equal-weighted."""
    spy = benchmark_returns(symbol=MARKET_SYMBOL)
    known = set() if stored is None else set(pd.DatetimeIndex(stored.index))
    missing = dates[~dates.isin(spy.index) & ~dates.isin(list(known))]
    fallback = _equal_weighted(dates=missing) if len(missing) else None
    returns, source = combine_market(dates, benchmark=spy, fallback=fallback, stored=stored)
    counts = {k: int(v) for k, v in source.value_counts().items()}
    return returns, source, counts


def engine_window(*, version: FeatureSetVersion, ticker: str, feature_date: date) -> EngineWindow:
    """The inputs a build passes the engine for ``ticker``'s row after ``feature_date`` (its last stored
    features): for the API's intraday features (``features.intraday``). A read, kept beside the
    build's loaders so that both give the engine the same inputs: an input added to the build
    belongs here too (tests/integration/test_intraday_quotes.py checks the recomputed stored row)."""
    spec = FeatureSpec.from_params(version.params)
    ticker_id = Ticker.objects.filter(symbol=ticker).values_list("id", flat=True).first()
    if ticker_id is None:
        raise FeatureStoreError(f"unknown ticker {ticker!r}")
    symbols = {ticker_id: ticker}
    lookback = spec.max_lookback()
    bars = _load_bars(ids=[ticker_id], symbols=symbols, end=feature_date,
                      since=feature_date - timedelta(days=_lookback_days(lookback)))
    if len(bars) < lookback:  # gaps: fewer bars than the calendar margin expects
        bars = _load_bars(ids=[ticker_id], symbols=symbols, since=None, end=feature_date)
    bars = bars.tail(lookback).reset_index(drop=True).assign(ticker=ticker)
    if bars.empty or bars["date"].iloc[-1] != pd.Timestamp(feature_date):
        raise FeatureStoreError(f"{ticker}: no bar on its feature date {feature_date}")
    first = bars["date"].iloc[0].date()
    rows = list(NewsItem.objects.filter(ticker_id=ticker_id, sentiment__isnull=False).order_by().filter(
        published_at__gte=datetime.combine(first - timedelta(days=7), dt_time.min, tzinfo=UTC),
    ).values_list("published_at", "sentiment"))
    news = pd.DataFrame(rows, columns=["published_at", "score"])
    news["published_at"] = pd.to_datetime(news["published_at"], utc=True)
    cutoff = pd.Timestamp(close_of(feature_date))
    known = (news["published_at"] <= cutoff).to_numpy()
    social = posts_after = None
    if spec.social_windows:  # as the build: posts only for a feature set with social columns
        posts = social_posts_frame(ticker_ids=[ticker_id], symbols=symbols, since=first, end=None)
        before = (posts["posted_at"] <= cutoff).to_numpy()
        social = aggregate_social_daily(posts.loc[before])
        posts_after = posts.loc[~before].reset_index(drop=True)
    store = feature_store_for(version=version)
    market = store.market()
    return EngineWindow(
        ticker=ticker, spec=spec, feature_date=feature_date, bars=bars,
        fundamentals=_load_fundamentals(ids=[ticker_id], symbols=symbols, end=None),
        sentiment=aggregate_daily(news.loc[known].assign(ticker=ticker), time_col="published_at"),
        news_after=news.loc[~known].reset_index(drop=True),
        market=market if market is not None else pd.Series(dtype=np.float64, index=pd.DatetimeIndex([])),
        columns=list(version.feature_names), social=social, posts_after=posts_after,
    )


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------


@dataclass
class BuildSummary:
    feature_set: str
    version: str
    version_id: int
    materialization_id: int | None
    mode: str
    tickers: int = 0
    rows: int = 0
    label_rows: int = 0
    files_written: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    start_date: date | None = None
    end_date: date | None = None
    checksum: str = ""
    storage_path: str = ""
    market_days: dict[str, int] = field(default_factory=dict)
    online_vectors: int = 0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        what = "nothing new" if self.rows == 0 else f"{self.rows:,} rows"
        return (
            f"{self.feature_set}@{self.version} {self.mode} build: {self.tickers:,} tickers, {what} "
            f"in {self.seconds:.1f}s ({self.rows_per_second:,.0f} rows/s), {self.files_written} files"
        )

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["start_date"] = self.start_date.isoformat() if self.start_date else None
        d["end_date"] = self.end_date.isoformat() if self.end_date else None
        d["seconds"] = round(self.seconds, 3)
        d["rows_per_second"] = round(self.rows_per_second, 1)
        return d


def _as_date(value: Any, name: str) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise FeatureStoreError(f"invalid {name} date {value!r}: expected YYYY-MM-DD") from None


def _resolve_scope(tickers: Iterable[str] | None, start: date | None, end: date | None) -> tuple[dict[str, int], bool]:
    """(symbol -> ticker id of the tickers to build, explicit?). Raises on unknown tickers or no bars."""
    bars = PriceBar.objects.all()
    if start is not None:
        bars = bars.filter(date__gte=start)
    if end is not None:
        bars = bars.filter(date__lte=end)
    between = f" between {start or 'the first bar'} and {end or 'the last bar'}"
    if tickers is None:
        has_bars = Exists(bars.filter(ticker=OuterRef("pk")))
        scope = dict(Ticker.objects.filter(has_bars).order_by("symbol").values_list("symbol", "id"))
        if not scope:
            hint = "" if PriceBar.objects.exists() else ": ingest prices first"
            raise FeatureStoreError(f"no bars{between}{hint}")
        return scope, False
    wanted = sorted({t.strip().upper() for t in tickers if t and t.strip()})
    if not wanted:
        raise FeatureStoreError("no tickers given")
    scope = dict(Ticker.objects.filter(symbol__in=wanted).order_by("symbol").values_list("symbol", "id"))
    unknown = [t for t in wanted if t not in scope]
    if unknown:
        raise FeatureStoreError(f"unknown ticker{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
    with_bars = set(bars.filter(ticker_id__in=scope.values()).order_by().values_list("ticker_id", flat=True).distinct())
    empty = [s for s, i in scope.items() if i not in with_bars]
    if empty:
        raise FeatureStoreError(f"no bars for {', '.join(empty)}{between}")
    return scope, True


def _full_chunks(*, scope: dict[str, int], end: date | None, chunk_size: int,
                 social: bool = False) -> Iterator[ChunkData]:
    symbols = {i: s for s, i in scope.items()}
    for part in chunked(sorted(scope), chunk_size):
        ids = [scope[s] for s in part]
        yield ChunkData(
            bars=_load_bars(ids=ids, symbols=symbols, since=None, end=end),
            fundamentals=_load_fundamentals(ids=ids, symbols=symbols, end=end),
            sentiment=_load_sentiment(ids=ids, symbols=symbols, since=None, end=end),
            since=None,
            social=_load_social(ids=ids, symbols=symbols, since=None, end=end) if social else None,
        )


def _lookback_days(lookback: int) -> int:
    """Calendar days that normally hold ``lookback`` trading days (checked after loading)."""
    return int(math.ceil(lookback * 1.5)) + 30


def _incremental_chunks(*, scope: dict[str, int], since: dict[str, date | None], end: date | None,
                        lookback: int, chunk_size: int, social: bool = False) -> Iterator[ChunkData]:
    """Chunks holding, per ticker, ``lookback`` bars before its ``since`` date and every bar after it
    (all bars for tickers with ``since`` None: never stored)."""
    symbols = {i: s for s, i in scope.items()}
    for part in chunked(sorted(since), chunk_size):
        old = [s for s in part if since[s] is not None]
        new = [s for s in part if since[s] is None]
        frames = []
        load_from = None
        if old:
            load_from = min(since[s] for s in old) - timedelta(days=_lookback_days(lookback))
            bars = _load_bars(ids=[scope[s] for s in old], symbols=symbols, since=load_from, end=end)
            # tickers with gaps may need more history than the calendar margin gave
            tick = bars["ticker"].astype(str)
            first_new = tick.map({s: pd.Timestamp(since[s]) for s in old}).astype("datetime64[ns]")
            before = bars["date"].to_numpy() < first_new.to_numpy()
            counts = pd.Series(before).groupby(tick.to_numpy()).sum()
            short = [s for s in old if counts.get(s, 0) < lookback]
            if short:
                rows = _fetch(
                    f"SELECT DISTINCT ticker_id FROM {PriceBar._meta.db_table} "
                    f"WHERE {_in_clause('ticker_id', [scope[s] for s in short])} AND date < %s",
                    [load_from],
                )
                older = sorted(symbols[r[0]] for r in rows)
                if older:
                    keep = ~tick.isin(older).to_numpy()
                    frames.append(bars.loc[keep])
                    frames.append(_load_bars(ids=[scope[s] for s in older], symbols=symbols, since=None, end=end))
                else:
                    frames.append(bars)
            else:
                frames.append(bars)
        if new:
            load_from = None
            frames.append(_load_bars(ids=[scope[s] for s in new], symbols=symbols, since=None, end=end))
        frames = [f for f in frames if len(f)]
        if not frames:
            continue
        bars = pd.concat([f.assign(ticker=f["ticker"].astype(str)) for f in frames], ignore_index=True)
        ids = [scope[s] for s in part]
        yield ChunkData(
            bars=bars,
            fundamentals=_load_fundamentals(ids=ids, symbols=symbols, end=end),
            sentiment=_load_sentiment(ids=ids, symbols=symbols, since=load_from, end=end),
            since={s: since[s] for s in old},
            social=_load_social(ids=ids, symbols=symbols, since=load_from, end=end) if social else None,
        )


def _incremental_plan(*, store: FeatureStore, scope: dict[str, int], start: date | None,
                      end: date | None) -> dict[str, date | None]:
    """ticker -> first date to build (None: all its bars) for the tickers with new bars."""
    last = store.last_dates()
    stored = {s: last[s] for s in scope if s in last}
    plan: dict[str, date | None] = {s: None for s in scope if s not in last}
    if not stored:
        return plan
    floor = min(stored.values())
    where, params = ["date > %s"], [floor]
    if end is not None:
        where.append("date <= %s")
        params.append(end)
    ids = {scope[s]: s for s in stored}
    rows = _fetch(
        f"SELECT ticker_id, MAX(date) FROM {PriceBar._meta.db_table} WHERE {' AND '.join(where)} GROUP BY ticker_id",
        params,
    )
    for ticker_id, newest in rows:
        symbol = ids.get(ticker_id)
        if symbol is None:
            continue
        newest = newest if isinstance(newest, date) else date.fromisoformat(str(newest)[:10])
        first = stored[symbol] + timedelta(days=1)
        if start is not None and start > first:
            first = start
        if newest >= first:
            plan[symbol] = first
    return plan


def build_features(
    *,
    feature_set: str | None = None,
    start: Any = None,
    end: Any = None,
    tickers: Iterable[str] | None = None,
    full: bool = False,
    progress: Progress | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> BuildSummary:
    """Materialize features and labels of ``feature_set`` into the offline store, then refresh the
    online store.

    Full (``full=True``, or nothing stored yet): every bar of the tickers (all with bars when
    ``tickers`` is None) up to ``end``; rows in [start, end] replace the stored ones of those tickers.
    Incremental: per ticker, only the dates after its last stored date (from ``MAX_LOOKBACK`` bars of
    history), merged into the month partitions; values equal a full rebuild's. Nothing new: nothing
    is written. Every run is recorded as a ``FeatureMaterialization`` (failed, with the error, when
    it raises).
    """
    started = time.perf_counter()
    start_d, end_d = _as_date(start, "start"), _as_date(end, "end")
    if start_d and end_d and start_d > end_d:
        raise FeatureStoreError(f"start {start_d} is after end {end_d}")
    if chunk_size < 1:
        raise FeatureStoreError("chunk size must be at least 1")
    if isinstance(tickers, str):
        tickers = tickers.split(",")
    scope, explicit = _resolve_scope(tickers, start_d, end_d)
    version = _version_for_build(feature_set or configured_feature_set())
    spec = FeatureSpec.from_params(version.params)
    store = feature_store_for(version=version)
    incremental = not full and bool(store.last_dates())
    mode = FeatureMaterialization.Mode.INCREMENTAL if incremental else FeatureMaterialization.Mode.FULL
    rel = storage_path(version=version)
    mat = FeatureMaterialization.objects.create(
        version=version, mode=mode, start_date=start_d, end_date=end_d, tickers=len(scope),
        ticker_scope=",".join(scope) if explicit else "", storage_path=rel,
    )
    summary = BuildSummary(feature_set=version.feature_set.name, version=version.version, version_id=version.pk,
                           materialization_id=mat.pk, mode=mode, storage_path=rel)
    _log(progress, f"{summary.feature_set}@{version.version}: {mode} build of {len(scope):,} tickers "
         f"into {rel} (chunks of {chunk_size})")
    try:
        if incremental:
            plan = _incremental_plan(store=store, scope=scope, start=start_d, end=end_d)
            if not plan:
                summary.tickers = 0
                result = None
            else:
                stored_market = store.market()
                after = stored_market.index.max().date() if stored_market is not None and len(stored_market) else None
                dates = _universe_dates(after=after, end=end_d)
                returns, source, summary.market_days = _market(dates=dates, stored=stored_market)
                chunks = _incremental_chunks(scope=scope, since=plan, end=end_d, lookback=spec.max_lookback(),
                                             chunk_size=chunk_size, social=bool(spec.social_windows))
                result = materialize(
                    store=store, chunks=chunks, spec=spec, market_returns=returns, market_source=source,
                    incremental=True, start=start_d, end=end_d, tag=f"m{mat.pk}",
                    total_chunks=math.ceil(len(plan) / chunk_size), progress=progress,
                )
        else:
            dates = _universe_dates(after=None, end=end_d)
            returns, source, summary.market_days = _market(dates=dates, stored=None)
            replace = ReplaceScope(tickers=frozenset(scope) if explicit else None, start=start_d, end=end_d)
            result = materialize(
                store=store, chunks=_full_chunks(scope=scope, end=end_d, chunk_size=chunk_size,
                                                 social=bool(spec.social_windows)), spec=spec,
                market_returns=returns, market_source=source, incremental=False, replace=replace,
                start=start_d, end=end_d, tag=f"m{mat.pk}", total_chunks=math.ceil(len(scope) / chunk_size),
                progress=progress,
            )
        if summary.market_days.get("equal_weighted"):
            _log(progress, f"market: {MARKET_SYMBOL} missing on {summary.market_days['equal_weighted']} day(s), "
                 "equal-weighted universe return used there (ingest_benchmark fills it)")
        if result is not None:
            commit = result.commit
            summary.tickers, summary.rows, summary.label_rows = commit.tickers, commit.rows, commit.label_rows
            summary.files_written, summary.bytes_written = len(commit.files_written), commit.bytes_written
            summary.checksum = commit.checksum
            summary.start_date, summary.end_date = commit.min_date, commit.max_date
        summary.online_vectors = publish_online_features(version=version)
    except Exception as exc:
        mat.status = FeatureMaterialization.Status.FAILED
        mat.error = f"{type(exc).__name__}: {exc}"
        mat.finished_at = timezone.now()
        mat.duration_seconds = time.perf_counter() - started
        mat.save()
        raise
    summary.seconds = time.perf_counter() - started
    mat.status = FeatureMaterialization.Status.SUCCEEDED
    mat.tickers = summary.tickers
    mat.rows = summary.rows
    mat.files_written = summary.files_written
    mat.checksum = summary.checksum
    if summary.start_date:
        mat.start_date, mat.end_date = summary.start_date, summary.end_date
    mat.finished_at = timezone.now()
    mat.duration_seconds = summary.seconds
    mat.save()
    store.vacuum(min_age_s=86_400)
    if progress is None:
        logger.info(summary.line())
    return summary


# --------------------------------------------------------------------------------------------
# Online store
# --------------------------------------------------------------------------------------------


def _columns_hash(columns: list[str]) -> str:
    return content_hash({"columns": list(columns)})


def publish_online_features(*, version: FeatureSetVersion, tickers: Iterable[str] | None = None) -> int:
    """Write the latest stored vector of each ticker to the cache and point the feature set's
    index at ``version``. Returns the number of vectors written.

    Keys: ``features:online:<version id>:<TICKER>`` -> JSON {date, values, columns_hash, version...};
    ``features:online:index:<set>`` -> JSON {version, columns, tickers...};
    ``features:online:current:<set>`` -> the version id. Vectors go first, then the pointer, so a
    reader never follows the pointer to a version without vectors.
    """
    store = feature_store_for(version=version)
    manifest = store.manifest()
    frame = store.latest_rows(tickers=tickers, manifest=manifest)
    columns = version.feature_names
    chash = _columns_hash(columns)
    name = version.feature_set.name
    payload = online_payload(version=version, frame=frame)
    for start in range(0, len(payload), 1_000):
        keys = list(payload)[start : start + 1_000]
        cache.set_many({k: payload[k] for k in keys}, timeout=None)
    index = {
        "feature_set": name, "version_id": version.pk, "version": version.version, "columns": columns,
        "columns_hash": chash, "tickers": sorted(manifest["last_dates"]),
        "updated_at": timezone.now().isoformat(timespec="seconds"),
    }
    cache.set_many(
        {
            online_columns_key(version.pk): json.dumps(columns),
            online_index_key(name): json.dumps(index, separators=(",", ":")),
        },
        timeout=None,
    )
    cache.set(online_current_key(name), str(version.pk), timeout=None)
    return len(payload)


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def export_feature_matrix(*, path: Path, feature_set_version: Any = None, start: Any = None, end: Any = None,
                          tickers: Iterable[str] | None = None) -> int:
    """Write ``ticker, date, <every feature column>`` for the selection to one Parquet file
    (atomically: temporary file, fsync, rename). Returns the number of rows."""
    version = resolve_feature_set_version(version=feature_set_version)
    if isinstance(tickers, str):
        tickers = tickers.split(",")
    names = sorted({t.strip().upper() for t in tickers}) if tickers is not None else None
    frame = feature_store_for(version=version).read(
        "features", start=_as_date(start, "start"), end=_as_date(end, "end"), tickers=names
    )
    frame = frame[["ticker", "date", *version.feature_names]]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.set_column(1, "date", table["date"].cast(pa.date32()))
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), b"investml.feature_set": f"{version.feature_set.name}@{version.version}".encode()}
    )
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="snappy")
    atomic_write_bytes(Path(path), buf.getvalue(), fsync=True)
    return len(frame)


# --------------------------------------------------------------------------------------------
# Benchmark returns
# --------------------------------------------------------------------------------------------


@dataclass
class BenchmarkIngestSummary:
    symbol: str
    rows_read: int = 0
    rows_loaded: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0
    rows_rejected: int = 0
    first_date: date | None = None
    last_date: date | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["first_date"] = self.first_date.isoformat() if self.first_date else None
        d["last_date"] = self.last_date.isoformat() if self.last_date else None
        d["seconds"] = round(self.seconds, 3)
        return d


class BenchmarkFileError(FeatureStoreError):
    pass


def _parse_benchmark_csv(path: Path) -> tuple[pd.DataFrame, int]:
    """(date, ret) rows of a ``date,return`` CSV and the number of rows rejected."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise BenchmarkFileError(f"{path}: cannot read: {exc}") from exc
    cols = {c.strip().lower(): c for c in raw.columns}
    date_col = next((cols[c] for c in ("date", "timestamp", "datetime") if c in cols), None)
    ret_col = next((cols[c] for c in ("return", "ret", "returns") if c in cols), None)
    if date_col is None or ret_col is None:
        raise BenchmarkFileError(f"{path}: expected columns date,return (found {', '.join(raw.columns)})")
    stamps = pd.to_datetime(raw[date_col].str.strip(), errors="coerce", utc=True, format="mixed")
    rets = pd.to_numeric(raw[ret_col].str.strip(), errors="coerce")
    ok = stamps.notna() & rets.notna() & np.isfinite(rets) & (rets > -1.0)
    frame = pd.DataFrame({"date": stamps[ok].dt.date, "ret": rets[ok].astype(float)})
    dup = frame["date"].duplicated(keep=False)
    frame = frame.loc[~dup]
    return frame.sort_values("date").reset_index(drop=True), int((~ok).sum() + dup.sum())


def ingest_benchmark_returns(*, path: Path, symbol: str = MARKET_SYMBOL,
                             progress: Progress | None = None) -> BenchmarkIngestSummary:
    """Upsert a ``date,return`` CSV of daily benchmark returns (dates may carry a time and offset,
    e.g. "1993-02-01 00:00:00+00:00"; the UTC date is used). Re-running changes nothing; rows with
    an unparseable date or return, a return <= -100 %, or a date listed twice are rejected."""
    started = time.perf_counter()
    symbol = symbol.strip().upper()
    if not symbol:
        raise BenchmarkFileError("empty benchmark symbol")
    frame, rejected = _parse_benchmark_csv(Path(path))
    summary = BenchmarkIngestSummary(symbol=symbol, rows_read=len(frame) + rejected, rows_rejected=rejected)
    with transaction.atomic():
        existing = dict(BenchmarkReturn.objects.filter(symbol=symbol).values_list("date", "ret"))
        ids = dict(BenchmarkReturn.objects.filter(symbol=symbol).values_list("date", "id"))
        new, changed = [], []
        for d, r in zip(frame["date"].tolist(), frame["ret"].tolist(), strict=True):
            old = existing.get(d)
            if old is None:
                new.append(BenchmarkReturn(symbol=symbol, date=d, ret=r))
            elif old != r:
                changed.append(BenchmarkReturn(id=ids[d], symbol=symbol, date=d, ret=r))
        BenchmarkReturn.objects.bulk_create(new, batch_size=2_000)
        BenchmarkReturn.objects.bulk_update(changed, ["ret"], batch_size=2_000)
    summary.rows_loaded, summary.rows_updated = len(new), len(changed)
    summary.rows_unchanged = len(frame) - len(new) - len(changed)
    if len(frame):
        summary.first_date, summary.last_date = frame["date"].iloc[0], frame["date"].iloc[-1]
    summary.seconds = time.perf_counter() - started
    _log(progress, f"{Path(path).name}: {symbol} {summary.first_date}..{summary.last_date}: "
         f"{summary.rows_loaded:,} new, {summary.rows_updated:,} updated, {summary.rows_unchanged:,} unchanged, "
         f"{summary.rows_rejected:,} rejected")
    return summary
