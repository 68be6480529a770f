"""``monitor_status`` prints health, alerts, costs, drift and runs in one summary; tasks run eagerly."""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import call_command

from monitoring import selectors, services, tasks
from monitoring.models import Alert, CostRecord
from tests.browser.dashboard_seed import seed

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def isolated(settings, monkeypatch):
    caches = {name: dict(conf) for name, conf in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = f"test-mstat-{uuid.uuid4().hex[:10]}"
    settings.CACHES = caches
    settings.ML_DAILY_COST_LIMIT_USD = 10.0
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    monkeypatch.setattr(selectors, "system_utilization", lambda: (0.25, 0.5))


def status() -> str:
    out = io.StringIO()
    call_command("monitor_status", stdout=out, no_color=True)
    return out.getvalue()


def test_monitor_status_on_an_empty_system():
    text = status()
    for heading in ("Health", "Open alerts", "Costs today", "Models: performance and drift", "Training runs"):
        assert heading in text
    assert "database   ok" in text and "cache      ok" in text
    assert "0 open" in text and "$0.00 of $10.00 limit" in text
    assert "no active model version" in text and "no training runs yet" in text


def test_monitor_status_summarizes_everything():
    seed()
    services.record_model_load_failure(model="lstm_predictor", error="FileNotFoundError: model.pt")
    text = status()
    assert "model lstm_predictor failed to load: FileNotFoundError: model.pt" in text
    assert "run_failed training run 2: training run 2 failed: Out of memory" in text
    assert "(EXCEEDED)" in text  # today's seeded spend is over $10
    assert "xgboost_classifier@1.1.0" in text and "DRIFT" in text and "acc 0." in text
    assert "failed" in text and "Out of memory" in text
    assert "high_resource_usage" not in text  # resolved alerts are not listed


def test_tasks_return_json_summaries(settings, tmp_path):
    settings.ML_MODELS_PATH = tmp_path / "m"
    settings.ML_FEATURES_PATH = tmp_path / "f"
    assert tasks.evaluate_alerts_task.apply().get()["errors"] == {}
    assert tasks.track_performance_task.apply(kwargs={"day": "2024-01-31"}).get() == {"records": []}
    assert tasks.check_drift_task.apply().get() == {"reports": []}
    stored = tasks.record_storage_cost_task.apply(kwargs={"day": "2024-01-31"}).get()
    assert [r["source"] for r in stored["records"]] == ["ml_models", "features"]
    assert CostRecord.objects.filter(category="storage").count() == 2
    assert not Alert.objects.exists()


def test_model_load_failures_keep_one_spec_message():
    alert = services.record_model_load_failure(
        model="lstm_predictor", error="Failed to load model lstm_predictor@1.0.0: FileNotFoundError: model.pt")
    assert alert.message == "Failed to load model lstm_predictor: FileNotFoundError: model.pt"
    again = services.record_model_load_failure(model="lstm_predictor", error="FileNotFoundError: model.pt")
    assert again.pk == alert.pk and again.count == 2
    services.clear_model_load_failure(model="lstm_predictor")
    assert selectors.model_load_failures() == {} and not Alert.objects.filter(resolved=False).exists()
