"""The daily plan of ``evaluation="auto"`` runs on real bars (8 S&P 500 tickers of the bundled
sample): the first run evaluates every learner walk-forward; the next day's run refits XGBoost and
the LSTM without a walk-forward (each new version carries its evaluated version's out-of-sample
table and is activated as its refit), keeps Prophet and restacks the ensemble over the refits; a run
on unchanged data fits nothing; an evaluation that has aged, a changed procedure or a full run
evaluates again."""

from __future__ import annotations

import csv
import gzip
import io
import uuid
from pathlib import Path

import pandas as pd
import pytest
from django.core.management import call_command

from features.services.feature_store import build_features
from registry.models import ModelVersion
from registry.selectors import active_version, load_oof
from training import services
from training.config import RetrainError
from training.models import TrainingRun

from .test_training import SAMPLE, TICKERS, TINY_MODELS

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

FIRST_DAY, DAY_ONE, DAY_TWO = "2016-05-18", "2018-05-15", "2018-05-16"
REFIT = ("xgboost_classifier", "lstm_predictor")


def _load_until(tmp_path: Path, last_day: str) -> None:
    """Ingest the tickers' bars from FIRST_DAY to ``last_day`` and build their features."""
    path = tmp_path / f"bars-{last_day}.csv"
    with gzip.open(SAMPLE, "rt") as src, path.open("w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames)
        writer.writeheader()
        writer.writerows(r for r in reader if r["ticker"] in TICKERS and FIRST_DAY <= r["date"] <= last_day)
    call_command("ingest_prices", str(path), stdout=io.StringIO(), stderr=io.StringIO())
    build_features(tickers=TICKERS)


@pytest.fixture
def daily(settings, tmp_path):
    settings.ML_FEATURES_PATH = tmp_path / "features"
    settings.ML_MODELS_PATH = tmp_path / "ml_models"
    settings.MODEL_PERFORMANCE_THRESHOLD = 0.0  # 8 tickers show no significant skill; the plan is under test
    caches = {name: dict(conf) for name, conf in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = f"test-refit-{uuid.uuid4().hex[:10]}"
    settings.CACHES = caches
    settings.PIPELINE_CONFIG = settings.PIPELINE_CONFIG.with_overrides(
        {"models": TINY_MODELS, "training": {"horizon_days": 5, "reevaluate_every_trading_days": 5}})
    settings.ML_WALK_FORWARD_FOLDS, settings.ML_WALK_FORWARD_TEST_DAYS = 2, 40
    settings.ML_WALK_FORWARD_MIN_TRAIN_DAYS, settings.ML_WALK_FORWARD_GAP_DAYS = 150, None
    settings.ML_LSTM_MAX_TRAIN_ROWS, settings.ML_PROPHET_CHUNK_TICKERS = 1500, 8
    return tmp_path


def _auto_run() -> TrainingRun:
    run = services.retrain(tickers=TICKERS, sync=True, requested_by="test", trigger="schedule", evaluation="auto")
    assert run.status == "succeeded", run.error + run.log
    return run


def _plans(run: TrainingRun) -> dict[str, str]:
    return {s["name"].split(":", 1)[1]: s["counts"]["action"] for s in run.stages if s["name"].startswith("plan:")}


def _names(run: TrainingRun) -> list[str]:
    return [s["name"] for s in run.stages]


def test_daily_runs_refit_between_weekly_evaluations(daily, settings):
    _load_until(daily, DAY_ONE)
    first = _auto_run()
    assert _plans(first) == {n: "evaluate" for n in ("xgboost_classifier", "lstm_predictor", "prophet_forecaster",
                                                    "ensemble")}
    evaluated = {n: active_version(model_name=n) for n in (*REFIT, "prophet_forecaster", "ensemble")}
    assert all(v is not None and v.training_run == first for v in evaluated.values()), evaluated

    # the next trading day: refits, no walk-forward
    _load_until(daily, DAY_TWO)
    second = _auto_run()
    assert _plans(second) == {"xgboost_classifier": "refit", "lstm_predictor": "refit",
                              "prophet_forecaster": "keep", "ensemble": "refit"}
    names = _names(second)
    assert not [n for n in names if n.startswith(("evaluate:", "chunk:"))], names
    lstm_fit = next(s["counts"] for s in second.stages if s["name"] == "fit:lstm_predictor")
    source_label = f"lstm_predictor@{evaluated['lstm_predictor'].version}"
    assert lstm_fit["warm_start_from"] == source_label and lstm_fit["epochs_run"] == 1  # fine-tuned, not refit cold
    for name in REFIT:
        refit = active_version(model_name=name)
        source = evaluated[name]
        assert refit.training_run == second and refit.pk != source.pk
        assert refit.evaluation["carried_from"]["id"] == source.pk
        assert refit.train_end > source.train_end  # fitted on the new day's labels
        assert refit.training_data_hash != source.training_data_hash
        assert refit.metrics == source.metrics and refit.gate["details"]["refit_of"] == f"{name}@{source.version}"
        pd.testing.assert_frame_equal(load_oof(version=refit), load_oof(version=source))
        source.refresh_from_db()
        assert source.status == ModelVersion.Status.DEPRECATED and refit.previous_active_id == source.pk
    assert active_version(model_name="prophet_forecaster").pk == evaluated["prophet_forecaster"].pk
    stack = active_version(model_name="ensemble")
    assert stack.training_run == second and stack.evaluation["carried_from"]["id"] == evaluated["ensemble"].pk
    assert {m.pk for m in stack.members.all()} == {
        active_version(model_name=n).pk for n in (*REFIT, "prophet_forecaster")}

    # the same data again: nothing to fit
    third = _auto_run()
    assert set(_plans(third).values()) == {"keep"}
    assert not [n for n in _names(third) if n.startswith(("fit:", "evaluate:", "register:"))]

    # a changed procedure, and an aged evaluation, are evaluated again
    settings.PIPELINE_CONFIG = settings.PIPELINE_CONFIG.with_overrides(
        {"models": {"xgboost_classifier": {"n_estimators": 12}}, "training": {"reevaluate_every_trading_days": 1}})
    fourth = _auto_run()
    assert _plans(fourth)["xgboost_classifier"] == "evaluate"
    assert "the hyperparameters changed" in next(
        s["counts"]["reason"] for s in fourth.stages if s["name"] == "plan:xgboost_classifier")
    assert _plans(fourth)["prophet_forecaster"] == "evaluate"  # 1 trading day old, every 1
    assert "evaluate:lstm_predictor" in _names(fourth)


def test_full_runs_and_drift_triggers_always_evaluate(daily):
    _load_until(daily, DAY_ONE)
    services.retrain(models=["xgboost_classifier"], tickers=TICKERS, sync=True, evaluation="auto")
    full = services.retrain(models=["xgboost_classifier"], tickers=TICKERS, sync=True)
    assert "evaluate:xgboost_classifier" in _names(full) and not _plans(full)
    with pytest.raises(RetrainError, match="evaluation must be one of full, auto"):
        services.retrain(models=["xgboost_classifier"], sync=True, evaluation="weekly")
