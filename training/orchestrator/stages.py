"""A run's stages as a state machine, each attempt a ``PipelineStage`` row: begin (only while the run
is ours: same generation, holding a slot), heartbeat, finish, fail (retry or stop), and the run's own
end (complete, fail, cancel), after which the next queued run gets the slot."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from features.common import jsonable
from training.models import PipelineRun, PipelineStage
from training.orchestrator.config import orchestrator_settings
from training.orchestrator.errors import (
    backoff_seconds,
    default_hints,
    describe_error,
    is_transient,
    pipeline_failure_message,
)
from training.orchestrator.limits import dispatch_queued_runs
from training.orchestrator.selectors import latest_attempts
from training.orchestrator.training_runs import stop_training
from training.processes import owner_alive, worker_host, worker_id
from training.runs import database_heartbeat

logger = logging.getLogger(__name__)

STAGES = ("update_market_data", "build_features", "train", "evaluate", "promote", "batch_predict", "check_drift")
# The stages that do work of their own; evaluate and promote happen inside the training run.
EXECUTED_STAGES = ("update_market_data", "build_features", "train", "batch_predict", "check_drift")
POSITION = {name: i for i, name in enumerate(STAGES)}


@dataclass
class Ticket:
    """What ``begin_stage`` decided: ``action`` is "run", "skip" (already succeeded) or "stop"."""

    action: str
    run: PipelineRun | None = None
    stage: PipelineStage | None = None
    reason: str = ""


@dataclass
class Outcome:
    """What a Celery task does next: "continue", "retry" (after ``countdown``), "wait" (poll again
    after ``countdown``), "stop", or "fan_out" (``chunks`` of tickers for a chord)."""

    action: str
    countdown: float = 0.0
    counts: dict[str, Any] = field(default_factory=dict)
    chunks: list[list[str]] = field(default_factory=list)


def attempt_owner_alive(*, attempt: PipelineStage, run: PipelineRun, now: datetime, timeout: float) -> bool:
    """Whether the process that began a running ``attempt`` may still be at it, by the reaper's rule
    (``processes.owner_alive`` over the run's heartbeat; past ``timeout`` the reaper closes the
    attempt and queues the run again)."""
    return owner_alive(worker=attempt.worker, heartbeat_at=run.heartbeat_at, now=now, timeout=timeout)


def begin_stage(*, run_id: int, generation: int, stage: str) -> Ticket:
    """Start an attempt of ``stage`` if the run is still ours (same generation, holding a slot).
    A stage that already succeeded is skipped, and one whose attempt is still running in a live
    process is left to it ("stop"): both are a task delivered twice (the broker delivers at least
    once). An attempt left "running" by a lost worker is closed as failed first and counts."""
    cfg = orchestrator_settings()
    now = timezone.now()
    lost_message = ""
    with transaction.atomic():
        run = PipelineRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            return Ticket("stop", reason="the run no longer exists")
        if run.generation != generation or run.status not in PipelineRun.HOLDING_SLOT:
            return Ticket("stop", run=run, reason=f"the run is {run.status} (generation {run.generation})")
        attempts = list(PipelineStage.objects.filter(run=run, name=stage).order_by("attempt"))
        if any(a.status in PipelineStage.DONE for a in attempts):
            return Ticket("skip", run=run)
        running = [a for a in attempts if a.status == PipelineStage.Status.RUNNING]
        owned = next((a for a in running if attempt_owner_alive(
            attempt=a, run=run, now=now, timeout=cfg.heartbeat_timeout_seconds)), None)
        if owned is not None:
            reason = (f"attempt {owned.attempt} of {stage} is running in {owned.worker or '?'}: "
                      "this delivery of its task is a duplicate")
            logger.warning("pipeline run %s: %s; it stops here", run.pk, reason)
            return Ticket("stop", run=run, reason=reason)
        for lost in running:
            lost.status, lost.finished_at = PipelineStage.Status.FAILED, now
            lost.error = f"interrupted: the worker ({lost.worker or '?'}) was lost; the task was delivered again"
            lost.save(update_fields=["status", "finished_at", "error"])
            lost_message = lost.error
        attempt = (attempts[-1].attempt + 1) if attempts else 1
        if attempt > cfg.max_retries + 1:
            message = pipeline_failure_message(
                run_id=run.pk, stage=stage,
                message=f"the worker running it was lost {len(attempts)} times (killed, or out of memory?)",
                hints=default_hints(stage, MemoryError()),
            )
            finish_run(run, status=PipelineRun.Status.FAILED, error=message, now=now)
            return Ticket("stop", run=run, reason=message)
        row = PipelineStage.objects.create(run=run, name=stage, position=POSITION[stage], attempt=attempt,
                                           status=PipelineStage.Status.RUNNING, started_at=now,
                                           worker=worker_id())
        run.status = PipelineRun.Status.RUNNING
        run.current_stage = stage
        run.worker_host, run.worker_pid, run.heartbeat_at, run.next_attempt_at = worker_host(), os.getpid(), now, None
        if attempt > 1 and lost_message:
            run.attempts += 1
        run.save(update_fields=["status", "current_stage", "worker_host", "worker_pid", "heartbeat_at",
                                "next_attempt_at", "attempts"])
    return Ticket("run", run=run, stage=row)


def touch(*, run_id: int, generation: int, release_process: bool = False) -> bool:
    """Heartbeat; False when the run is no longer ours (cancelled, reaped, finished)."""
    fields: dict[str, Any] = {"heartbeat_at": timezone.now()}
    if release_process:
        fields["worker_pid"] = None
    return bool(PipelineRun.objects.filter(pk=run_id, generation=generation,
                                           status__in=PipelineRun.HOLDING_SLOT).update(**fields))


@contextmanager
def heartbeat(*, run_id: int, generation: int) -> Iterator[None]:
    """Keep the run's heartbeat fresh from a thread while a stage runs in this process."""
    with database_heartbeat(lambda: touch(run_id=run_id, generation=generation),
                            interval=orchestrator_settings().heartbeat_seconds, name=f"heartbeat of pipeline run {run_id}"):
        yield


def finish_stage(*, ticket: Ticket, counts: dict[str, Any], status: str = PipelineStage.Status.SUCCEEDED,
                 error: str = "") -> bool:
    """Close the ticket's attempt with ``status``. Only a running attempt closes: False when it was
    closed meanwhile (the reaper, or another delivery, took it over), and then the caller stops."""
    row = ticket.stage
    assert row is not None
    now = timezone.now()
    values = {"status": status, "finished_at": now, "counts": jsonable(counts), "error": error,
              "seconds": round((now - row.started_at).total_seconds(), 3) if row.started_at else 0.0}
    if not PipelineStage.objects.filter(pk=row.pk, status=PipelineStage.Status.RUNNING).update(**values):
        logger.warning("pipeline run %s: attempt %s of %s was closed by someone else meanwhile; its result "
                       "(%s) is not recorded", row.run_id, row.attempt, row.name, status)
        return False
    for name, value in values.items():
        setattr(row, name, value)
    PipelineRun.objects.filter(pk=row.run_id).update(worker_pid=None, heartbeat_at=now)
    return True


def finish_stage_and_continue(*, ticket: Ticket, counts: dict[str, Any],
                              status: str = PipelineStage.Status.SUCCEEDED, error: str = "") -> Outcome:
    """``finish_stage``, then "continue" with ``counts``, or "stop" when the attempt was closed meanwhile."""
    if finish_stage(ticket=ticket, counts=counts, status=status, error=error):
        return Outcome("continue", counts=counts)
    return Outcome("stop")


def fail_stage(*, ticket: Ticket, exc: BaseException) -> Outcome:
    """Record a failed attempt; "retry" with a countdown for a transient error with attempts left,
    else fail the run ("stop") with the spec-toned message."""
    cfg = orchestrator_settings()
    row, run = ticket.stage, ticket.run
    assert row is not None and run is not None
    text = describe_error(exc)
    transient = is_transient(exc)
    attempts_left = transient and row.attempt <= cfg.max_retries
    if attempts_left:
        countdown = backoff_seconds(attempt=row.attempt, base=cfg.retry_backoff_seconds)
        if not finish_stage(ticket=ticket, counts=row.counts or {}, status=PipelineStage.Status.FAILED,
                            error=f"{text} (transient; retry {row.attempt} of {cfg.max_retries} in {countdown:.1f}s)"):
            return Outcome("stop")
        updated = PipelineRun.objects.filter(pk=run.pk, generation=run.generation,
                                             status__in=PipelineRun.HOLDING_SLOT).update(
            status=PipelineRun.Status.RETRYING, attempts=F("attempts") + 1, worker_pid=None,
            heartbeat_at=timezone.now(), next_attempt_at=timezone.now() + timedelta(seconds=countdown),
        )
        _append_error(run.pk, f"attempt {row.attempt} of {row.name} failed: {text}; retrying in {countdown:.1f}s")
        logger.warning("pipeline run %s: %s failed (%s); retry %s of %s in %.1fs", run.pk, row.name, text,
                       row.attempt, cfg.max_retries, countdown)
        return Outcome("retry" if updated else "stop", countdown=countdown)
    if not finish_stage(ticket=ticket, counts=row.counts or {}, status=PipelineStage.Status.FAILED, error=text):
        return Outcome("stop")
    message = text if not transient else f"{text} (after {row.attempt} attempts)"
    full = pipeline_failure_message(run_id=run.pk, stage=row.name, message=message, hints=default_hints(row.name, exc))
    fail_run(run_id=run.pk, generation=run.generation, message=full)
    return Outcome("stop")


def _append_error(run_id: int, text: str) -> None:
    PipelineRun.objects.filter(pk=run_id).update(error=Concat(F("error"), Value(text.rstrip() + "\n")))


def fail_run(*, run_id: int, generation: int | None, message: str) -> None:
    with transaction.atomic():
        run = PipelineRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status in PipelineRun.FINISHED:
            return
        if generation is not None and run.generation != generation:
            return
        finish_run(run, status=PipelineRun.Status.FAILED, error=message, now=timezone.now())
    logger.error("%s", message)
    after_finish()


def finish_run(run: PipelineRun, *, status: str, error: str = "", now: datetime) -> None:
    """Close ``run`` (locked by the caller) with ``status``; ``error`` is appended to its log."""
    run.status, run.finished_at = status, now
    run.worker_pid, run.next_attempt_at = None, None
    if error:
        run.error = (run.error or "") + error.rstrip() + "\n"
        run.status_reason = error.splitlines()[0][:2000]
    run.save(update_fields=["status", "finished_at", "worker_pid", "next_attempt_at", "error", "status_reason"])


def after_finish() -> None:
    """A slot may have freed: start the next queued Celery run (never raises)."""
    try:
        dispatch_queued_runs()
    except Exception:  # noqa: BLE001 - the periodic dispatcher picks it up
        logger.warning("dispatching queued pipeline runs failed", exc_info=True)


def complete_run(*, run_id: int, generation: int) -> bool:
    """Close a run whose stages are done: succeeded, or failed when a stage failed without stopping
    it (a training run that failed while active models still served the predictions)."""
    now = timezone.now()
    with transaction.atomic():
        run = PipelineRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.generation != generation or run.status not in PipelineRun.HOLDING_SLOT:
            return False
        failed = [s for s in latest_attempts(run=run)
                  if s.status in (PipelineStage.Status.FAILED, PipelineStage.Status.DEGRADED)]
        if failed:
            first = failed[0]
            finish_run(run, status=PipelineRun.Status.FAILED, now=now,
                       error=pipeline_failure_message(run_id=run.pk, stage=first.name, message=first.error.splitlines()[0]
                                             if first.error else "failed"))
        else:
            finish_run(run, status=PipelineRun.Status.SUCCEEDED, now=now)
        run.current_stage = ""
        run.save(update_fields=["current_stage"])
    logger.info("pipeline run %s %s in %.1fs", run.pk, run.status, run.duration_seconds or 0)
    after_finish()
    return True


def cancel_run(*, run_id: int, actor: str) -> PipelineRun:
    """Cancel a queued or running run. A running one stops at its next stage boundary; its
    training run (if any) is revoked on Celery."""
    with transaction.atomic():
        run = PipelineRun.objects.select_for_update().get(pk=run_id)
        if run.status not in PipelineRun.ACTIVE:
            return run
        finish_run(run, status=PipelineRun.Status.CANCELLED, now=timezone.now(),
                   error=f"cancelled by {actor or 'someone'}")
    if run.training_run_id:
        stop_training(training_run_id=run.training_run_id, why=f"pipeline run {run.pk} was cancelled by {actor}")
    after_finish()
    return run
