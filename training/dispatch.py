"""Sending training work to the workers, by registered task name (``training.tasks`` defines the
tasks and imports the training services; nothing here imports it back)."""

from __future__ import annotations

from celery import chord, group

from investml.celery import app


def retrain_send(*, run_id: int) -> str:
    """Queue training run ``run_id`` (``training.retrain``); returns the task id."""
    return str(app.signature("training.retrain", args=(run_id,)).apply_async().id)


def prophet_chunks_send(*, run_id: int, chunks: list[list[str]]) -> str:
    """Start the chord of a run's Prophet chunks, merged by ``training.prophet_merge`` (a failed chunk
    calls ``training.prophet_failed``); returns the merge task's id."""
    header = group(app.signature("training.prophet_chunk", args=(run_id, i, tickers))
                   for i, tickers in enumerate(chunks))
    merge = app.signature("training.prophet_merge", args=(run_id,))
    merge = merge.on_error(app.signature("training.prophet_failed", args=(run_id,)))
    return str(chord(header)(merge).id or "")
