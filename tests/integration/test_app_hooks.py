"""The calls that go up the apps' stack are installed by the apps above at startup (README, "Layout"):
monitoring's cost ledger and alerts, inference's and monitoring's pipeline stages, training's
learner loaders for the registry; missing ones fail loudly instead of silently doing nothing."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from features.providers.base import CallRecord
from inference import services as inference_services
from investml import ledger
from monitoring.models import Alert, CostRecord
from registry import loaders
from training.learners import load_learner
from training.orchestrator import stage_work
from training.orchestrator.errors import PermanentStageError

pytestmark = pytest.mark.django_db


def test_the_apps_above_install_what_the_ones_below_call():
    assert stage_work.STAGE_HOOKS["batch_predict"] is inference_services.batch_predict
    assert set(stage_work.STAGE_HOOKS) == {"batch_predict", "check_drift"}
    assert loaders.installed().load_learner is load_learner
    # the ledger writes and reads monitoring's tables
    day = date(2025, 3, 4)
    ledger.record_cost(day=day, category="compute", source="training", units=60, unit="cpu_second", cost_usd=0.25)
    ledger.record_api_calls(records=[CallRecord(provider="tiingo", endpoint="daily", symbol="AAPL", status=200,
                                                bytes=10, seconds=0.1, cost_usd=0.5, attempt=1)], day=day)
    assert CostRecord.objects.filter(day=day).count() == 2
    assert ledger.cost_for_day(day=day) == Decimal("0.75")
    assert ledger.api_calls_for_day(day=day, source="tiingo") == 1
    ledger.raise_alert(kind="cost_limit_exceeded", key="2025-03-04", severity="critical", message="over",
                       details={"spent_usd": Decimal("12.5")})
    alert = Alert.objects.get(kind="cost_limit_exceeded", key="2025-03-04")
    assert alert.details == {"spent_usd": 12.5} and not alert.resolved


def test_a_missing_stage_or_ledger_fails_loudly(monkeypatch):
    monkeypatch.delitem(stage_work.STAGE_HOOKS, "batch_predict")
    with pytest.raises(PermanentStageError, match="no batch_predict stage is registered: the inference"):
        stage_work.stage_hook("batch_predict")
    with pytest.raises(ValueError, match="not a stage another app provides"):
        stage_work.register_stage_hook(stage="train", work=dict)

    monkeypatch.setattr(ledger, "_installed", None)
    assert ledger.record_api_calls(records=[]) == 0  # nothing to record needs no ledger
    with pytest.raises(ledger.LedgerNotInstalled, match="'monitoring' app must be in INSTALLED_APPS"):
        ledger.cost_for_day(day=date(2025, 3, 4))
    monkeypatch.setattr(loaders, "_installed", None)
    with pytest.raises(loaders.LoadersNotInstalled, match="'training' app must be in INSTALLED_APPS"):
        loaders.installed()
