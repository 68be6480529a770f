"""Benchmark of the feature engine on a synthetic market (a script, not a pytest test).

    .venv/bin/python tests/benchmarks/bench_features.py [--tickers 6000 --years 10 --dtype float32]

Reports: synthetic generation time, full build time, seconds inside TA-Lib calls and the overhead
ratio (build / TA-Lib), peak RSS, and a one-day incremental compute (last MAX_LOOKBACK + 1 bars of
every ticker). Numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from features import engine, feature_sets  # noqa: E402
from features.synthetic import generate_market  # noqa: E402


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def current_rss_gb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize() / 1024**3
    except OSError:
        return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tickers", type=int, default=6000)
    ap.add_argument("--years", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float64"],
        help="feature block dtype (float64 needs about twice the memory for the output)",
    )
    args = ap.parse_args()

    rows: list[tuple[str, str]] = []
    t = time.perf_counter()
    bars = generate_market(args.tickers, args.years, args.seed)
    gen_s = time.perf_counter() - t
    n_bars = len(bars)
    rows.append(("synthetic bars", f"{n_bars:,} ({args.tickers} tickers x {args.years:g} y)"))
    rows.append(("generate_market", f"{gen_s:.1f} s"))
    rss_before = current_rss_gb()
    rows.append(("RSS after generation", f"{rss_before:.2f} GiB"))

    gc.collect()
    tm: dict[str, float] = {}
    t = time.perf_counter()
    feats = engine.compute_features(bars, dtype=np.dtype(args.dtype), timings=tm)
    build_s = time.perf_counter() - t
    out_gb = feats.memory_usage(deep=False).sum() / 1024**3
    rows.append(("full build", f"{build_s:.1f} s ({n_bars / build_s / 1e6:.2f} M bars/s)"))
    rows.append(("  inside TA-Lib", f"{tm['talib']:.1f} s"))
    rows.append(("  overhead ratio build/TA-Lib", f"{build_s / max(tm['talib'], 1e-9):.1f}x"))
    for k in ("prepare", "joins", "per_ticker", "assemble"):
        rows.append((f"  phase {k}", f"{tm.get(k, float('nan')):.1f} s"))
    rows.append(("output frame", f"{feats.shape[0]:,} x {feats.shape[1]} ({args.dtype}, {out_gb:.2f} GiB)"))
    rows.append(("peak RSS after build", f"{peak_rss_gb():.2f} GiB"))
    del feats
    gc.collect()

    since = bars["date"].max()
    t = time.perf_counter()
    sub = engine.select_lookback(bars, since)
    sel_s = time.perf_counter() - t
    tm_inc: dict[str, float] = {}
    t = time.perf_counter()
    inc = engine.compute_features(sub, dtype=np.dtype(args.dtype), timings=tm_inc)
    inc = inc[inc["date"] >= since]
    inc_s = time.perf_counter() - t
    rows.append(
        ("one-day incremental", f"{len(sub):,} bars in (MAX_LOOKBACK={feature_sets.MAX_LOOKBACK}+1/ticker)")
    )
    rows.append(("  select last bars", f"{sel_s:.1f} s"))
    rows.append(("  compute", f"{inc_s:.1f} s -> {len(inc):,} rows (TA-Lib {tm_inc['talib']:.1f} s)"))
    rows.append(("peak RSS (whole run)", f"{peak_rss_gb():.2f} GiB"))

    print_rows(f"feature engine benchmark ({len(feature_sets.FEATURE_COLUMNS)} features)", rows)


def print_rows(title: str, rows: list[tuple[str, str]]) -> None:
    """A title, then one aligned ``label  value`` line per row."""
    width = max(len(k) for k, _ in rows)
    print(title)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
