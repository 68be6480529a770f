"""What a feature build reads from the database (raw SQL into numpy, no model instances), chunk by
chunk as the engine takes it, and the same inputs for one ticker's next row (``engine_window``).

Market series: SPY returns (``BenchmarkReturn``) on the days it has, else the equal-weighted mean
return of every ticker with bars that day (a ticker's return from its previous bar, when that bar
is at most ``EW_MAX_GAP_DAYS`` calendar days older). The series a build used is stored with the
features; an incremental build reuses it and appends only the new days, so its values equal a full
rebuild's. Backfilled history (bars, benchmark returns or news added for days already built) is
only picked up by a ``full`` build.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from typing import Any

import numpy as np
import pandas as pd
from django.db import connection

from features.build import ChunkData, combine_market, equal_weighted_returns
from features.common import chunked
from features.feature_sets import FeatureSpec
from features.intraday import EngineWindow, close_of
from features.models import FeatureSetVersion, FundamentalSnapshot, NewsItem, PriceBar, Ticker
from features.selectors import benchmark_returns, feature_store_for
from features.sentiment import aggregate_daily
from features.services.benchmark_returns import MARKET_SYMBOL
from features.services.social import social_posts_frame
from features.services.store_errors import FeatureStoreError
from features.social import aggregate_social_daily
from features.store import FeatureStore

EW_MAX_GAP_DAYS = 120
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


def universe_dates(*, after: date | None, end: date | None) -> pd.DatetimeIndex:
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


def market_series(*, dates: pd.DatetimeIndex, stored: pd.Series | None) -> tuple[pd.Series, pd.Series, dict[str, int]]:
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


def full_chunks(*, scope: dict[str, int], end: date | None, chunk_size: int,
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


def incremental_chunks(*, scope: dict[str, int], since: dict[str, date | None], end: date | None,
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


def incremental_plan(*, store: FeatureStore, scope: dict[str, int], start: date | None,
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
