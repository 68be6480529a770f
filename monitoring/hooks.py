"""monitoring's side of the apps below it, which reach monitoring only through these (never by import).

``connect()`` (``MonitoringConfig.ready``) installs the cost ledger and alerts (these tables) as
``investml.ledger``'s implementation, registers the pipeline's ``check_drift`` stage with the
orchestrator, and connects the receivers of the inference app's signals (``inference.signals``): a
model that fails to load opens the ``model_load_failed`` alert and its next good load clears it.
"""

from __future__ import annotations

from typing import Any

from inference import signals as inference_signals
from investml import ledger
from monitoring import selectors, services
from monitoring.alert_rules import AlertCondition
from training.orchestrator.stage_work import register_stage_hook


def _raise_alert(*, kind: str, key: str, severity: str, message: str, details: dict[str, Any]) -> Any:
    return services.raise_alert(condition=AlertCondition(kind, key, severity, message, dict(details)))


def _model_load_failed(*, model: str, error: str, **_: Any) -> None:
    services.record_model_load_failure(model=model, error=error)


def _model_load_recovered(*, model: str, **_: Any) -> None:
    services.clear_model_load_failure(model=model)


def _check_drift_stage() -> dict[str, Any]:
    """The pipeline's last stage: drift of every active model, summed up for the run's record."""
    reports = services.check_drift()
    return {"reports": len(reports),
            "drifted": sorted(f"{r.model_version.model.name}@{r.model_version.version}" for r in reports
                              if r.drift_detected),
            "max_drift_share": round(max((float(r.drift_share) for r in reports), default=0.0), 4)}


def connect() -> None:
    ledger.install(ledger.Ledger(
        record_cost=services.record_cost,
        record_api_calls=services.record_api_calls,
        cost_for_day=selectors.cost_for_day,
        costs_by_category=selectors.costs_by_category,
        api_calls_for_day=selectors.api_calls_for_day,
        cost_for_month=selectors.cost_for_month,
        monthly_cost_limit=selectors.monthly_cost_limit,
        cost_limit_breach=selectors.cost_limit_breach,
        raise_alert=_raise_alert,
    ))
    register_stage_hook(stage="check_drift", work=_check_drift_stage)
    inference_signals.model_load_failed.connect(_model_load_failed, dispatch_uid="monitoring.model_load_failed")
    inference_signals.model_load_recovered.connect(_model_load_recovered,
                                                   dispatch_uid="monitoring.model_load_recovered")
