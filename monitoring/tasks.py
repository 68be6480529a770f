"""Celery tasks of monitoring: thin wrappers over ``monitoring.services`` (JSON in, JSON out).

Beat schedule suggestions (seeded by the orchestrator): ``monitoring.evaluate_alerts`` every minute,
``monitoring.check_drift`` and ``monitoring.track_performance`` daily after the market-data update
and feature build, ``monitoring.record_storage_cost`` daily.
"""

from __future__ import annotations

from datetime import date

from celery import shared_task

from monitoring import services


def _day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


@shared_task(name="monitoring.track_performance")
def track_performance_task(day: str | None = None, window_days: int | None = None) -> dict:
    records = services.track_performance(day=_day(day), window_days=window_days)
    return {"records": [
        {"version": str(r.model_version), "day": r.day.isoformat(), "samples": r.samples, "accuracy": r.accuracy,
         "rank_ic": r.rank_ic}
        for r in records
    ]}


@shared_task(name="monitoring.check_drift")
def check_drift_task(model_name: str | None = None, window_days: int | None = None, as_of: str | None = None) -> dict:
    reports = services.check_drift(model_name=model_name, window_days=window_days, as_of=_day(as_of))
    return {"reports": [
        {"version": str(r.model_version), "window": [r.window_start.isoformat(), r.window_end.isoformat()],
         "drift_detected": r.drift_detected, "drift_share": r.drift_share}
        for r in reports
    ]}


@shared_task(name="monitoring.evaluate_alerts")
def evaluate_alerts_task() -> dict:
    return services.evaluate_alerts().to_dict()


@shared_task(name="monitoring.record_storage_cost")
def record_storage_cost_task(day: str | None = None) -> dict:
    records = services.record_storage_cost(day=_day(day))
    return {"records": [{"source": r.source, "bytes": r.bytes, "cost_usd": str(r.cost_usd)} for r in records]}
