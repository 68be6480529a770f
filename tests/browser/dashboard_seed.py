"""Realistic monitoring data for the dashboard tests: two models with lineage, performance and drift
history, 30 days of costs, alerts and training runs (successful and failed)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from django.contrib.auth import get_user_model
from django.utils import timezone

from monitoring import services
from monitoring.alert_rules import AlertCondition
from monitoring.models import DriftReport, PerformanceRecord
from registry.models import DeploymentEvent, ModelVersion, RegisteredModel
from training.models import PipelineRun, TrainingRun

PASSWORD = "dashboard-test-pass-9"
FEATURES = ["rsi_14", "ret_5", "ret_20", "vol_20", "vol_60", "close_to_sma_50", "beta_60", "corr_60"]


def users():
    """A viewer (signed in, nothing more) and an operator: staff with the operator permissions
    (investml.permissions: acknowledge and resolve alerts, promote and roll back, load, retrain)."""
    from django.contrib.auth.models import Permission

    from investml.permissions import OPERATOR_PERMISSIONS

    model = get_user_model()
    viewer = model.objects.create_user("viewer", "viewer@example.com", PASSWORD)
    staff = model.objects.create_user("operator", "operator@example.com", PASSWORD, is_staff=True)
    for perm in OPERATOR_PERMISSIONS:
        app_label, codename = perm.split(".")
        staff.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return viewer, staff


def seed() -> dict:
    rng = np.random.default_rng(7)
    now = timezone.now()
    today = timezone.localdate()
    ok_run = TrainingRun.objects.create(
        status="succeeded", trigger="schedule", requested_by="beat", model_names=["xgboost_classifier", "ensemble"],
        stages=[{"name": "load", "status": "succeeded", "seconds": 4.2, "counts": {"rows": 120000}},
                {"name": "features", "status": "succeeded", "seconds": 11.5, "counts": {}},
                {"name": "xgboost_classifier", "status": "succeeded", "seconds": 61.0, "counts": {"folds": 4}},
                {"name": "ensemble", "status": "succeeded", "seconds": 8.3, "counts": {}}],
        log="queued by beat\nload: 120000 rows\ntraining xgboost_classifier\ndone", cpu_seconds=180.0,
        cost_usd="0.005000", started_at=now - timedelta(hours=5), finished_at=now - timedelta(hours=4, minutes=58),
    )
    TrainingRun.objects.create(
        status="failed", trigger="drift", requested_by="monitoring", model_names=["lstm_predictor"],
        stages=[{"name": "load", "status": "succeeded", "seconds": 3.1, "counts": {}},
                {"name": "lstm_predictor", "status": "failed", "seconds": 42.0, "counts": {}}],
        error="ERROR: Pipeline training_pipeline_id failed: Out of memory", log="queued by monitoring",
        started_at=now - timedelta(hours=2), finished_at=now - timedelta(hours=1, minutes=59),
    )
    TrainingRun.objects.create(status="queued", trigger="api", requested_by="alice", model_names=["ensemble"])
    PipelineRun.objects.create(trigger="schedule", scope="universe", status="succeeded", current_stage="check_drift",
                               training_run=ok_run, started_at=now - timedelta(hours=5, minutes=2),
                               finished_at=now - timedelta(hours=4, minutes=55), cost_usd="0.006000")
    PipelineRun.objects.create(trigger="drift", scope="tickers:0123456789abcdef", tickers=["AAPL", "MSFT"],
                               reason="Retraining trigger activated: data_drift threshold exceeded",
                               requested_by="monitoring", status="failed", current_stage="update_market_data",
                               attempts=3, error="ProviderError: alphavantage answered 503 three times")

    xgb = RegisteredModel.objects.create(name="xgboost_classifier", model_type="tree_ensemble")
    lstm = RegisteredModel.objects.create(name="lstm_predictor", model_type="neural_network")
    ens = RegisteredModel.objects.create(name="ensemble", model_type="ensemble")

    def mv(model, version, status, acc, ric, parent=None, run=None, previous=None):
        major, minor, patch = (int(x) for x in version.split("."))
        v = ModelVersion.objects.create(
            model=model, version=version, major=major, minor=minor, patch=patch, status=status,
            target="fwd_ret_5", horizon_days=5, parent=parent, training_run=run, previous_active=previous,
            metrics={"accuracy": acc, "rank_ic": ric, "ic": ric * 0.8, "sharpe": 0.9 + ric * 10},
            status_reason=f"{status}: gate on rank_ic", activated_at=now if status == "active" else None,
        )
        DeploymentEvent.objects.create(version=v, action="register", to_status="staging", actor="pipeline",
                                       reason=f"registered {model.name}@{version}")
        return v

    x1 = mv(xgb, "1.0.0", "deprecated", 0.521, 0.021)
    x2 = mv(xgb, "1.1.0", "active", 0.534, 0.034, parent=x1, run=ok_run, previous=x1)
    x2.evaluation = {"final_fit": {"importance": {"gain": {"ret_5": 30.0, "vol_20": 60.0, "rsi_14": 10.0},
                                                  "permutation": {"vol_20": 0.0123, "ret_5": 0.004}}}}
    x2.save(update_fields=["evaluation"])
    x3 = mv(xgb, "1.2.0", "staging", 0.538, 0.036, parent=x2, run=ok_run)
    l1 = mv(lstm, "1.0.0", "active", 0.512, 0.015)
    e1 = mv(ens, "1.0.0", "active", 0.541, 0.041, run=ok_run)
    e1.members.set([x2, l1])

    for version, base in ((x2, 0.53), (l1, 0.51), (e1, 0.54)):
        for i in range(40):
            day = today - timedelta(days=40 - i)
            acc = base + 0.03 * np.sin(i / 5) + rng.normal(0, 0.01)
            PerformanceRecord.objects.create(model_version=version, day=day, window_days=20, samples=2400,
                                             accuracy=acc, precision=acc + 0.01, recall=acc - 0.02, f1=acc,
                                             mae=0.031, ic=0.02 + rng.normal(0, 0.01), rank_ic=0.03 + rng.normal(0, 0.01))
    for version in (x2, l1):
        for i in range(12):
            end = today - timedelta(days=7 * (12 - i))
            crisis = i >= 9
            feats = {}
            for name in FEATURES:
                value = float(abs(rng.normal(0.9 if crisis else 0.08, 0.3 if crisis else 0.05)))
                feats[name] = {"psi": value, "ks_statistic": min(value / 2, 1.0), "ks_pvalue": 0.01,
                               "drifted": value > 0.5, "reference_mean": 0.01, "current_mean": 0.01 + value / 10,
                               "reference_n": 50000, "current_n": 1200}
            share = sum(f["drifted"] for f in feats.values()) / len(feats)
            report = DriftReport.objects.create(model_version=version, window_start=end - timedelta(days=27),
                                                window_end=end, drift_detected=share > 0.3, drift_share=share,
                                                threshold=0.3, features=feats)
            DriftReport.objects.filter(pk=report.pk).update(created_at=now - timedelta(days=7 * (12 - i)))

    for i in range(30):
        day = today - timedelta(days=29 - i)
        services.record_cost(day=day, category="compute", source="training", units=3600, unit="cpu_second",
                             cost_usd=round(2 + 3 * rng.random(), 4))
        services.record_cost(day=day, category="data_api", source="tiingo", units=400, cost_usd=round(3 * rng.random(), 4))
        services.record_cost(day=day, category="storage", source="ml_models", units=1.2, unit="GB-day",
                             cost_usd=0.0009)
    services.record_cost(day=today, category="data_api", source="alphavantage", units=900, cost_usd=7.5)

    services.raise_alert(condition=AlertCondition("data_drift", "xgboost_classifier", "warning",
                                                  "Data drift on xgboost_classifier: 62% of features drifted > 30%"))
    services.raise_alert(condition=AlertCondition("run_failed", "training run 2", "critical",
                                                  "training run 2 failed: Out of memory"))
    services.raise_alert(condition=AlertCondition("high_latency", "POST /api/v1/predict", "warning",
                                                  "Prediction latency exceeded 500ms: POST /api/v1/predict averages 640ms"))
    old = services.raise_alert(condition=AlertCondition("high_resource_usage", "memory", "warning",
                                                        "MEMORY utilization 91% > 85%")).alert
    services.resolve_alert(alert_id=old.pk, user="ops")
    return {"xgb_active": x2, "xgb_staging": x3, "xgb_old": x1, "ok_run": ok_run}
