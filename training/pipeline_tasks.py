"""Celery tasks of the daily pipeline: thin wrappers over ``training.orchestrator`` (the stage bodies
are ``training.orchestrator.celery_stages``).

A run is one chain (``training.orchestrator.dispatch.start_chain``)::

    update_market_data -> build_features -> train -> await_training -> batch_predict -> check_drift -> finish

``build_features`` replaces itself with a chord (one ``build_features_chunk`` per chunk of tickers,
then ``build_features_done``) when the universe has more than one chunk; ``train`` queues the
training run (``training.retrain``, whose Prophet chunks fan out as their own chord) and
``await_training`` polls it with ``retry(countdown=...)``, so no worker slot is held while it
trains. A transient error retries the same task after a backoff; a permanent one (or a run that
was cancelled, reaped or belongs to an older generation) stops the chain (``Ignore``).

Beat tasks (seeded by ``manage.py seed_schedules``): ``training.pipeline.run_daily``,
``training.pipeline.dispatch_queued``, ``training.pipeline.reap_stale``. When a worker starts it
reaps runs left by a killed worker at once, and again once their heartbeat can have gone stale.

The orchestrator sends a run's chain by these tasks' names (``training.orchestrator.dispatch``), so
it never imports this module; ``training.apps`` imports it to register the tasks in every process.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import chord, group, shared_task
from celery.exceptions import Ignore
from celery.signals import worker_ready

from training.orchestrator.celery_stages import build_feature_chunk, finish_feature_fan_out, run_stage
from training.orchestrator.config import orchestrator_settings
from training.orchestrator.errors import is_transient, pipeline_failure_message
from training.orchestrator.limits import dispatch_queued_runs
from training.orchestrator.reaper import reap_stale_runs, recover_lost_training_runs
from training.orchestrator.stages import complete_run, fail_run
from training.orchestrator.train_stage import check_training
from training.orchestrator.triggers import request_pipeline_run

logger = logging.getLogger(__name__)


def _follow(task: Any, outcome: Any) -> dict[str, Any]:
    if outcome.action in ("retry", "wait"):
        raise task.retry(countdown=outcome.countdown)  # max_retries=None on the task: the orchestrator counts
    if outcome.action == "stop":
        raise Ignore()
    return {"action": outcome.action, "counts": outcome.counts}


def _stage(task: Any, run_id: int, generation: int, stage: str) -> dict[str, Any]:
    outcome = run_stage(run_id=run_id, generation=generation, stage=stage)
    if outcome.action == "fan_out":
        header = group(build_features_chunk_task.si(run_id, generation, i, tickers)
                       for i, tickers in enumerate(outcome.chunks))
        return task.replace(chord(header, build_features_done_task.s(run_id, generation)))
    return _follow(task, outcome)


@shared_task(name="training.pipeline.update_market_data", bind=True, acks_late=True, max_retries=None)
def update_market_data_task(self, run_id: int, generation: int) -> dict[str, Any]:
    return _stage(self, run_id, generation, "update_market_data")


@shared_task(name="training.pipeline.build_features", bind=True, acks_late=True, max_retries=None)
def build_features_task(self, run_id: int, generation: int) -> dict[str, Any]:
    return _stage(self, run_id, generation, "build_features")


@shared_task(name="training.pipeline.build_features_chunk", acks_late=True)
def build_features_chunk_task(run_id: int, generation: int, chunk: int, tickers: list[str]) -> dict[str, Any]:
    return build_feature_chunk(run_id=run_id, generation=generation, chunk=chunk, tickers=tickers)


@shared_task(name="training.pipeline.build_features_done", bind=True, acks_late=True, max_retries=None)
def build_features_done_task(self, results: list[dict[str, Any]], run_id: int, generation: int) -> dict[str, Any]:
    outcome = finish_feature_fan_out(run_id=run_id, generation=generation, results=results)
    if outcome.action == "retry":  # the whole build again, after the backoff
        raise self.retry(countdown=outcome.countdown)  # pragma: no cover - chunks retry inside
    return _follow(self, outcome)


@shared_task(name="training.pipeline.train", bind=True, acks_late=True, max_retries=None)
def train_task(self, run_id: int, generation: int) -> dict[str, Any]:
    return _stage(self, run_id, generation, "train")


@shared_task(name="training.pipeline.await_training", bind=True, acks_late=True, max_retries=None)
def await_training_task(self, run_id: int, generation: int) -> dict[str, Any]:
    return _follow(self, check_training(run_id=run_id, generation=generation))


@shared_task(name="training.pipeline.batch_predict", bind=True, acks_late=True, max_retries=None)
def batch_predict_task(self, run_id: int, generation: int) -> dict[str, Any]:
    return _stage(self, run_id, generation, "batch_predict")


@shared_task(name="training.pipeline.check_drift", bind=True, acks_late=True, max_retries=None)
def check_drift_task(self, run_id: int, generation: int) -> dict[str, Any]:
    return _stage(self, run_id, generation, "check_drift")


@shared_task(name="training.pipeline.finish", acks_late=True)
def finish_task(run_id: int, generation: int) -> dict[str, Any]:
    return {"run": run_id, "closed": complete_run(run_id=run_id, generation=generation)}


@shared_task(name="training.pipeline.failed")
def pipeline_failed_task(request: Any, exc: Any, traceback: Any, run_id: int, generation: int) -> None:
    """Error callback of the chain: an unexpected exception in a task fails the run. The broker or
    database unreachable around a task (a step that could not be published, a result that could not
    be stored) is not the run's fault: the reaper queues it again once its heartbeat is stale."""

    if is_transient(exc):
        logger.warning("pipeline run %s: %s: %s; left to the reaper (it queues the run again)", run_id,
                       getattr(request, "task", "a task"), exc)
        return
    message = pipeline_failure_message(
        run_id=run_id, stage=str(getattr(request, "task", "") or "a task").rsplit(".", 1)[-1],
        message=f"{type(exc).__name__}: {exc}", hints=["Check the worker log (docker-compose logs -f worker)"],
    )
    fail_run(run_id=run_id, generation=generation, message=message)


# --------------------------------------------------------------------------------------------------
# beat and maintenance


@shared_task(name="training.pipeline.run_daily")
def run_daily_task(tickers: list[str] | None = None) -> dict[str, Any]:
    """The scheduled daily pipeline (``training.default_schedule``)."""
    run = request_pipeline_run(trigger="schedule", requested_by="celery beat", tickers=tickers,
                               reason="training.default_schedule")
    return {"run": run.pk, "status": run.status, "deduplicated": bool(getattr(run, "deduplicated", False))}


@shared_task(name="training.pipeline.dispatch_queued")
def dispatch_queued_task() -> dict[str, Any]:
    return {"started": dispatch_queued_runs()}


@shared_task(name="training.pipeline.reap_stale")
def reap_stale_task() -> dict[str, Any]:
    reaped = reap_stale_runs()
    training = recover_lost_training_runs()
    return {"reaped": reaped, "training": training, "started": dispatch_queued_runs()}


@worker_ready.connect
def _reap_at_worker_start(sender: Any = None, **kwargs: Any) -> None:
    """Runs left "running" by a killed worker on this machine are reaped now (their process is
    gone); others once their heartbeat has had time to go stale."""
    try:
        timeout = orchestrator_settings().heartbeat_timeout_seconds
        reap_stale_task.apply_async()
        reap_stale_task.apply_async(countdown=timeout + 1)
    except Exception:  # noqa: BLE001 - the periodic reaper covers it
        logger.warning("could not schedule the pipeline reaper at worker start", exc_info=True)
