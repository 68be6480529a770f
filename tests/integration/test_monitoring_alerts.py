"""Alerts against the real database: every rule of ``evaluate_alerts`` trips, deduplicates into one
row (count 2) and resolves when its condition clears; notifications go out once, then are throttled;
retrain requests follow drift and accuracy alerts once per opening."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pytest
from django.core import mail
from django.db import IntegrityError
from django.utils import timezone

from monitoring import notifications, request_metrics, selectors, services
from monitoring.alert_rules import AlertCondition
from monitoring.models import Alert, DriftReport, PerformanceRecord
from registry.models import ModelVersion, RegisteredModel
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def monitoring_settings(settings, monkeypatch):
    """Own cache namespace (request metrics live in the shared cache), locmem email, calm machine."""
    caches = {name: dict(conf) for name, conf in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = f"test-mon-{uuid.uuid4().hex[:10]}"
    settings.CACHES = caches
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.ALERT_EMAILS = ["ops@example.com", "ml@example.com"]
    settings.ALERT_WEBHOOK_URL = ""
    settings.ML_DAILY_COST_LIMIT_USD = 10.0
    settings.DATA_DRIFT_THRESHOLD = 0.3
    settings.MODEL_PERFORMANCE_THRESHOLD = 0.75
    settings.ENABLE_AUTO_RETRAINING = True
    monkeypatch.setattr(selectors, "system_utilization", lambda: (0.20, 0.40))
    return settings


@pytest.fixture
def retrains(monkeypatch):
    """Record retrain requests instead of queueing pipeline runs (``training.orchestrator.triggers.request_retrain``)."""
    from training.orchestrator import triggers

    calls: list[dict] = []
    monkeypatch.setattr(triggers, "request_retrain", lambda **kw: calls.append(kw) or None)
    return calls


def active_version(name: str = "xgboost_classifier", *, accuracy: float = 0.55) -> ModelVersion:
    registered, _ = RegisteredModel.objects.get_or_create(name=name, defaults={"model_type": "tree_ensemble"})
    current = registered.versions.filter(status="active").first()
    if current is not None:
        return current
    count = registered.versions.count()
    return ModelVersion.objects.create(
        model=registered, version=f"1.{count}.0", major=1, minor=count, patch=0, status="active",
        target="fwd_ret_5", horizon_days=5, metrics={"accuracy": accuracy, "rank_ic": 0.03},
    )


def open_alerts(kind: str) -> list[Alert]:
    return list(Alert.objects.filter(kind=kind, resolved=False))


# --------------------------------------------------------------------------------------------------
# every rule: trip, deduplicate, resolve when cleared


def _requests(endpoint: str, n: int, *, ms: float, status: int = 200) -> None:
    for _ in range(n):
        request_metrics.record_request(endpoint=endpoint, status_code=status, duration_ms=ms)


class Rule:
    """How to make one rule's condition hold, and how to clear it."""

    kind = ""
    key = ""

    def trip(self, ctx): ...

    def clear(self, ctx): ...


class Latency(Rule):
    kind, key = "high_latency", "POST /api/v1/predict"

    def trip(self, ctx):
        _requests(self.key, 6, ms=800)

    def clear(self, ctx):
        _requests(self.key, 200, ms=5)  # the 5-minute average falls to ~29 ms


class ErrorRate(Rule):
    kind, key = "high_error_rate", "POST /api/v1/predict"

    def trip(self, ctx):
        _requests(self.key, 20, ms=10)
        _requests(self.key, 5, ms=10, status=503)  # 20% > 5%

    def clear(self, ctx):
        _requests(self.key, 200, ms=10)  # 5 of 225: 2.2%


class Resources(Rule):
    kind, key = "high_resource_usage", "cpu"

    def trip(self, ctx):
        ctx.setattr(selectors, "system_utilization", lambda: (0.93, 0.40))

    def clear(self, ctx):
        ctx.setattr(selectors, "system_utilization", lambda: (0.30, 0.40))


class DiskSpace(Rule):
    """The real volume of the models folder, against a threshold below and above its real usage."""

    kind = "disk_space"

    @property
    def key(self):
        from django.conf import settings

        return str(settings.ML_MODELS_PATH)

    def trip(self, ctx):
        ctx.settings.MONITORING_DISK_USAGE_THRESHOLD = 0.0  # any used byte is over it

    def clear(self, ctx):
        ctx.settings.MONITORING_DISK_USAGE_THRESHOLD = 1.0


class Accuracy(Rule):
    kind, key = "low_accuracy", "xgboost_classifier"

    def trip(self, ctx):
        self.version = active_version(accuracy=0.55)  # floor 0.75 x 0.55 = 0.4125
        PerformanceRecord.objects.create(model_version=self.version, day=date(2024, 3, 1), window_days=20,
                                         samples=400, accuracy=0.35, rank_ic=-0.05)

    def clear(self, ctx):
        PerformanceRecord.objects.create(model_version=self.version, day=date(2024, 3, 4), window_days=20,
                                         samples=400, accuracy=0.53, rank_ic=0.02)


class Cost(Rule):
    kind = "cost_limit_exceeded"

    @property
    def key(self):
        return timezone.localdate().isoformat()

    def trip(self, ctx):
        services.record_cost(day=timezone.localdate(), category="compute", source="training run 1",
                             units=3600, unit="cpu_second", cost_usd=12.5)

    def clear(self, ctx):
        ctx.settings.ML_DAILY_COST_LIMIT_USD = 50.0


class Drift(Rule):
    kind, key = "data_drift", "xgboost_classifier"

    def trip(self, ctx):
        self.version = active_version()
        DriftReport.objects.create(model_version=self.version, window_start=date(2008, 10, 1),
                                   window_end=date(2008, 10, 28), drift_detected=True, drift_share=0.8,
                                   threshold=0.3, features={"vol_20": {"psi": 2.1, "drifted": True}})

    def clear(self, ctx):
        DriftReport.objects.create(model_version=self.version, window_start=date(2009, 10, 1),
                                   window_end=date(2009, 10, 28), drift_detected=False, drift_share=0.05,
                                   threshold=0.3, features={"vol_20": {"psi": 0.1, "drifted": False}})


class FailedRun(Rule):
    kind = "run_failed"

    def trip(self, ctx):
        self.run = TrainingRun.objects.create(status="failed", trigger="schedule", model_names=["lstm_predictor"],
                                              error="ERROR: Pipeline training_pipeline_id failed: Out of memory")

    @property
    def key(self):
        return f"training run {self.run.pk}"

    def clear(self, ctx):  # older than the 24 h look-back
        TrainingRun.objects.filter(pk=self.run.pk).update(created_at=timezone.now() - timedelta(days=2))


class FailedPipelineRun(Rule):
    kind = "run_failed"

    def trip(self, ctx):
        from training.models import PipelineRun

        self.run = PipelineRun.objects.create(trigger="schedule", scope="universe", status="failed",
                                              current_stage="update_market_data",
                                              error="ProviderError: alphavantage answered 503 five times")

    @property
    def key(self):
        return f"pipeline run {self.run.pk}"

    def clear(self, ctx):
        from training.models import PipelineRun

        PipelineRun.objects.filter(pk=self.run.pk).update(created_at=timezone.now() - timedelta(days=2))


class ModelLoad(Rule):
    kind, key = "model_load_failed", "lstm_predictor"

    def trip(self, ctx):
        services.record_model_load_failure(model="lstm_predictor", error="FileNotFoundError")
        Alert.objects.filter(kind=self.kind).delete()  # let evaluate_alerts open it, like the other rules

    def clear(self, ctx):
        services.clear_model_load_failure(model="lstm_predictor")


RULES = [Latency, ErrorRate, Resources, DiskSpace, Accuracy, Cost, Drift, FailedRun, FailedPipelineRun, ModelLoad]


@pytest.mark.parametrize("rule_class", RULES, ids=[r.kind for r in RULES])
def test_every_rule_trips_deduplicates_and_resolves(rule_class, monkeypatch, settings, retrains):
    rule = rule_class()
    ctx = SimpleNamespace(setattr=monkeypatch.setattr, settings=settings)
    services.evaluate_alerts()
    assert open_alerts(rule.kind) == []  # quiet before

    rule.trip(ctx)
    result = services.evaluate_alerts()
    assert not result.errors, result.errors
    (alert,) = open_alerts(rule.kind)
    assert (alert.key, alert.count) == (rule.key, 1)

    services.evaluate_alerts()  # the same condition again: the same row, counted
    assert Alert.objects.filter(kind=rule.kind).count() == 1
    alert.refresh_from_db()
    assert alert.count == 2 and alert.last_seen >= alert.first_seen

    rule.clear(ctx)
    services.evaluate_alerts()
    alert.refresh_from_db()
    assert alert.resolved and alert.resolved_at is not None
    assert open_alerts(rule.kind) == []


def test_spec_messages_and_log_lines(caplog, retrains):
    services.record_cost(day=timezone.localdate(), category="data_api", source="tiingo", cost_usd=12.5)
    with caplog.at_level(logging.INFO, logger="monitoring"):
        services.evaluate_alerts()
    (cost,) = open_alerts("cost_limit_exceeded")
    assert cost.message == "Daily cost limit exceeded: $12.50 > $10.00"
    assert ("monitoring", logging.WARNING, "Daily cost limit exceeded: $12.50 > $10.00") in caplog.record_tuples


def test_drift_and_accuracy_alerts_request_one_retrain_per_opening(caplog, retrains):
    Drift().trip(None)
    with caplog.at_level(logging.INFO, logger="monitoring"):
        services.evaluate_alerts()
        services.evaluate_alerts()
    assert [c["trigger"] for c in retrains] == ["drift"]
    assert retrains[0]["requested_by"] == "monitoring" and "drift" in retrains[0]["reason"]
    assert "Retraining trigger activated: data_drift threshold exceeded" in caplog.messages

    Accuracy().trip(None)
    with caplog.at_level(logging.INFO, logger="monitoring"):
        services.evaluate_alerts()
    assert [c["trigger"] for c in retrains] == ["drift", "performance"]
    assert "Retraining trigger activated: performance_degradation threshold exceeded" in caplog.messages


def test_a_failing_retrain_request_is_logged_not_raised(monkeypatch, caplog):
    from training.orchestrator import triggers

    monkeypatch.setattr(triggers, "request_retrain", lambda **kw: 1 / 0)
    with caplog.at_level(logging.ERROR, logger="monitoring"):
        assert services._request_retrain(trigger="drift", reason="x") is None
    assert any("retrain request (drift) failed" in m for m in caplog.messages)


def test_auto_retraining_off_suppresses_the_request(settings, retrains):
    settings.ENABLE_AUTO_RETRAINING = False
    Drift().trip(None)
    services.evaluate_alerts()
    assert open_alerts("data_drift") and retrains == []


# --------------------------------------------------------------------------------------------------
# raise_alert, resolve_cleared, acknowledge and resolve


def condition(severity: str = "warning", key: str = "GET /x") -> AlertCondition:
    return AlertCondition("high_latency", key, severity, f"slow ({severity})", {"avg_ms": 700})


def test_raise_alert_folds_repeats_and_reopens_after_resolution():
    first = services.raise_alert(condition=condition())
    again = services.raise_alert(condition=condition("critical"))
    assert first.created and not again.created and again.alert.pk == first.alert.pk
    assert (again.alert.count, again.alert.severity, again.alert.message) == (2, "critical", "slow (critical)")
    assert services.resolve_cleared(kind="high_latency", current_keys=[]) == 1
    reopened = services.raise_alert(condition=condition())
    assert reopened.created and reopened.alert.pk != first.alert.pk
    assert Alert.objects.filter(kind="high_latency").count() == 2


def test_raise_alert_survives_a_concurrent_creator(monkeypatch):
    """Another worker opened the alert after our lookup: our create hits the partial unique
    constraint, and the retry folds into the winner's row instead of failing."""
    winner = services.raise_alert(condition=condition()).alert
    real = Alert.objects.select_for_update
    lookups = []

    def stale_then_real(*args, **kwargs):
        lookups.append(1)
        return Alert.objects.none() if len(lookups) == 1 else real(*args, **kwargs)

    monkeypatch.setattr(Alert.objects, "select_for_update", stale_then_real)
    outcome = services.raise_alert(condition=condition())
    assert len(lookups) == 2 and not outcome.created and outcome.alert.pk == winner.pk
    (alert,) = Alert.objects.filter(kind="high_latency", resolved=False)
    assert alert.count == 2


def test_the_database_refuses_a_second_open_alert_for_one_condition():
    now = timezone.now()
    Alert.objects.create(kind="k", key="x", message="m", first_seen=now, last_seen=now)
    Alert.objects.create(kind="k", key="x", message="m", first_seen=now, last_seen=now, resolved=True)
    with pytest.raises(IntegrityError):
        from django.db import transaction

        with transaction.atomic():
            Alert.objects.create(kind="k", key="x", message="m", first_seen=now, last_seen=now)


def test_acknowledge_and_resolve_by_hand():
    alert = services.raise_alert(condition=condition()).alert
    acked = services.acknowledge_alert(alert_id=alert.pk, user="alice")
    assert acked.acknowledged and acked.acknowledged_by == "alice" and not acked.resolved
    done = services.resolve_alert(alert_id=alert.pk, user="alice")
    assert done.resolved and done.details["resolved_by"] == "alice"


# --------------------------------------------------------------------------------------------------
# notifications


def test_notifications_go_out_once_then_at_most_once_per_cooldown():
    now = timezone.now()
    _requests("GET /slow", 6, ms=800)
    services.evaluate_alerts(now=now)
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ops@example.com", "ml@example.com"]
    assert "high_latency" in message.subject and "exceeded 500ms" in message.body

    for minutes in (1, 10, 59):  # still the same condition: no storm
        services.evaluate_alerts(now=now + timedelta(minutes=minutes))
    assert len(mail.outbox) == 1
    services.evaluate_alerts(now=now + timedelta(minutes=61))  # cooldown over: a reminder
    assert len(mail.outbox) == 2
    alert = Alert.objects.get(kind="high_latency")
    assert alert.notifications_sent == 2 and alert.count == 5


def test_a_severity_rise_notifies_at_once_and_acknowledged_alerts_stay_quiet():
    now = timezone.now()
    first = services.raise_alert(condition=condition("warning"), now=now).alert
    assert notifications.notify_alert(alert=first, now=now)
    services.acknowledge_alert(alert_id=first.pk, user="bob")
    same = services.raise_alert(condition=condition("warning"), now=now).alert
    assert not notifications.notify_alert(alert=same, now=now + timedelta(hours=5))  # acknowledged: quiet
    worse = services.raise_alert(condition=condition("critical"), now=now).alert
    assert notifications.notify_alert(alert=worse, now=now + timedelta(minutes=1))  # severity rose
    assert not notifications.notify_alert(alert=worse, now=now + timedelta(minutes=2))
    assert len(mail.outbox) == 2 and "CRITICAL" in mail.outbox[1].subject


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_gets_json_and_a_dead_webhook_is_logged_not_raised(settings, caplog):
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.received = []
    try:
        settings.ALERT_WEBHOOK_URL = f"http://127.0.0.1:{server.server_port}/hook"
        alert = services.raise_alert(condition=condition("critical")).alert
        assert notifications.notify_alert(alert=alert)
    finally:
        server.shutdown()
        server.server_close()
    (payload,) = _Hook.received
    assert payload["kind"] == "high_latency" and payload["severity"] == "critical" and payload["count"] == 1

    settings.ALERT_WEBHOOK_URL = f"http://127.0.0.1:{server.server_port}/gone"  # nothing listens now
    settings.ALERT_WEBHOOK_TIMEOUT_SECONDS = 1
    other = services.raise_alert(condition=condition("warning", key="GET /y")).alert
    with caplog.at_level(logging.WARNING, logger="monitoring"):
        assert notifications.notify_alert(alert=other)
    assert any("alert webhook failed" in m for m in caplog.messages)


# --------------------------------------------------------------------------------------------------
# storage cost


def test_storage_cost_is_recorded_once_per_day(settings, tmp_path):
    settings.ML_MODELS_PATH = tmp_path / "models"
    settings.ML_FEATURES_PATH = tmp_path / "features"
    settings.ML_STORAGE_USD_PER_GB_MONTH = 30.0  # $1 per GB-day in a 30-day month
    (tmp_path / "models").mkdir()
    (tmp_path / "features" / "default").mkdir(parents=True)
    (tmp_path / "models" / "a.bin").write_bytes(b"x" * 2_000_000)
    (tmp_path / "features" / "default" / "p.parquet").write_bytes(b"y" * 500_000)
    day = date(2024, 6, 10)
    services.record_storage_cost(day=day)
    records = services.record_storage_cost(day=day)  # idempotent
    assert sorted((r.source, r.bytes) for r in records) == [("features", 500_000), ("ml_models", 2_000_000)]
    assert float(selectors.costs_by_category(day=day)["storage"]) == pytest.approx(0.0025, abs=1e-6)
    series = selectors.cost_series(days=30, end=day)
    assert len(series) == 30 and series[-1]["storage"] == pytest.approx(0.0025, abs=1e-6)
