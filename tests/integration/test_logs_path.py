"""``ML_LOGS_PATH`` holds the training and pipeline log: every process appends the app loggers'
lines to ``pipeline.log`` there (as well as the console), checked with real commands in a scratch
database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _manage(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def test_pipeline_lines_land_in_ml_logs_path(tmp_path):
    logs = tmp_path / "logs"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(INVESTML_VAR_DIR=str(tmp_path / "var"), ML_LOGS_PATH=str(logs), PYTHONWARNINGS="ignore")
    _manage(["migrate", "--noinput", "-v0"], env)
    result = _manage(["run_pipeline", "--sync", "--noop", "0", "--reason", "log check"], env)
    text = (logs / "pipeline.log").read_text()
    assert "INFO training.orchestrator.triggers: pipeline run 1 queued: command trigger" in text
    assert "(log check)" in text and "INFO training.orchestrator" in result.stderr  # the console keeps them too
