"""``run_pipeline --sync`` on the bundled sample (50 tickers, 5 years) on an empty database: the
files provider loads the sample, features are built, all four learners are trained (small
configs), evaluated and gated, every sample ticker gets a stored prediction and recommendation,
drift is checked. Then a second run finds nothing new to load or build and trains again."""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command

from features.models import PriceBar, Ticker
from inference.models import DailyPrediction
from registry.models import ModelVersion
from training.models import PipelineRun, TrainingRun
from training.orchestrator.stages import STAGES

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data" / "prices" / "sp500_sample_2013-05-21_2018-05-18.csv.gz"
SMALL_MODELS = {
    "lstm_predictor": {"type": "neural_network", "features": 20, "sequence_length": 10, "hidden_size": 8,
                       "epochs": 1, "batch_size": 256, "seed": 42, "enabled": True},
    "xgboost_classifier": {"type": "tree_ensemble", "n_estimators": 20, "max_depth": 3, "learning_rate": 0.1,
                           "seed": 42, "enabled": True},
    "prophet_forecaster": {"type": "time_series", "history_days": 250, "seed": 42, "enabled": True},
    "ensemble": {"type": "ensemble", "seed": 42, "enabled": True, "members": None},
}


@pytest.fixture
def sample_setup(settings, tmp_path):
    settings.ML_FEATURES_PATH = tmp_path / "features"
    settings.ML_MODELS_PATH = tmp_path / "ml_models"
    settings.ML_MARKET_DATA_PROVIDER = ""  # the default: the files provider on ML_DATA_PATH (the bundled sample)
    caches = {name: dict(conf) for name, conf in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = f"test-pipeline-{uuid.uuid4().hex[:10]}"
    settings.CACHES = caches
    settings.PIPELINE_CONFIG = settings.PIPELINE_CONFIG.with_overrides({"models": SMALL_MODELS})
    settings.MODEL_PERFORMANCE_THRESHOLD = 0.0  # the sample is too short for the spec's gate to pass anything
    settings.ML_WALK_FORWARD_FOLDS, settings.ML_LSTM_MAX_TRAIN_ROWS, settings.ML_PROPHET_CHUNK_TICKERS = 2, 3000, 25
    with gzip.open(SAMPLE, "rt") as handle:
        return {row["ticker"] for row in csv.DictReader(handle)}


def test_run_pipeline_sync_on_the_bundled_sample_completes_every_stage_and_predicts_every_ticker(sample_setup):
    assert not PriceBar.objects.exists() and not ModelVersion.objects.exists()
    started = time.perf_counter()
    out = io.StringIO()
    call_command("run_pipeline", "--sync", "--json", stdout=out)
    seconds = time.perf_counter() - started
    lines = out.getvalue().strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["status"] == "succeeded", out.getvalue()
    assert [s["name"] for s in summary["stages"]] == list(STAGES)
    assert all(s["status"] == "succeeded" and s["attempt"] == 1 for s in summary["stages"]), summary["stages"]
    for number, stage in enumerate(("update_market_data", "build_features", "train", "batch_predict",
                                    "check_drift"), 1):
        assert any(line.startswith(f"[{number}/5] {stage}") for line in lines)

    sample = sample_setup
    assert set(Ticker.objects.values_list("symbol", flat=True)) == sample and len(sample) == 50
    stages = {s["name"]: s for s in summary["stages"]}
    assert stages["update_market_data"]["counts"]["tickers_updated"] == 50
    assert stages["build_features"]["counts"]["tickers"] == 50
    assert set(stages["evaluate"]["counts"]["rank_ic"]) == set(SMALL_MODELS)
    assert stages["promote"]["counts"]["promoted"] == sorted(SMALL_MODELS)
    training = TrainingRun.objects.get(pk=summary["training_run"])
    assert training.status == "succeeded" and training.requested_by == f"pipeline run {summary['id']}"

    active = ModelVersion.objects.filter(status="active")
    assert active.count() == 4
    for version in active:
        rows = DailyPrediction.objects.filter(model_version=version)
        assert set(rows.values_list("ticker__symbol", flat=True)) == sample, version
        assert set(rows.values_list("recommendation", flat=True)) <= {"BUY", "HOLD", "SELL"}
    assert stages["batch_predict"]["counts"]["tickers"] == 50
    assert stages["check_drift"]["counts"]["reports"] >= 1
    run = PipelineRun.objects.get(pk=summary["id"])
    assert run.cost_usd > 0 and run.attempts == 1 and run.mode == "sync"
    print(f"run_pipeline --sync on the 50-ticker sample: {seconds:.1f}s")

    # the next day's run: nothing new to load or build, the models are trained again
    out = io.StringIO()
    call_command("run_pipeline", "--sync", "--models", "xgboost_classifier", "--json", stdout=out)
    again = json.loads(out.getvalue().strip().splitlines()[-1])
    assert again["status"] == "succeeded", out.getvalue()
    counts = {s["name"]: s["counts"] for s in again["stages"]}
    assert counts["update_market_data"]["rows_added"] == 0 and counts["build_features"]["rows"] == 0
    assert counts["train"]["models"] == ["xgboost_classifier"]
