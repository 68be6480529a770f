"""Celery entry points of inference: the daily batch prediction (for the orchestrator's daily pipeline),
the daily retention of the prediction log and the compliance records, and the intraday quote poll
(beat, seeded by ``manage.py seed_schedules``)."""

from __future__ import annotations

from datetime import date

from celery import shared_task

from inference.compliance import apply_retention
from inference.quotes import quotes_poll
from inference.services import batch_predict


@shared_task(name="inference.batch_predict")
def batch_predict_task(as_of: str | None = None, model_names: list[str] | None = None,
                       tickers: list[str] | None = None) -> dict:
    result = batch_predict(as_of=date.fromisoformat(as_of) if as_of else None, model_names=model_names,
                           tickers=tickers)
    return result


@shared_task(name="inference.apply_retention")
def apply_retention_task() -> dict:
    return apply_retention()


@shared_task(name="inference.poll_quotes")
def poll_quotes_task() -> dict:
    """Every minute (beat): the provider's intraday snapshot into the tickers' today-so-far bars, when
    ML_INTRADAY_POLL_ENABLED and within ML_INTRADAY_POLL_HOURS of a trading day (else a no-op)."""
    return quotes_poll()
