"""Celery entry point of the daily batch prediction (for the orchestrator's daily pipeline)."""

from __future__ import annotations

from datetime import date

from celery import shared_task


@shared_task(name="inference.batch_predict")
def batch_predict_task(as_of: str | None = None, model_names: list[str] | None = None,
                       tickers: list[str] | None = None) -> dict:
    from inference.services import batch_predict

    result = batch_predict(as_of=date.fromisoformat(as_of) if as_of else None, model_names=model_names,
                           tickers=tickers)
    return result
