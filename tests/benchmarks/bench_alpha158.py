"""Benchmark of the Alpha158 features on a synthetic market (a script, not a pytest test).

    .venv/bin/python tests/benchmarks/bench_alpha158.py [--tickers 6000 --years 10 --dtype float32]

Bars come from ``features.synthetic`` (ragged histories, zero-volume days), adjusted as the engine
does (open/high/low * adj_close / close), flattened into sorted arrays. The features fill one
preallocated Fortran-ordered block (6,000 tickers x 10 years is ~15M rows x 157 columns: 9.4 GB in
float32). Reports rows, seconds, rows/s, seconds per operator group and peak RSS. Numbers depend on
the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench_features import peak_rss_gb, print_rows  # noqa: E402  (this folder: the scripts run from it)

from features import alpha158  # noqa: E402
from features.synthetic import iter_market_chunks  # noqa: E402


def synthetic_arrays(n_tickers: int, years: float, seed: int) -> dict[str, np.ndarray]:
    """Adjusted OHLC, volume and ticker bounds of a synthetic market, sorted by (ticker, date)."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("open", "high", "low", "close", "volume", "code")}
    for bars, _ in iter_market_chunks(n_tickers, years, seed):
        adj = bars["adj_close"].to_numpy(dtype=np.float64)
        factor = adj / bars["close"].to_numpy(dtype=np.float64)
        for k in ("open", "high", "low"):
            parts[k].append(bars[k].to_numpy(dtype=np.float64) * factor)
        parts["close"].append(adj)
        parts["volume"].append(bars["volume"].to_numpy(dtype=np.float64))
        parts["code"].append(bars["ticker"].cat.codes.to_numpy(dtype=np.int64))
    out = {k: np.concatenate(v) for k, v in parts.items()}
    codes = out.pop("code")
    starts = np.flatnonzero(np.diff(codes)) + 1
    out["bounds"] = np.concatenate([[0], starts, [len(codes)]]).astype(np.int64)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tickers", type=int, default=6000)
    ap.add_argument("--years", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = ap.parse_args()

    t = time.perf_counter()
    bars = synthetic_arrays(args.tickers, args.years, args.seed)
    gen_s = time.perf_counter() - t
    n = len(bars["close"])
    columns = alpha158.alpha158_columns()
    out = np.empty((n, len(columns)), dtype=np.dtype(args.dtype), order="F")
    out[:] = 0.0  # touch the pages now, so the timing below excludes first-touch page faults

    timings: dict[str, float] = {}
    t = time.perf_counter()
    alpha158._compute(
        bars["open"], bars["high"], bars["low"], bars["close"], bars["volume"], bars["bounds"],
        alpha158.ALPHA158_WINDOWS, out, out.dtype, timings,
    )  # fmt: skip
    build_s = time.perf_counter() - t

    rows = [
        (
            "synthetic bars",
            f"{n:,} rows ({args.tickers} tickers x {args.years:g} y), generated in {gen_s:.1f} s",
        ),
        ("output block", f"{n:,} x {len(columns)} {args.dtype} ({out.nbytes / 1024**3:.2f} GiB)"),
        ("compute_alpha158", f"{build_s:.1f} s ({n / build_s / 1e6:.2f} M rows/s)"),
    ]
    for key, sec in sorted(timings.items(), key=lambda kv: -kv[1]):
        rows.append((f"  {key}", f"{sec:.2f} s"))
    rows.append(("peak RSS", f"{peak_rss_gb():.2f} GiB"))
    print_rows(f"alpha158 benchmark ({len(columns)} features)", rows)


if __name__ == "__main__":
    main()
