"""Benchmark of the feature store on a synthetic market (a script, not a pytest test).

    .venv/bin/python tests/benchmarks/bench_feature_store.py [--tickers 6000 --years 10 --chunk-size 500]

Times, through the same code path ``build_features`` uses (``features.build.materialize``: chunks of
tickers -> engine -> labels -> month-partitioned Parquet -> atomic manifest commit):

* a full build of every ticker up to the day before the last one;
* a one-day incremental update (MAX_LOOKBACK bars of history per ticker + the new day, merged
  into the current month's partition);
* the seconds inside TA-Lib beside the whole build, and the peak RSS;
* reads: one year of features for every ticker, and the online store (Django cache) per ticker.

Bars come from ``features.synthetic.generate_market`` in memory, NOT from the database: 15M bars
through SQLite would be an ingestion benchmark (see bench_ingest.py), not a feature-store one. The
market is the equal-weighted universe (no SPY for synthetic tickers). Numbers depend on the machine
and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from features import engine, feature_sets  # noqa: E402
from features.build import ChunkData, combine_market, equal_weighted_returns, materialize  # noqa: E402
from features.store import FeatureStore  # noqa: E402
from features.synthetic import generate_market  # noqa: E402
from features.versioning import version_content  # noqa: E402

EW_MAX_GAP_DAYS = 120  # as the service


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def current_rss_gb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize() / 1024**3
    except OSError:
        return float("nan")


def ticker_bounds(bars: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Row offsets of each ticker in a ticker-major frame, and the symbols."""
    codes, uniques = pd.factorize(bars["ticker"], sort=False)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    if len(np.unique(codes[starts])) != len(starts):
        raise SystemExit("bars are not ticker-major")
    return np.r_[starts, len(codes)], np.asarray(uniques.astype(str))


def chunks_of(bars: pd.DataFrame, bounds: np.ndarray, size: int, *, before=None, since=None):
    """ChunkData of ``size`` tickers each, sliced from the in-memory frame (no copy of the whole)."""
    n = len(bounds) - 1
    for k in range(0, n, size):
        sub = bars.iloc[bounds[k] : bounds[min(k + size, n)]]
        if before is not None:
            sub = sub.loc[sub["date"].to_numpy() < before]
        sub = sub.assign(ticker=sub["ticker"].astype(str))
        chunk_since = None
        if since is not None:
            chunk_since = {t: since[t] for t in sub["ticker"].unique() if t in since}
        yield ChunkData(bars=sub, since=chunk_since)


def bench_online(root: Path, store: FeatureStore, n_reads: int, rows: list[tuple[str, str]]) -> None:
    """Publish the latest vectors to the configured Django cache and time reads per ticker."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "investml.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.cache import cache

    from features.models import FeatureSet, FeatureSetVersion
    from features.selectors import get_online_features, get_online_features_many, online_vector_key
    from features.services.online_store import publish_online_features

    settings.ML_FEATURES_PATH = root.parent.parent
    content = version_content(feature_sets.DEFAULT_SPEC)
    fs = FeatureSet(name=root.parent.name)
    version = FeatureSetVersion(pk=2_000_000_000 + os.getpid() % 100_000, feature_set=fs, version=root.name,
                                features=content["features"], params=content["params"])
    backend = settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]
    t = time.perf_counter()
    n = publish_online_features(version=version)
    rows.append((f"online publish ({backend})", f"{n:,} vectors in {time.perf_counter() - t:.1f} s"))
    tickers = sorted(store.last_dates())
    picks = [tickers[i % len(tickers)] for i in range(n_reads)]
    t = time.perf_counter()
    for symbol in picks:
        assert get_online_features(ticker=symbol, version=version.pk) is not None
    one = (time.perf_counter() - t) / n_reads
    t = time.perf_counter()
    for symbol in picks:
        assert get_online_features(ticker=symbol, feature_set=fs.name) is not None
    two = (time.perf_counter() - t) / n_reads
    t = time.perf_counter()
    for k in range(0, len(tickers), 100):
        get_online_features_many(tickers=tickers[k : k + 100], version=version.pk)
    many = (time.perf_counter() - t) / len(tickers)
    rows.append(("  get_online_features, version given", f"{one * 1e6:,.0f} us/ticker (1 cache read)"))
    rows.append(("  get_online_features, latest version", f"{two * 1e6:,.0f} us/ticker (2 cache reads)"))
    rows.append(("  get_online_features_many (100 per call)", f"{many * 1e6:,.0f} us/ticker"))
    cache.delete_many([online_vector_key(version.pk, s) for s in tickers])
    cache.delete_many([f"features:online:index:{fs.name}", f"features:online:current:{fs.name}",
                       f"features:online:columns:{version.pk}"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tickers", type=int, default=6000)
    ap.add_argument("--years", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk-size", type=int, default=500)
    ap.add_argument("--out", type=Path, default=REPO / "var" / "bench" / "feature_store")
    ap.add_argument("--keep", action="store_true", help="keep the Parquet store after the run")
    ap.add_argument("--no-online", action="store_true", help="skip the Django cache part")
    ap.add_argument("--online-reads", type=int, default=5000)
    args = ap.parse_args()

    rows: list[tuple[str, str]] = []
    say = rows.append
    set_name = f"bench-{os.getpid()}"
    root = args.out / set_name / "1.0.0"  # <ML_FEATURES_PATH>/<feature set>/<version>, as build_features
    shutil.rmtree(root.parent, ignore_errors=True)
    store = FeatureStore(root)

    t = time.perf_counter()
    bars = generate_market(args.tickers, args.years, args.seed, chunk_size=args.chunk_size)
    say(("synthetic bars (in memory, not from the DB)", f"{len(bars):,} ({args.tickers} tickers x {args.years:g} y), "
         f"generated in {time.perf_counter() - t:.1f} s"))
    bounds, _symbols = ticker_bounds(bars)
    last_day = bars["date"].max().to_datetime64()
    say(("RSS after generation", f"{current_rss_gb():.2f} GiB (peak {peak_rss_gb():.2f} GiB)"))

    # ---- full build up to the day before the last one ----------------------------------
    gc.collect()
    t0 = time.perf_counter()
    hist = bars["date"].to_numpy() < last_day
    ew = equal_weighted_returns(bars["ticker"].to_numpy()[hist], bars["date"].to_numpy()[hist],
                                   bars["adj_close"].to_numpy()[hist], max_gap_days=EW_MAX_GAP_DAYS)
    ret, src = combine_market(ew.index, benchmark=None, fallback=ew)
    del hist
    market_s = time.perf_counter() - t0
    n_chunks = -(-(len(bounds) - 1) // args.chunk_size)
    log: list[str] = []
    full = materialize(
        store=store, chunks=chunks_of(bars, bounds, args.chunk_size, before=last_day), spec=feature_sets.DEFAULT_SPEC,
        market_returns=ret, market_source=src, incremental=False, total_chunks=n_chunks, progress=log.append,
    )
    full_s = time.perf_counter() - t0
    c = full.commit
    print(log[0], "...", log[-1], sep="\n  ", file=sys.stderr)
    say(("full build (market + chunks + commit)", f"{full_s:.1f} s, {c.rows:,} rows ({c.rows / full_s:,.0f} rows/s)"))
    say(("  market series (equal-weighted)", f"{market_s:.1f} s"))
    say(("  engine (features)", f"{full.engine_s:.1f} s"))
    say(("  inside TA-Lib", f"{full.talib_s:.2f} s  -> whole build / TA-Lib = {full_s / max(full.talib_s, 1e-9):.1f}x"))
    say(("  Parquet writes (features + labels)", f"{full.write_s:.1f} s"))
    say(("  commit (fsync, manifest)", f"{full.commit_s:.1f} s"))
    say(("  written", f"{len(c.files_written):,} files, {c.bytes_written / 1024**3:.2f} GiB (features float32)"))
    say(("peak RSS after full build", f"{peak_rss_gb():.2f} GiB"))
    gc.collect()

    # ---- one-day incremental -------------------------------------------------------------
    t = time.perf_counter()
    window = engine.select_lookback(bars, last_day)  # stands in for the service's DB load
    # like the service's plan: only tickers with a bar on the new day
    traded = window.loc[window["date"].to_numpy() == last_day, "ticker"].unique()
    window = window.loc[window["ticker"].isin(traded).to_numpy()].reset_index(drop=True)
    select_s = time.perf_counter() - t
    t0 = time.perf_counter()
    since = {sym: pd.Timestamp(d) + pd.Timedelta(days=1) for sym, d in store.last_dates().items()}
    new_day = window["date"].to_numpy() == last_day
    ew_new = equal_weighted_returns(window["ticker"].to_numpy(), window["date"].to_numpy(),
                                       window["adj_close"].to_numpy(), max_gap_days=EW_MAX_GAP_DAYS)
    ret2, src2 = combine_market(window["date"].to_numpy()[new_day], benchmark=None, fallback=ew_new,
                                   stored=store.market())
    wb, _ = ticker_bounds(window)
    inc = materialize(
        store=store, chunks=chunks_of(window, wb, args.chunk_size, since=since), spec=feature_sets.DEFAULT_SPEC,
        market_returns=ret2, market_source=src2, incremental=True, total_chunks=n_chunks,
    )
    inc_s = time.perf_counter() - t0
    say(("one-day incremental", f"{inc_s:.1f} s -> {inc.rows:,} rows, {len(inc.commit.files_written)} files "
         f"rewritten (input {len(window):,} bars: MAX_LOOKBACK={feature_sets.MAX_LOOKBACK} + 1 per ticker)"))
    say(("  select the lookback window (DB load stand-in)", f"{select_s:.1f} s"))
    say(("  engine / TA-Lib / merge+commit", f"{inc.engine_s:.2f} s / {inc.talib_s:.2f} s / {inc.commit_s:.2f} s"))
    expected = int((bars["date"].to_numpy() == last_day).sum())
    say(("  rows of the new day", f"{inc.rows:,} (bars that day: {expected:,})"))
    del window
    gc.collect()
    say(("peak RSS (whole run)", f"{peak_rss_gb():.2f} GiB"))

    # ---- reads -------------------------------------------------------------------------------
    del bars
    gc.collect()
    start = pd.Timestamp(last_day) - pd.DateOffset(years=1)
    t = time.perf_counter()
    year = store.read("features", start=start)
    read_s = time.perf_counter() - t
    say(("read 1 year of features, all tickers", f"{read_s:.1f} s ({len(year):,} rows)"))
    del year
    assert store.verify() == [] if args.tickers <= 200 else True

    if not args.no_online:
        try:
            bench_online(root, store, args.online_reads, rows)
        except Exception as exc:  # the offline figures still count
            say(("online store", f"skipped: {type(exc).__name__}: {exc}"))

    if not args.keep:
        shutil.rmtree(root.parent, ignore_errors=True)

    width = max(len(k) for k, _ in rows)
    print(f"feature store benchmark ({len(feature_sets.FEATURE_COLUMNS)} features, chunks of {args.chunk_size} tickers, "
          f"{os.cpu_count()} CPUs, shared with other work)")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
