"""Benchmark: ``manage.py retrain --sync`` for 500 real S&P 500 tickers (all four learners, the
configs of config/pipeline.json), target under 15 minutes on the 2-core machine.

Run: .venv/bin/python tests/benchmarks/bench_retrain.py [--tickers 500] [--reuse]

It builds a scratch SQLite database under var/bench-retrain (INVESTML_VAR_DIR): migrate,
``ingest_prices`` of sp500_yahoo_2013-05-21_2018-05-18.csv.gz, ``ingest_benchmark`` of SPY, and
``build_features`` (timed apart; ``--reuse`` keeps an earlier build), then times ``retrain --sync``
on the N tickers with the most history (ties by symbol; the file holds 480, so "500" means all of
them) and prints every stage. Figures are measured here, never typed in.
"""

from __future__ import annotations

import argparse
import json
import os

import pandas as pd
from scratch import REPO, last_json, manage, prepare_database, scratch_env

DATA = REPO.parent / "shared" / "data"
PRICES = DATA / "prices" / "sp500_yahoo_2013-05-21_2018-05-18.csv.gz"
SPY = DATA / "benchmarks" / "SPY_benchmark.csv"
VAR = REPO / "var" / "bench-retrain"
TARGET_SECONDS = 15 * 60


def choose_tickers(n: int) -> list[str]:
    counts = pd.read_csv(PRICES, usecols=["ticker"])["ticker"].value_counts()
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return sorted(t for t, _ in ranked[:n])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tickers", type=int, default=500, help="How many tickers to train on")
    parser.add_argument("--reuse", action="store_true", help="Keep an earlier database and feature build")
    args = parser.parse_args()

    env = scratch_env(VAR)
    prepare_database(VAR, env, prices=[PRICES], benchmark=SPY, reuse=args.reuse)

    tickers = choose_tickers(args.tickers)
    load_before = os.getloadavg()
    out, wall = manage(["retrain", "--sync", "--tickers", ",".join(tickers), "--json"], env, check=False)
    run = last_json(out)
    if not run:
        raise SystemExit(f"retrain printed no JSON:\n{out[-3000:]}")
    print(f"\nretrain --sync, {len(tickers)} tickers, all four learners ({os.cpu_count()} CPUs): "
          f"{run['status']} in {wall:.1f}s wall, {run['cpu_seconds']:.0f} CPU s, ${run['cost_usd']:.4f}")
    load_after = os.getloadavg()
    print(f"load average (1, 5, 15 min) before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} (other work on the machine slows "
          "the wall time; the CPU seconds are the run's own)")
    print(f"{'stage':<36} {'status':<10} {'wall s':>8} {'CPU s':>8}")
    for stage in run["stages"]:
        print(f"{stage['name']:<36} {stage['status']:<10} {stage['seconds']:>8.1f} {stage['cpu_seconds']:>8.1f}")
    for version in run["versions"]:
        print(f"  {version['model']}@{version['version']}: {version['status']}")
    if run["error"]:
        print(run["error"])
    print(json.dumps({"benchmark": "retrain_sync", "tickers": len(tickers), "status": run["status"],
                      "wall_seconds": round(wall, 1), "cpu_seconds": round(run["cpu_seconds"], 1),
                      "load_average_15min": round(load_after[2], 2), "target_seconds": TARGET_SECONDS}))
    if run["status"] != "succeeded":
        raise SystemExit("FAIL: the training run did not succeed")
    available = len(choose_tickers(10_000))
    if len(tickers) >= min(500, available) and wall >= TARGET_SECONDS:
        raise SystemExit(f"FAIL: {wall:.0f}s, target is under {TARGET_SECONDS}s")


if __name__ == "__main__":
    main()
