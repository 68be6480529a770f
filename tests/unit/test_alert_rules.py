"""Every alert rule trips over its threshold and stays quiet under it."""

from features.providers.base import budget_message
from monitoring.alert_rules import (
    Thresholds,
    accuracy_conditions,
    daily_cost_conditions,
    disk_conditions,
    drift_share_conditions,
    error_rate_conditions,
    failed_run_conditions,
    latency_conditions,
    model_loading_conditions,
    resource_conditions,
)

T = Thresholds()


def test_latency_over_500ms_average():
    assert latency_conditions({"/predict": 499.0, "/health": 3.0}, T) == []
    (alert,) = latency_conditions({"/predict": 650.0, "/health": 3.0}, T)
    assert (alert.kind, alert.key, alert.severity) == ("high_latency", "/predict", "warning")
    assert "exceeded 500ms" in alert.message
    assert latency_conditions({"/predict": 1200.0}, T)[0].severity == "critical"


def test_error_rate_over_5_percent_needs_enough_requests():
    assert error_rate_conditions({"/predict": (5, 100)}, T) == []
    assert error_rate_conditions({"/predict": (2, 3)}, T) == []  # too few requests to judge
    (alert,) = error_rate_conditions({"/predict": (6, 100)}, T)
    assert alert.kind == "high_error_rate" and "6.0% > 5%" in alert.message


def test_cpu_or_memory_over_85_percent():
    assert resource_conditions(cpu=0.85, memory=0.5, t=T) == []
    alerts = resource_conditions(cpu=0.9, memory=0.95, t=T)
    assert [a.key for a in alerts] == ["cpu", "memory"]


def test_disk_over_90_percent_names_the_volume():
    assert disk_conditions({"/data/models": (0.90, 50e9)}, T) == []
    (alert,) = disk_conditions({"/data/models": (0.93, 7e9), "/data/features": (0.5, 900e9)}, T)
    assert (alert.kind, alert.key, alert.severity) == ("disk_space", "/data/models", "warning")
    assert alert.message == "Disk 93% full at /data/models (7.0 GB free) > 90%"
    assert disk_conditions({"/data/models": (0.99, 1e9)}, T)[0].severity == "critical"


def test_accuracy_under_threshold():
    assert accuracy_conditions({"xgboost_classifier": 0.81, "lstm_predictor": None}, T) == []
    (alert,) = accuracy_conditions({"xgboost_classifier": 0.55}, T)
    assert alert.key == "xgboost_classifier" and "55.0% < 80%" in alert.message


def test_daily_cost_uses_the_spec_wording():
    assert daily_cost_conditions(day="2026-01-02", spent_usd=10.0, t=T) == []
    (alert,) = daily_cost_conditions(day="2026-01-02", spent_usd=12.5, t=T)
    assert alert.message == "Daily cost limit exceeded: $12.50 > $10.00" == budget_message(12.5, 10.0)


def test_drift_share_over_threshold():
    assert drift_share_conditions({"lstm_predictor": 0.3}, T) == []
    (alert,) = drift_share_conditions({"lstm_predictor": 0.45}, T)
    assert alert.kind == "data_drift" and "45% of features drifted" in alert.message


def test_failed_runs_and_model_loading():
    assert failed_run_conditions({}) == [] and model_loading_conditions({}) == []
    (run,) = failed_run_conditions({"training run 7": "Out of memory"})
    assert run.severity == "critical" and "training run 7 failed: Out of memory" == run.message
    (load,) = model_loading_conditions({"lstm_predictor": "FileNotFoundError"})
    assert load.message == "Failed to load model lstm_predictor: FileNotFoundError"
