"""Celery tasks for training: thin wrappers around ``training.services``.

``retrain_task`` runs a queued training run on a worker. Prophet fans out there as a chord: one
``prophet_chunk_task`` per chunk of tickers (in parallel on as many worker slots as there are),
then ``prophet_merge_task`` merges the chunk models, registers and gates Prophet; if a chunk fails,
``prophet_failed_task`` records it. The run is closed by whichever part finishes last.
Chunk outputs travel as checksummed files under ``ML_MODELS_PATH/_runs/<run id>/`` (the task
messages stay JSON), so workers on several machines need that root shared, as the model folder:
``ML_MODELS_PATH=s3://bucket/prefix`` (``features.storage``).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from training import services


@shared_task(name="training.retrain", acks_late=True)
def retrain_task(run_id: int) -> dict[str, Any]:
    run = services.execute_run(run_id=run_id, distributed=True)
    return {"run": run.pk, "status": run.status}


@shared_task(name="training.prophet_chunk", acks_late=True)
def prophet_chunk_task(run_id: int, chunk: int, tickers: list[str]) -> dict[str, Any]:
    return services.run_prophet_chunk(run_id=run_id, chunk=chunk, tickers=tickers)


@shared_task(name="training.prophet_merge")
def prophet_merge_task(results: list[dict[str, Any]], run_id: int) -> dict[str, Any]:
    services.merge_prophet_chunks(run_id=run_id, results=results)
    return {"run": run_id, "chunks": len(results)}


@shared_task(name="training.prophet_failed")
def prophet_failed_task(request: Any, exc: Any, traceback: Any, run_id: int) -> None:
    services.fail_prophet_part(run_id=run_id, error=f"{type(exc).__name__}: {exc}")
