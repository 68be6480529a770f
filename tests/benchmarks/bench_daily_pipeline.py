"""Benchmark: the next day's daily pipeline at market scale, through the project's own commands.

Run: .venv/bin/python tests/benchmarks/bench_daily_pipeline.py [--tickers 1500] [--years 4]

In a scratch SQLite database under var/bench-daily-<tickers> (INVESTML_VAR_DIR):

1. ``generate_market`` writes N synthetic tickers x Y years of bars ending on the last completed
   NYSE trading day (today's calendar); every bar before that day is loaded with ``ingest_prices``
   and ``build_features`` (timed: the "load");
2. the weekly evaluation on that history: ``retrain --sync`` (walk-forward evaluation, final fit,
   registry and gate of every learner, as configured in ``config/pipeline.json``; timed);
3. the last day's bars are served by a local stand-in of Polygon's bulk API
   (``tests/fakes/provider_server.py``, the documented formats), and ``run_pipeline --sync --json``
   runs the next day's pipeline with ``ML_MARKET_DATA_PROVIDER=polygon``: bulk update, incremental
   features, the daily plan (XGBoost and the LSTM refit, Prophet kept, the ensemble restacked; see
   the README's "Daily and weekly runs"), batch predictions for every ticker, drift.

Both run with ``MODEL_PERFORMANCE_THRESHOLD=0``: synthetic random walks hold no skill for the gate,
and a learner the gate rejects is not refit on the following days, which would time a daily run with
nothing to train rather than the worst case measured here.

``--workers N`` runs both through Celery instead (``retrain`` and ``run_pipeline`` queued, one
worker with N processes on the filesystem broker, as ``make run`` starts it): feature chunks and
Prophet's ticker chunks then run in parallel. ``--workers 0`` (the default) runs them in the command
(``--sync``).

Printed: each stage's wall seconds and counts (from the run's own record), the pipeline's CPU
seconds (the child process's rusage) and the peak memory of the largest command so far (rusage's
maximum over the benchmark's children), and the requests the update made. Results go
to bench-results/daily-pipeline-<tickers>.json. Figures are measured, never typed in.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from scratch import REPO, last_json, manage, scratch_env

sys.path.insert(0, str(REPO))
from tests.fakes.provider_server import FakeProviderServer  # noqa: E402

RESULTS = REPO / "bench-results"
KEY = "BENCH-KEY-0001"


def trading_days(env: dict[str, str]) -> tuple[str, str]:
    """(the last completed NYSE trading day, the trading day before it), by the project's calendar."""
    code = ("from datetime import timedelta\n"
            "from features.trading_calendar import is_trading_day, last_completed_trading_day\n"
            "d = last_completed_trading_day(); p = d - timedelta(days=1)\n"
            "while not is_trading_day(p): p -= timedelta(days=1)\n"
            "print(d.isoformat(), p.isoformat())")
    out, _ = manage(["shell", "-c", code], env)
    as_of, before = out.split()[-2:]
    return as_of, before


@contextmanager
def celery_worker(env: dict[str, str], processes: int, log: Path) -> Iterator[None]:
    """One Celery worker with ``processes`` pool processes for the duration (0: none)."""
    if processes <= 0:
        yield
        return
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "investml", "worker", "--loglevel=INFO", f"--concurrency={processes}",
         "--without-gossip", "--without-mingle", "--queues=celery,maintenance"],
        cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "ready." not in log.read_text():
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the Celery worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield
    finally:
        os.kill(worker.pid, signal.SIGTERM)  # warm shutdown; its CPU counts once it is waited for
        try:
            worker.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def wait_finished(var: Path, table: str, *, finished: tuple[str, ...]) -> None:
    """Poll the scratch database until the newest row of ``table`` has a finished status."""
    with sqlite3.connect(var / "investml.sqlite3", timeout=60) as db:
        while True:
            row = db.execute(f"SELECT status FROM {table} ORDER BY id DESC LIMIT 1").fetchone()  # noqa: S608
            if row and row[0] in finished:
                return
            time.sleep(5)


def run_command(args: list[str], env: dict[str, str], *, var: Path, workers: int, kind: str) -> tuple[dict, float]:
    """``manage.py args`` in the command (``--sync``), or queued on a worker and awaited; returns the
    run's summary and the wall seconds."""
    started = time.perf_counter()
    if workers <= 0:
        out, _ = manage([*args, "--sync", "--json"], env, stream=True, check=False)  # a failed run prints its stages
        return last_json(out), time.perf_counter() - started
    table = "training_pipelinerun" if kind == "pipeline" else "training_trainingrun"
    with celery_worker(env, workers, var / f"worker-{kind}.log"):
        manage([*args, "--json"], env)
        wait_finished(var, table, finished=("succeeded", "failed", "cancelled", "skipped"))
        wall = time.perf_counter() - started
    out, _ = manage(["retrain", "--status", "--json", "--limit", "1"], env)
    pipelines, trainings = (json.loads(line) for line in out.strip().splitlines()[-2:])
    return (pipelines["pipeline_runs"][0] if kind == "pipeline" else trainings[0]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickers", type=int, default=1500)
    parser.add_argument("--years", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=0,
                        help="0: run in the command (--sync); N: through one Celery worker of N processes")
    args = parser.parse_args()

    label = f"{args.tickers}" + (f"-workers{args.workers}" if args.workers else "")
    var = REPO / "var" / f"bench-daily-{label}"
    env = scratch_env(var)
    import shutil

    shutil.rmtree(var, ignore_errors=True)
    var.mkdir(parents=True)
    manage(["migrate", "--noinput", "-v0"], env)
    as_of, before = trading_days(env)
    n_days = int(round(args.years * 252))
    start = pd.bdate_range(end=pd.Timestamp(as_of), periods=n_days)[0].date().isoformat()
    bars_path = var / "market.parquet"
    _, gen_s = manage(["generate_market", "--tickers", str(args.tickers), "--years", str(args.years),
                       "--seed", str(args.seed), "--start", start, "--out", str(bars_path)], env)
    bars = pd.read_parquet(bars_path)
    bars["date"] = pd.to_datetime(bars["date"])
    last = bars[bars["date"] == pd.Timestamp(as_of)]
    history = var / "history.parquet"
    bars[bars["date"] < pd.Timestamp(as_of)].to_parquet(history, index=False)
    print(f"generated {len(bars):,} bars of {args.tickers} tickers in {gen_s:.0f}s; history to {before}, "
          f"next day {as_of} ({len(last):,} bars)", flush=True)
    _, ingest_s = manage(["ingest_prices", str(history), "--json"], env)
    out, build_s = manage(["build_features", "--json"], env, stream=True)
    print(f"load: ingest_prices {ingest_s:.0f}s, build_features {build_s:.0f}s ({last_json(out).get('rows')} rows)",
          flush=True)
    env["MODEL_PERFORMANCE_THRESHOLD"] = "0"
    weekly_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    weekly, weekly_s = run_command(["retrain"], env, var=var, workers=args.workers, kind="training")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    weekly_cpu = (usage.ru_utime - weekly_usage.ru_utime) + (usage.ru_stime - weekly_usage.ru_stime)
    weekly_lines = [f"Weekly evaluation (retrain) on the history to {before}: status {weekly.get('status')}, "
                    f"wall {weekly_s:.0f}s, CPU {weekly_cpu:.0f}s", "", "| stage | seconds |", "| --- | ---: |"]
    weekly_lines += [f"| {st['name']} | {st.get('seconds') or 0:.1f} |" for st in weekly.get("stages", [])]
    print("\n".join(weekly_lines), flush=True)

    with FakeProviderServer(api_keys=(KEY,)) as server:
        server.polygon_bars = last[["ticker", "date", "open", "high", "low", "close", "volume"]].reset_index(drop=True)
        run_env = {**env, "ML_MARKET_DATA_PROVIDER": "polygon", "POLYGON_BASE_URL": server.base_url,
                   "POLYGON_API_KEY": KEY}
        before_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        run, wall = run_command(["run_pipeline", "--reason", "bench_daily_pipeline"], run_env, var=var,
                                workers=args.workers, kind="pipeline")
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        requests_made = len(server.requests)
    cpu = (usage.ru_utime - before_usage.ru_utime) + (usage.ru_stime - before_usage.ru_stime)
    mode = f"one Celery worker of {args.workers} processes" if args.workers else "in the command (--sync)"
    lines = [f"Next day's pipeline ({as_of}), {args.tickers} tickers x {args.years:g} years, {os.cpu_count()} cores, "
             f"{mode}: "
             f"status {run.get('status')}, wall {wall:.0f}s, CPU {cpu:.0f}s, peak RSS {usage.ru_maxrss / 1e6:.2f} GB, "
             f"{requests_made} provider requests", "", "| stage | status | seconds | counts |", "| --- | --- | ---: | --- |"]
    for stage in run.get("stages", []):
        counts = ", ".join(f"{k}={v}" for k, v in (stage.get("counts") or {}).items()
                           if not isinstance(v, dict | list))[:160]
        lines.append(f"| {stage['name']} | {stage['status']} | {stage.get('seconds') or 0:.1f} | {counts} |")
    table = "\n".join([*lines, "", *weekly_lines])
    print(table, flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"daily-pipeline-{label}.json").write_text(json.dumps({
        "tickers": args.tickers, "workers": args.workers, "years": args.years, "as_of": as_of, "generate_seconds": gen_s,
        "ingest_seconds": ingest_s, "build_seconds": build_s, "weekly_wall_seconds": weekly_s,
        "weekly_cpu_seconds": weekly_cpu, "weekly": weekly, "pipeline_wall_seconds": wall,
        "pipeline_cpu_seconds": cpu, "peak_rss_bytes": usage.ru_maxrss * 1024, "provider_requests": requests_made,
        "run": run}, default=str))
    (RESULTS / f"daily-pipeline-{label}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
