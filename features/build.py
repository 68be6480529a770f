"""The feature build pipeline: chunks of bars -> features and labels -> the offline store.
Framework-free (no Django), so that the Django service (``features.services.feature_store``) and
the benchmark run the same code.

``compute_chunk`` turns one chunk of tickers (bars, fundamentals, sentiment, social posts) into
feature and label rows with ``features.engine`` and ``features.labels``; ``materialize`` runs every
chunk and commits the rows to a ``FeatureStore`` in one atomic commit, with the market return
series the build used (``combine_market`` of SPY and the ``equal_weighted_returns`` fallback).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.engine import compute_features, compute_features_incremental
from features.feature_sets import FeatureSpec
from features.labels import compute_labels
from features.store import FeatureStore
from features.store_format import LABEL_HORIZONS, STORE_DTYPE, ReplaceScope, day_numbers, sort_keys, to_date
from features.store_writer import CommitResult

__all__ = [
    "ChunkData",
    "ChunkResult",
    "MaterializeResult",
    "combine_market",
    "compute_chunk",
    "equal_weighted_returns",
    "materialize",
]

Progress = Callable[[str], None]


def equal_weighted_returns(ticker: Any, dates: Any, adj_close: Any, *, max_gap_days: int | None = None) -> pd.Series:
    """Equal-weighted daily market return of the given bars: the mean over tickers of the simple
    return from each ticker's previous bar (the engine's definition; 0.0 on a day nobody has one).

    ``max_gap_days``: ignore a return whose previous bar is more than that many calendar days
    older, so the value of a day never depends on how far back the bars were loaded.
    Rows are taken in (ticker, date) order, so the same bars give bit-identical means.
    """
    codes, _ = pd.factorize(pd.Series(ticker).astype(str), sort=True)
    d8 = np.asarray(pd.to_datetime(dates)).astype("datetime64[ns]").astype(np.int64)
    ac = np.asarray(adj_close, dtype=np.float64)
    ok = np.isfinite(ac) & (ac > 0)
    codes, d8, ac = codes[ok], d8[ok], ac[ok]
    order = np.lexsort((d8, codes))
    codes, d8, ac = codes[order], d8[order], ac[order]
    r = np.full(len(ac), np.nan)
    if len(ac) > 1:
        r[1:] = ac[1:] / ac[:-1] - 1.0
        r[1:][codes[1:] != codes[:-1]] = np.nan
        if max_gap_days is not None:
            r[1:][(d8[1:] - d8[:-1]) > int(max_gap_days) * 86_400 * 10**9] = np.nan
    date_codes, uniq = pd.factorize(d8, sort=True)
    fin = np.isfinite(r)
    sums = np.bincount(date_codes[fin], weights=r[fin], minlength=len(uniq))
    cnt = np.bincount(date_codes[fin], minlength=len(uniq))
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(cnt > 0, sums / np.maximum(cnt, 1), 0.0)
    index = pd.DatetimeIndex(np.asarray(uniq, dtype=np.int64).view("datetime64[ns]"))
    return pd.Series(m, index=index, name="ret")


def combine_market(dates: Any, *, benchmark: pd.Series | None, fallback: pd.Series | None,
                   stored: pd.Series | None = None) -> tuple[pd.Series, pd.Series]:
    """Market returns on ``dates``: the ``stored`` series where it has the day, else the benchmark
    (SPY), else the ``fallback`` (equal-weighted). Returns (returns, source) indexed by date."""
    idx = pd.DatetimeIndex(pd.to_datetime(pd.Index(dates))).normalize().unique().sort_values()
    ret = pd.Series(np.nan, index=idx, name="ret")
    src = pd.Series("", index=idx, dtype=object)
    for name, series in (("equal_weighted", fallback), ("benchmark", benchmark), ("stored", stored)):
        if series is None or len(series) == 0:
            continue
        s = pd.Series(series.to_numpy(dtype=np.float64), index=pd.DatetimeIndex(series.index).normalize())
        s = s[~s.index.duplicated(keep="last")].dropna()
        hit = idx.isin(s.index)
        ret[hit] = s.reindex(idx[hit]).to_numpy()
        src[hit] = name
    if stored is not None and len(stored):
        # keep the stored days that are outside ``dates`` too: the series is the build's record
        s = pd.Series(stored.to_numpy(dtype=np.float64), index=pd.DatetimeIndex(stored.index).normalize())
        extra = s[~s.index.isin(idx)]
        if len(extra):
            ret = pd.concat([ret, extra]).sort_index()
            src = pd.concat([src, pd.Series("stored", index=extra.index, dtype=object)]).sort_index()
    ok = ret.notna()
    return ret[ok], src[ok]


@dataclass
class ChunkData:
    """One chunk of tickers to build.

    ``bars``: ticker,date,open,high,low,close,adj_close,volume (for an incremental ticker at least
    the ``MAX_LOOKBACK`` bars before its ``since`` date, plus every bar from it on).
    ``since``: ticker -> first date to (re)compute; a ticker not in it (or ``since=None``) is
    computed from all its bars. ``fundamentals``/``sentiment``/``social``: as ``compute_features``
    takes them.
    """

    bars: pd.DataFrame
    fundamentals: pd.DataFrame | None = None
    sentiment: pd.DataFrame | None = None
    since: dict[str, Any] | None = None
    social: pd.DataFrame | None = None


@dataclass
class ChunkResult:
    features: pd.DataFrame
    labels: pd.DataFrame
    new_tickers: set[str]  # tickers computed from all their bars in an incremental chunk
    talib_s: float
    engine_s: float


def compute_chunk(
    chunk: ChunkData,
    *,
    spec: FeatureSpec,
    market_returns: pd.Series | None,
    start: Any = None,
    end: Any = None,
    horizons: Iterable[int] = LABEL_HORIZONS,
    dtype: Any = STORE_DTYPE,
) -> ChunkResult:
    """Features and labels of one chunk, restricted to [start, end] and to the rows to (re)write."""
    horizons = tuple(int(h) for h in horizons)
    bars = chunk.bars
    t0 = time.perf_counter()
    talib_s = 0.0
    kwargs = {"market_returns": market_returns, "fundamentals": chunk.fundamentals,
              "sentiment": chunk.sentiment, "params": spec, "dtype": dtype, "social": chunk.social}
    tick = bars["ticker"].astype(str)
    since_of: dict[str, pd.Timestamp] = {}
    if chunk.since:
        since_of = {str(t): pd.Timestamp(s) for t, s in chunk.since.items() if s is not None}
    present = set(tick.unique())
    new_tickers = present - set(since_of) if chunk.since is not None else set()
    groups: dict[pd.Timestamp | None, list[str]] = {}
    for t in sorted(present):
        groups.setdefault(since_of.get(t), []).append(t)
    frames = []
    for since, members in groups.items():
        sub = bars if len(groups) == 1 else bars.loc[tick.isin(members).to_numpy()]
        tm: dict[str, float] = {}
        if since is None:
            f = compute_features(sub, timings=tm, **kwargs)
        else:
            f = compute_features_incremental(sub, since, timings=tm, **kwargs)
        talib_s += tm.get("talib", 0.0)
        frames.append(f)
    if not frames:
        features = compute_features(bars, **kwargs)
    elif len(frames) == 1:
        features = frames[0]
    else:
        features = sort_keys(pd.concat(frames, ignore_index=True))
    engine_s = time.perf_counter() - t0

    labels = _labels_with_price(bars, horizons)
    if since_of:
        # rows whose label can change: from the max(h)-th bar before ``since`` on
        lt = labels["ticker"].astype(str)
        since_row = lt.map(since_of)
        is_old = (labels["date"] < since_row).to_numpy()  # NaT compares False: new tickers keep all
        pos = labels.groupby(lt, sort=False).cumcount().to_numpy()
        by_ticker = pd.Series(is_old).groupby(lt.to_numpy(), sort=False)
        n_old = by_ticker.transform("sum").to_numpy()
        n_all = by_ticker.transform("size").to_numpy()
        # a ticker without a new bar changes nothing; else rewrite from the max(h)-th bar before since
        keep = (pos >= n_old - max(horizons)) & (n_all > n_old)
        labels = labels.loc[keep].reset_index(drop=True)
    features = _in_range(features, start, end)
    labels = _in_range(labels, start, end)
    return ChunkResult(features=features, labels=labels, new_tickers=new_tickers, talib_s=talib_s,
                       engine_s=engine_s)


def _labels_with_price(bars: pd.DataFrame, horizons: tuple[int, ...]) -> pd.DataFrame:
    """compute_labels plus the adj_close of each row, columns in ``label_store_columns`` order."""
    lab = compute_labels(bars, horizons)
    ac = bars["adj_close"].to_numpy(dtype=np.float64, na_value=np.nan)
    ok = np.isfinite(ac) & (ac > 0)
    codes, _ = pd.factorize(bars["ticker"].astype(str), sort=True)
    d8 = day_numbers(bars["date"])
    codes, d8, ac = codes[ok], d8[ok], ac[ok]
    order = np.lexsort((d8, codes))
    if len(order) != len(lab) or not np.array_equal(d8[order], day_numbers(lab["date"])):
        raise AssertionError("labels and bars are not aligned")
    out = {"ticker": lab["ticker"].astype(str).to_numpy(), "date": lab["date"].to_numpy(),
           "adj_close": ac[order]}
    for h in horizons:
        out[f"fwd_ret_{h}"] = lab[f"fwd_ret_{h}"].to_numpy()
        out[f"fwd_dir_{h}"] = lab[f"fwd_dir_{h}"].to_numpy()
    return pd.DataFrame(out)


def _in_range(frame: pd.DataFrame, start: Any, end: Any) -> pd.DataFrame:
    if start is None and end is None:
        return frame
    d = frame["date"].to_numpy()
    keep = np.ones(len(frame), dtype=bool)
    if start is not None:
        keep &= d >= np.datetime64(to_date(start), "ns")
    if end is not None:
        keep &= d <= np.datetime64(to_date(end), "ns")
    return frame if keep.all() else frame.loc[keep].reset_index(drop=True)


@dataclass
class MaterializeResult:
    commit: CommitResult
    chunks: int
    bars: int
    seconds: float
    engine_s: float
    talib_s: float
    write_s: float
    commit_s: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.commit.rows


def materialize(
    *,
    store: FeatureStore,
    chunks: Iterable[ChunkData],
    spec: FeatureSpec,
    market_returns: pd.Series,
    market_source: pd.Series | None = None,
    incremental: bool,
    replace: ReplaceScope | None = None,
    start: Any = None,
    end: Any = None,
    tag: str = "",
    total_chunks: int | None = None,
    progress: Progress | None = None,
) -> MaterializeResult:
    """Compute every chunk and commit the result to ``store`` in one atomic commit.

    Full build (``incremental=False``): rows stream to new part files and ``replace`` says which
    stored rows they supersede. Incremental: rows of tickers the store already holds are merged
    into their month partitions; tickers it has never held stream to new part files.
    """
    started = time.perf_counter()
    engine_s = talib_s = write_s = 0.0
    n_bars = n_chunks = 0
    say = progress or (lambda _msg: None)
    with store.writer(replace=replace, tag=tag) as writer:
        for chunk in chunks:
            t0 = time.perf_counter()
            res = compute_chunk(chunk, spec=spec, market_returns=market_returns, start=start, end=end)
            t1 = time.perf_counter()
            if not incremental:
                writer.write_parts(features=res.features, labels=res.labels)
            elif res.new_tickers:
                fresh_f = res.features["ticker"].astype(str).isin(res.new_tickers).to_numpy()
                fresh_l = res.labels["ticker"].astype(str).isin(res.new_tickers).to_numpy()
                writer.write_parts(features=res.features.loc[fresh_f], labels=res.labels.loc[fresh_l])
                writer.upsert(features=res.features.loc[~fresh_f], labels=res.labels.loc[~fresh_l])
            else:
                writer.upsert(features=res.features, labels=res.labels)
            t2 = time.perf_counter()
            n_chunks += 1
            n_bars += len(chunk.bars)
            engine_s += res.engine_s
            talib_s += res.talib_s
            write_s += t2 - t1
            secs = t2 - t0
            of = f"/{total_chunks}" if total_chunks else ""
            say(f"chunk {n_chunks}{of}: {chunk.bars['ticker'].nunique():,} tickers, {len(chunk.bars):,} bars -> "
                f"{len(res.features):,} rows in {secs:.1f}s ({len(res.features) / max(secs, 1e-9):,.0f} rows/s)")
        t3 = time.perf_counter()
        if incremental and writer.rows == 0 and writer.label_rows == 0:
            writer.abort()  # nothing new: write nothing, not even the market series
            commit = CommitResult(generation=store.manifest()["generation"], files_written=[], files_removed=[],
                                  rows=0, label_rows=0, tickers=0, min_date=None, max_date=None, checksum="",
                                  bytes_written=0)
        else:
            writer.set_market(market_returns, market_source)
            commit = writer.commit()
        commit_s = time.perf_counter() - t3
    return MaterializeResult(
        commit=commit, chunks=n_chunks, bars=n_bars, seconds=time.perf_counter() - started,
        engine_s=engine_s, talib_s=talib_s, write_s=write_s, commit_s=commit_s,
    )
