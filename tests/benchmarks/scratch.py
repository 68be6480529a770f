"""Helpers of the benchmarks that drive ``manage.py`` on a scratch database (run as scripts, so
they import this module from their own folder)."""

from __future__ import annotations

import os
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
