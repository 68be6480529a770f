"""Benchmark: forecast skill out of sample, Qlib-style, through the project's own commands.

Run: .venv/bin/python tests/benchmarks/bench_skill.py [--feature-set default|alpha158] [--horizon 5]
     [--first-test-year 2007] [--models a,b] [--reuse] [--reuse-predictions]

It builds a scratch SQLite database under var/bench-skill (INVESTML_VAR_DIR): migrate,
``ingest_prices`` of both S&P 500 files of ``../shared/data/prices`` (2000-01-03..2018-05-18, 480+
tickers), ``ingest_benchmark`` of SPY, ``build_features --feature-set``; then
``evaluation_report --yearly`` with expanding yearly refits: every calendar year from
``--first-test-year`` on is one out-of-sample fold, fitted on everything before it minus the purge
gap. Its table (IC, ICIR, rank IC, rank ICIR, rank IC t, net decile-book return and IR at 10 bps a
side, turnover, max drawdown, rank IC by year) is printed and written to
bench-results/skill-<feature set>-h<horizon>.md (and .json). Figures are measured, never typed in.
Every model's out-of-sample predictions are kept in var/bench-skill-<feature set>/predictions-h<horizon>;
``--reuse-predictions`` re-stacks the ensemble and recomputes the table from them without training
the learners again (``evaluation_report --reuse-predictions``).
The data are for benchmarks only (the test suite never reads them); a user gets them as described
in ../shared/data/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pandas as pd
from scratch import REPO, manage, prepare_database, scratch_env

DATA = REPO.parent / "shared" / "data"
PRICES = [DATA / "prices" / "sp500_yahoo_2000-01-03_2013-05-20.csv.gz",
          DATA / "prices" / "sp500_yahoo_2013-05-21_2018-05-18.csv.gz"]
SPY = DATA / "benchmarks" / "SPY_benchmark.csv"
RESULTS = REPO / "bench-results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feature-set", default="default", choices=("default", "alpha158", "default_cs", "alpha158_cs"))
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--first-test-year", type=int, default=2007,
                        help="The first out-of-sample year; it only trains the ensemble's stack, so the table "
                        "(every model on the rows the ensemble scored) starts a year later")
    parser.add_argument("--models", help="Comma-separated learners (default: all and the ensemble)")
    parser.add_argument("--hold-days", type=int, default=1, help="Rebalance the decile book every N days")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=JSON",
                        help="Override a pipeline config value, e.g. models.xgboost_classifier.objective='\"rank\"'")
    parser.add_argument("--tag", default="", help="Suffix of the result files")
    parser.add_argument("--reuse", action="store_true", help="Keep an earlier database and feature build")
    parser.add_argument("--reuse-predictions", action="store_true",
                        help="Take the learners' predictions from an earlier run with the same options")
    args = parser.parse_args()
    missing = [str(p) for p in [*PRICES, SPY] if not p.exists()]
    if missing:
        raise SystemExit(f"benchmark data not found: {', '.join(missing)} (see ../shared/data/README.md)")

    var = REPO / "var" / f"bench-skill-{args.feature_set}"
    env = scratch_env(var)
    prepare_database(var, env, prices=PRICES, benchmark=SPY, build_args=("--feature-set", args.feature_set),
                     reuse=args.reuse)

    # the first test year needs every earlier date for training: min_train_days = dates before it
    dates = pd.concat([pd.read_csv(p, usecols=["date"])["date"] for p in PRICES]).drop_duplicates()
    before = int((pd.to_datetime(dates) < pd.Timestamp(f"{args.first_test_year}-01-01")).sum())
    report_args = ["evaluation_report", "--yearly", "--min-train-days", str(before - args.horizon - 1),
                   "--horizon", str(args.horizon), "--hold-days", str(args.hold_days), "--markdown", "--json"]
    if args.models:
        report_args += ["--models", args.models]
    predictions = var / f"predictions-h{args.horizon}{args.tag}"
    report_args += ["--reuse-predictions" if args.reuse_predictions else "--save-predictions", str(predictions)]
    env_report = {**env, "ML_PIPELINE_CONFIG": env.get("ML_PIPELINE_CONFIG", str(REPO / "config" / "pipeline.json"))}
    if args.feature_set != "default" or args.set:
        config = json.loads(Path(env_report["ML_PIPELINE_CONFIG"]).read_text())
        config.setdefault("training", {})["feature_set"] = args.feature_set
        for item in args.set:
            key, _, value = item.partition("=")
            *parents, leaf = key.split(".")
            node = config
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = json.loads(value)
        path = var / f"pipeline{args.tag}.json"
        path.write_text(json.dumps(config))
        env_report["ML_PIPELINE_CONFIG"] = str(path)
    load_before = os.getloadavg()
    out, wall = manage(report_args, env_report, stream=True)
    lines = out.strip().splitlines()
    report = json.loads(lines[-1])
    table = "\n".join(lines[:-1])
    footer = (f"\nWall {wall:.0f}s on {os.cpu_count()} cores (load {load_before[2]:.1f} before), feature set "
              f"{args.feature_set}, horizon {args.horizon}, config {env_report['ML_PIPELINE_CONFIG']}"
              f"{' with ' + ', '.join(args.set) if args.set else ''}.")
    print(table + footer, flush=True)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"skill-{args.feature_set}-h{args.horizon}{args.tag}"
    stem.with_suffix(".md").write_text(table + footer + "\n")
    stem.with_suffix(".json").write_text(json.dumps({**report, "wall_seconds": wall}, default=str))


if __name__ == "__main__":
    main()
