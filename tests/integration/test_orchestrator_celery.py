"""The orchestrator with real Celery worker processes, on the embedded broker or on Redis (when
REDIS_URL is set), against the test database: five runs requested at once never have more than
three running and all finish; a worker SIGKILLed during training leaves no run stuck "running",
the run is retried on a fresh worker, and every registered version's artifact verifies (the
feature build fans out as a chord of chunk tasks there)."""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection

from features.models import Ticker
from inference.models import DailyPrediction
from investml.celery import app
from investml.pipeline_config import load_pipeline_config
from registry import artifacts
from registry.models import ModelVersion
from training.models import PipelineRun, PipelineStage, TrainingRun
from training.orchestrator.stages import STAGES
from training.orchestrator.triggers import request_pipeline_run

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data" / "prices" / "sp500_sample_2013-05-21_2018-05-18.csv.gz"
TICKERS = ["AAPL", "AMZN", "GOOGL", "JNJ", "JPM", "MSFT", "WMT", "XOM"]
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _env(extra: dict[str, str]) -> dict[str, str]:
    db = connection.settings_dict
    env = dict(os.environ)
    if connection.vendor == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
        env["DATABASE_URL"] = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env["INVESTML_VAR_DIR"] = str(django_settings.VAR_DIR)
    env.update(extra)
    return env


def _wait_for(predicate, timeout: float, every: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


@pytest.fixture
def workers(tmp_path):
    """start(env, name, concurrency) -> (process, log); every worker is stopped at the end."""
    app.control.purge()
    started: list[subprocess.Popen] = []

    def start(extra: dict[str, str], name: str, concurrency: int = 3) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"{name}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "investml", "worker", "--loglevel=INFO",
             f"--concurrency={concurrency}", "--without-gossip", "--without-mingle",
             "--hostname", f"{name}-{os.getpid()}@%h"],
            cwd=REPO, env=_env(extra), stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        started.append(process)
        assert _wait_for(lambda: "ready." in log.read_text() or process.poll() is not None, 90), log.read_text()
        assert process.poll() is None, log.read_text()
        return process, log

    yield start
    for process in started:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)  # warm shutdown: the main process stops its pool
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    app.control.purge()


def _knobs(settings, values: dict[str, str]) -> dict[str, str]:
    """``values`` as this process's settings (each cast to its setting's type) and, returned, as the
    workers' environment."""
    for key, value in values.items():
        setattr(settings, key, type(getattr(settings, key))(value))
    return values


def test_five_runs_at_once_never_more_than_three_running_and_all_finish(workers, settings):
    env = _knobs(settings, {"ML_PIPELINE_HEARTBEAT_SECONDS": "0.5", "ML_PIPELINE_HEARTBEAT_TIMEOUT_SECONDS": "20",
                            "ML_PIPELINE_POLL_SECONDS": "0.5"})
    workers(env, "limits", concurrency=4)
    started = time.monotonic()
    runs = [request_pipeline_run(trigger="api", requested_by="load test", tickers=[f"LOAD{i}"],
                                 options={"noop_seconds": 1.0}) for i in range(5)]
    assert len({r.pk for r in runs}) == 5
    seen: list[int] = []

    def finished() -> bool:
        seen.append(PipelineRun.objects.filter(status__in=PipelineRun.HOLDING_SLOT).count())
        return PipelineRun.objects.filter(pk__in=[r.pk for r in runs], status__in=PipelineRun.FINISHED).count() == 5

    assert _wait_for(finished, 120, every=0.1), [(r.pk, PipelineRun.objects.get(pk=r.pk).status) for r in runs]
    elapsed = time.monotonic() - started
    assert max(seen) <= 3, seen
    at_start = list(PipelineRun.objects.values_list("running_at_start", flat=True))
    assert max(at_start) == 3 and all(n <= 3 for n in at_start)  # counted under the slot lock
    for run in PipelineRun.objects.filter(pk__in=[r.pk for r in runs]):
        assert run.status == "succeeded", run.error
        names = list(run.stages.filter(status="succeeded").order_by("position").values_list("name", flat=True))
        assert names == list(STAGES)
    print(f"five smoke runs through the worker in {elapsed:.1f}s; max running observed {max(seen)}")


@pytest.fixture
def tiny_market(tmp_path, settings):
    """8 sample tickers x 2 years as a file drop, tiny model configs and fast orchestrator knobs,
    shared by this process and the workers."""
    drop = tmp_path / "data" / "prices"
    drop.mkdir(parents=True)
    with gzip.open(SAMPLE, "rt") as src, (drop / "bars.csv").open("w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames)
        writer.writeheader()
        for row in reader:
            if row["ticker"] in TICKERS and row["date"] >= "2016-05-18":
                writer.writerow(row)
    config = json.loads((REPO / "config" / "pipeline.json").read_text())
    config["orchestrator"].update(max_retries=3, retry_backoff_seconds=0.5)
    config["models"] = {
        "lstm_predictor": {"type": "neural_network", "features": 20, "sequence_length": 10, "hidden_size": 8,
                           "epochs": 1, "batch_size": 256},
        "xgboost_classifier": {"type": "tree_ensemble", "n_estimators": 10, "max_depth": 3},
        "prophet_forecaster": {"type": "time_series", "history_days": 250},
        "ensemble": {"type": "ensemble"},
    }
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(config))
    settings.PIPELINE_CONFIG = load_pipeline_config(path)
    return _knobs(settings, {
        "ML_PIPELINE_CONFIG": str(path), "ML_DATA_PATH": str(tmp_path / "data"),
        "ML_FEATURES_PATH": str(tmp_path / "features"), "ML_MODELS_PATH": str(tmp_path / "models"),
        "ML_MARKET_DATA_PROVIDER": "files", "MODEL_PERFORMANCE_THRESHOLD": "0",
        "ML_WALK_FORWARD_FOLDS": "2", "ML_WALK_FORWARD_TEST_DAYS": "40", "ML_WALK_FORWARD_MIN_TRAIN_DAYS": "150",
        "ML_LSTM_MAX_TRAIN_ROWS": "1500", "ML_PROPHET_CHUNK_TICKERS": "3",
        "ML_PIPELINE_HEARTBEAT_SECONDS": "1", "ML_PIPELINE_HEARTBEAT_TIMEOUT_SECONDS": "10",
        "ML_PIPELINE_POLL_SECONDS": "1", "ML_PIPELINE_FEATURE_CHUNK_TICKERS": "3",
    })


def test_a_worker_killed_during_training_leaves_no_stuck_run_and_no_bad_artifact(workers, tiny_market):
    first, log = workers(tiny_market, "doomed")
    run = request_pipeline_run(trigger="api", requested_by="fault test", reason="SIGKILL during training")

    def training_under_way() -> bool:
        training = TrainingRun.objects.filter(requested_by=f"pipeline run {run.pk}").first()
        return training is not None and any(s["name"] == "prepare" for s in training.stages or [])

    assert _wait_for(training_under_way, 180), log.read_text()[-5000:]
    time.sleep(1.0)
    os.killpg(first.pid, signal.SIGKILL)  # the whole worker: main process and pool children
    first.wait()
    killed_at = time.monotonic()
    run.refresh_from_db()
    assert run.status in ("running", "retrying") and run.current_stage == "train"  # stuck, until reaped

    _second, log2 = workers(tiny_market, "survivor")
    assert _wait_for(lambda: PipelineRun.objects.get(pk=run.pk).status in PipelineRun.FINISHED, 300), \
        log2.read_text()[-8000:]
    recovered_in = time.monotonic() - killed_at
    run.refresh_from_db()
    assert run.status == "succeeded", run.error + log2.read_text()[-5000:]
    trains = list(PipelineStage.objects.filter(run=run, name="train").order_by("attempt"))
    assert trains[0].status == "failed" and trains[0].error.startswith("worker lost:") and trains[-1].status == "succeeded"
    assert run.attempts >= 2 and run.generation >= 2 and "attempt 1 of train lost" in run.error
    # the stages done before the kill were not redone
    assert PipelineStage.objects.filter(run=run, name="update_market_data").count() == 1
    features = PipelineStage.objects.get(run=run, name="build_features")
    assert features.counts["chunks"] == 3 and features.counts["tickers"] == 8  # a chord of 3 chunk tasks

    # nothing stays running; the interrupted training run is failed, the retry's succeeded
    assert not PipelineRun.objects.filter(status__in=PipelineRun.HOLDING_SLOT).exists()
    trainings = list(TrainingRun.objects.filter(requested_by=f"pipeline run {run.pk}").order_by("id"))
    assert trainings[0].status == "failed" and "interrupted" in trainings[0].error
    assert trainings[-1].status == "succeeded" and run.training_run_id == trainings[-1].pk
    assert _wait_for(lambda: not TrainingRun.objects.filter(status__in=["queued", "running"]).exists(), 120)

    # every version in the registry has its artifact, with the recorded size and sha256
    versions = list(ModelVersion.objects.select_related("model"))
    assert versions
    for version in versions:
        artifacts.read_verified(root=django_settings.ML_MODELS_PATH, relpath=version.artifact_path,
                                sha256=version.artifact_sha256, size=version.artifact_bytes, label=str(version))
        if version.oof_path:
            artifacts.read_verified(root=django_settings.ML_MODELS_PATH, relpath=version.oof_path,
                                    sha256=version.oof_sha256, size=version.oof_bytes, label=str(version))
    predicted = set(DailyPrediction.objects.values_list("ticker__symbol", flat=True))
    assert predicted == set(TICKERS) == set(Ticker.objects.values_list("symbol", flat=True))
    print(f"recovered {recovered_in:.0f}s after the SIGKILL; {len(versions)} versions verified")
