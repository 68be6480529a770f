"""Benchmark: ingest the 1.36M-row S&P 500 file into PostgreSQL (first load, then a no-op re-run).

Run: .venv/bin/python tests/benchmarks/bench_ingest.py [--database-url postgres://postgres@127.0.0.1:5432/investml_bench]
It drops and recreates that database. Figures are measured here, never typed in.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[2]
DEFAULT_FILE = REPO.parent / "shared/data/prices/sp500_yahoo_2000-01-03_2013-05-20.csv.gz"


def manage(args: list[str], env: dict[str, str]) -> tuple[dict, float]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "{}"
    return (json.loads(last) if last.startswith("{") else {}), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/investml_bench")
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    args = parser.parse_args()

    url = urlparse(args.database_url)
    dbname = url.path.lstrip("/")
    admin = ["psql", "-h", url.hostname or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres",
             "-d", "postgres", "-q", "-c"]
    subprocess.run([*admin, f"DROP DATABASE IF EXISTS {dbname}"], check=True)
    subprocess.run([*admin, f"CREATE DATABASE {dbname}"], check=True)

    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(DATABASE_URL=args.database_url, INVESTML_VAR_DIR=str(REPO / "var" / "bench"))
    manage(["migrate", "--noinput", "-v0"], env)
    first, first_wall = manage(["ingest_prices", str(args.file), "--json"], env)
    second, second_wall = manage(["ingest_prices", str(args.file), "--json"], env)

    print(f"ingest_prices into PostgreSQL, {args.file.name} ({os.cpu_count()} CPUs)")
    print(f"{'run':<10} {'rows read':>10} {'loaded':>10} {'unchanged':>10} {'ingest s':>9} {'wall s':>8} {'rows/s':>9}")
    for label, result, wall in (("first", first, first_wall), ("re-run", second, second_wall)):
        print(f"{label:<10} {result['rows_read']:>10,} {result['rows_loaded']:>10,} {result['rows_unchanged']:>10,} "
              f"{result['seconds']:>9.1f} {wall:>8.1f} {result['rows_read'] / result['seconds']:>9,.0f}")
    print(json.dumps({"benchmark": "ingest_prices_postgresql", "rows": first["rows_read"],
                      "first_seconds": first["seconds"], "rerun_seconds": second["seconds"],
                      "first_wall_seconds": round(first_wall, 2)}))
    if first["seconds"] >= 60:
        raise SystemExit(f"FAIL: first load took {first['seconds']:.1f}s, target is under 60s")


if __name__ == "__main__":
    main()
