"""Performance tracking on known predictions: realized outcomes from stored bars once the horizon has
passed, metrics per version and day over a rolling window, the low-accuracy alert and retrain."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from features.models import PriceBar, Ticker
from inference.models import DailyPrediction, PredictionLog
from monitoring import config, services
from monitoring.models import Alert, PerformanceRecord
from monitoring.performance import realized_returns, window_metrics
from registry.models import ModelVersion, RegisteredModel

pytestmark = pytest.mark.django_db

DAYS = pd.bdate_range("2024-01-02", periods=45)
# Daily log drift per ticker: distinct, half up, half down, so each 5-day return is known and
# every date has the same cross-sectional order.
DRIFTS = {f"T{i:02d}": d for i, d in enumerate(np.linspace(-0.004, 0.0045, 12))}
HORIZON = 5


@pytest.fixture(autouse=True)
def isolated(settings):
    caches = {name: dict(conf) for name, conf in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = f"test-perf-{uuid.uuid4().hex[:10]}"
    settings.CACHES = caches
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.MODEL_PERFORMANCE_THRESHOLD = 0.75
    settings.MONITORING_PERFORMANCE_WINDOW_DAYS = 20
    settings.MONITORING_MIN_PERFORMANCE_SAMPLES = 50
    settings.ENABLE_AUTO_RETRAINING = True


@pytest.fixture
def retrains(monkeypatch):
    """Record retrain requests instead of queueing pipeline runs (``training.orchestrator.triggers.request_retrain``)."""
    from training.orchestrator import triggers

    calls: list[dict] = []
    monkeypatch.setattr(triggers, "request_retrain", lambda **kw: calls.append(kw) or None)
    return calls


@pytest.fixture
def market():
    tickers = {s: Ticker.objects.create(symbol=s) for s in DRIFTS}
    bars = []
    for symbol, drift in DRIFTS.items():
        for i, day in enumerate(DAYS):
            price = 50.0 * np.exp(drift * i)
            bars.append(PriceBar(ticker=tickers[symbol], date=day.date(), open=price, high=price, low=price,
                                 close=price, adj_close=price, volume=1000))
    PriceBar.objects.bulk_create(bars)
    return tickers


def version(name: str, *, accuracy: float = 0.55, status: str = "active") -> ModelVersion:
    registered, _ = RegisteredModel.objects.get_or_create(name=name, defaults={"model_type": "tree_ensemble"})
    return ModelVersion.objects.create(model=registered, version="1.0.0", major=1, minor=0, patch=0, status=status,
                                       target="fwd_ret_5", horizon_days=HORIZON,
                                       metrics={"accuracy": accuracy, "rank_ic": 0.04})


def realized(symbol: str) -> float:
    return float(np.exp(DRIFTS[symbol] * HORIZON) - 1)


def predict_daily(mv: ModelVersion, tickers, *, sign: float) -> None:
    """Batch predictions for every day: the true 5-day return (sign=+1) or its opposite (-1)."""
    rows = []
    for day in DAYS:
        for rank, (symbol, ticker) in enumerate(tickers.items(), start=1):
            er = sign * realized(symbol)
            rows.append(DailyPrediction(
                date=day.date(), ticker=ticker, model_version=mv, horizon_days=HORIZON, expected_return=er,
                prob_up=0.9 if er > 0 else 0.1, confidence=0.8, predicted_price=50 * (1 + er),
                recommendation="BUY" if er > 0 else "SELL", rank=rank,
            ))
    DailyPrediction.objects.bulk_create(rows)


def test_realized_returns_wait_for_the_horizon():
    bars = pd.DataFrame({"ticker": "A", "date": pd.bdate_range("2024-01-01", periods=8),
                         "adj_close": [10, 11, 12, 13, 14, 15, 16, 17.0]})
    preds = pd.DataFrame({"ticker": ["A", "A", "A"], "date": pd.to_datetime(["2024-01-01", "2024-01-03", "2024-01-06"]),
                          "horizon": [5, 5, 1], "expected_return": [0.1, 0.1, 0.1], "prob_up": [np.nan] * 3})
    out = realized_returns(preds, bars, as_of="2024-01-09")
    # 2024-01-01 (10) -> 5 bars later 2024-01-08 (15); 2024-01-03 needs 2024-01-10: after as_of
    assert out["realized"].iloc[0] == pytest.approx(0.5)
    assert np.isnan(out["realized"].iloc[1])
    # a Saturday feature date is matched to Friday's bar (14), 1 bar later is Monday's (15)
    assert out["realized"].iloc[2] == pytest.approx(15 / 14 - 1)
    metrics = window_metrics(out.dropna(subset=["realized"]))
    assert metrics["mae"] == pytest.approx(abs(0.1 - 0.5) / 2 + abs(0.1 - 1 / 14) / 2)
    # one ticker a day: no cross-section to beat, so no direction metrics (not a fake 100 %)
    assert metrics["accuracy"] is None


def test_tracking_scores_realized_predictions_per_version_and_day(market, retrains):
    good = version("xgboost_classifier")
    predict_daily(good, market, sign=+1)
    as_of = DAYS[-1].date()
    records = services.track_performance(day=as_of)
    (record,) = records
    assert record.model_version == good and record.day == as_of and record.window_days == 20
    # the last 5 prediction dates are not realized yet: 20 realized dates x 12 tickers
    assert record.samples == 20 * 12
    assert record.accuracy == 1.0 and record.precision == 1.0 and record.recall == 1.0 and record.f1 == 1.0
    assert record.mae == pytest.approx(0.0, abs=1e-9)  # MAE of the return forecast
    assert record.ic == pytest.approx(1.0) and record.rank_ic == pytest.approx(1.0)
    services.track_performance(day=as_of)  # upsert, not a second row
    assert PerformanceRecord.objects.filter(model_version=good, day=as_of).count() == 1
    assert not Alert.objects.filter(kind="low_accuracy").exists() and retrains == []

    earlier = services.track_performance(day=DAYS[10].date())  # only dates realized by then
    assert earlier[0].samples == (11 - HORIZON) * 12


def test_logged_predictions_count_too_and_the_latest_log_wins(market):
    mv = version("lstm_predictor")
    base = datetime(2024, 1, 2, tzinfo=UTC)
    for i, day in enumerate(DAYS[:10]):
        for symbol in DRIFTS:
            for attempt, er in enumerate((-realized(symbol), realized(symbol))):  # a stale, then a fresh log
                PredictionLog.objects.create(
                    model_version=mv, model_name="lstm_predictor", ticker=symbol, feature_date=day.date(),
                    input_hash="h", prediction=er, expected_return=er, latency_ms=3.0,
                    created_at=base + timedelta(days=i, minutes=attempt),
                )
    PredictionLog.objects.create(model_version=mv, model_name="lstm_predictor", ticker="", input_hash="raw",
                                 prediction=1.0, latency_ms=2.0, created_at=base)  # no ticker: not scorable
    PredictionLog.objects.create(model_version=mv, model_name="lstm_predictor", ticker="T00",
                                 feature_date=DAYS[12].date(), input_hash="p", prediction=51.3,
                                 expected_return=None, latency_ms=2.0, created_at=base)  # a price, no return
    (record,) = services.track_performance(day=DAYS[20].date())
    assert record.samples == 10 * 12 and record.accuracy == 1.0 and record.rank_ic == pytest.approx(1.0)


def test_accuracy_under_the_floor_alerts_and_requests_one_retrain(market, retrains, caplog):
    bad = version("xgboost_classifier", accuracy=0.56)
    predict_daily(bad, market, sign=-1)
    with caplog.at_level(logging.INFO, logger="monitoring"):
        (record,) = services.track_performance(day=DAYS[-1].date())
        services.track_performance(day=DAYS[-1].date())
    assert record.accuracy == 0.0 and record.rank_ic == pytest.approx(-1.0)
    (alert,) = Alert.objects.filter(kind="low_accuracy", resolved=False)
    assert alert.key == "xgboost_classifier" and alert.count == 2
    assert alert.details["threshold"] == pytest.approx(0.75 * 0.56)
    assert "accuracy 0.0% < 42.0%" in alert.message
    assert [c["trigger"] for c in retrains] == ["performance"]
    assert "Retraining trigger activated: performance_degradation threshold exceeded" in caplog.messages


def test_floor_modes(settings):
    settings.MODEL_PERFORMANCE_THRESHOLD = 0.75
    cfg = config.load()
    assert cfg.performance_mode == "relative"
    assert config.performance_floor(cfg=cfg, validated=0.54) == pytest.approx(0.405)
    assert config.performance_floor(cfg=cfg, validated=None) is None
    settings.MONITORING_PERFORMANCE_MODE = "absolute"
    assert config.performance_floor(cfg=config.load(), validated=0.54) == 0.75
    settings.MONITORING_PERFORMANCE_MODE = "relative"
    settings.MONITORING_PERFORMANCE_METRIC = "mae"
    assert config.performance_floor(cfg=config.load(), validated=0.03) == pytest.approx(0.04)


def test_staging_versions_are_tracked_but_do_not_alert(market, retrains):
    shadow = version("prophet_forecaster", status="staging")
    predict_daily(shadow, market, sign=-1)
    (record,) = services.track_performance(day=DAYS[-1].date())
    assert record.accuracy == 0.0
    assert not Alert.objects.filter(kind="low_accuracy").exists() and retrains == []


def test_no_predictions_no_records():
    assert services.track_performance(day=date(2024, 2, 1)) == []
