"""Helpers of the benchmarks that drive ``manage.py`` on a scratch database (run as scripts, so
they import this module from their own folder)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def scratch_env(var: Path) -> dict[str, str]:
    """The environment of a benchmark's commands: embedded SQLite under ``var``, never the
    user's DATABASE_URL / REDIS_URL."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(INVESTML_VAR_DIR=str(var), PYTHONWARNINGS="ignore")
    return env


def manage(args: list[str], env: dict[str, str], *, check: bool = True, stream: bool = False) -> tuple[str, float]:
    """Run ``manage.py args``; returns (stdout, seconds). ``stream`` lets stderr (progress) through."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=None if stream else subprocess.PIPE)
    seconds = time.perf_counter() - started
    if check and result.returncode != 0:
        raise SystemExit(f"manage.py {args[0]} failed:\n{result.stdout[-3000:]}\n{(result.stderr or '')[-3000:]}")
    return result.stdout, seconds


def prepare_database(var: Path, env: dict[str, str], *, prices: list[Path], benchmark: Path,
                     build_args: tuple[str, ...] = (), reuse: bool = False) -> dict:
    """A fresh scratch database under ``var`` (migrate, ``ingest_prices`` of each file,
    ``ingest_benchmark``, ``build_features``), or with ``reuse`` the one an earlier run prepared.
    Returns what was measured: ``ingest_seconds`` per file, ``build_seconds``, ``build`` (its JSON)."""
    prepared = var / "prepared.json"
    if not (reuse and prepared.exists()):
        shutil.rmtree(var, ignore_errors=True)
        var.mkdir(parents=True)
        manage(["migrate", "--noinput", "-v0"], env)
        seconds = {}
        for path in prices:
            _, seconds[path.name] = manage(["ingest_prices", str(path), "--json"], env)
            print(f"ingested {path.name} in {seconds[path.name]:.1f}s", flush=True)
        manage(["ingest_benchmark", str(benchmark)], env)
        out, build_s = manage(["build_features", *build_args, "--json"], env, stream=True)  # its progress shows
        prepared.write_text(json.dumps({"ingest_seconds": seconds, "build_seconds": build_s,
                                        "build": last_json(out)}))
    prep = json.loads(prepared.read_text())
    print(f"scratch database {var}: build_features {prep['build_seconds']:.1f}s "
          f"({prep.get('build', {}).get('rows', '?')} rows)", flush=True)
    return prep


def last_json(text: str) -> dict:
    """The last line of a command's output that is JSON (its ``--json`` summary), else {}."""
    lines = [line for line in text.strip().splitlines() if line.startswith(("{", "["))]
    return json.loads(lines[-1]) if lines else {}
