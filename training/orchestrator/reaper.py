"""The reaper (beat, and at worker start): a run whose worker is gone has its attempt failed and is
queued again, up to ``orchestrator.max_retries`` attempts of a stage; a training run outside any
pipeline whose trainer is lost is sent again (or failed, when it ran in place)."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from training.models import PipelineRun, PipelineStage, TrainingRun
from training.orchestrator.config import orchestrator_settings
from training.orchestrator.errors import default_hints, pipeline_failure_message
from training.orchestrator.stages import after_finish, finish_run
from training.orchestrator.training_runs import PIPELINE_REQUESTER_PREFIX, mark_training_failed, stop_training
from training.processes import pid_alive, worker_host
from training.services import training_run_recover_if_lost

logger = logging.getLogger(__name__)


def reap_stale_runs(*, now: datetime | None = None) -> list[int]:
    """Fail the current attempt of every run whose worker is gone (its process on this machine no
    longer exists, or no heartbeat for ``ML_PIPELINE_HEARTBEAT_TIMEOUT_SECONDS``) and queue it again
    (up to ``orchestrator.max_retries`` attempts of a stage; in-process ``--sync`` runs fail, their
    caller reruns them). Returns the reaped run ids; then starts queued runs."""
    cfg = orchestrator_settings()
    now = now or timezone.now()
    host = worker_host()
    reaped: list[int] = []
    holding = PipelineRun.objects.filter(status__in=PipelineRun.HOLDING_SLOT)
    waiting_sync = PipelineRun.objects.filter(status=PipelineRun.Status.QUEUED, mode="sync")
    for run in list(holding) + list(waiting_sync):
        why = _dead_reason(run, now=now, host=host, timeout=cfg.heartbeat_timeout_seconds)
        if why and _reap(run, why=why, now=now):
            reaped.append(run.pk)
    if reaped:
        after_finish()
    return reaped


def recover_lost_training_runs() -> dict[str, list[int]]:
    """Running training runs that no pipeline polls (``manage.py retrain``, a run queued by hand),
    whose trainer is lost, so they are not left running until the broker's visibility timeout (26 h
    on Redis): ``training.services.training_run_recover_if_lost`` sends a queued run's task again
    and fails a run trained in place. A pipeline's own training runs are its poll's, and this
    reaper's through their pipeline run (``reap_stale_runs``). Returns ``{"resent": [...],
    "failed": [...]}``."""
    out: dict[str, list[int]] = {"resent": [], "failed": []}
    running = (TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, heartbeat_at__isnull=False)
               .exclude(requested_by__startswith=PIPELINE_REQUESTER_PREFIX).order_by("pk"))
    for run in running:
        outcome = training_run_recover_if_lost(run=run)
        if outcome:
            out[outcome].append(run.pk)
    return out


def _dead_reason(run: PipelineRun, *, now: datetime, host: str, timeout: float) -> str:
    if run.worker_pid and run.worker_host == host and not pid_alive(run.worker_pid):
        return f"the process {run.worker_host}:{run.worker_pid} running it is gone (killed: SIGKILL or out of memory?)"
    reference = max([t for t in (run.heartbeat_at, run.next_attempt_at) if t is not None],
                    default=run.started_at or run.created_at)
    if reference is not None and (now - reference).total_seconds() > timeout:
        return f"no heartbeat for {(now - reference).total_seconds():.0f}s (timeout {timeout:g}s)"
    return ""


def _reap(run: PipelineRun, *, why: str, now: datetime) -> bool:
    cfg = orchestrator_settings()
    with transaction.atomic():
        fresh = PipelineRun.objects.select_for_update().filter(pk=run.pk).first()
        if (fresh is None or fresh.generation != run.generation or fresh.status != run.status
                or fresh.heartbeat_at != run.heartbeat_at):
            return False  # it moved on since we looked: alive
        lost = list(PipelineStage.objects.filter(run=fresh, status=PipelineStage.Status.RUNNING))
        for row in lost:
            row.status, row.finished_at = PipelineStage.Status.FAILED, now
            row.seconds = round((now - row.started_at).total_seconds(), 3) if row.started_at else 0.0
            row.error = f"worker lost: {why}"
            row.save(update_fields=["status", "finished_at", "seconds", "error"])
        stage = lost[0].name if lost else (fresh.current_stage or "start")
        tries = PipelineStage.objects.filter(run=fresh, name=stage).count()
        text = f"attempt {tries or 1} of {stage} lost: {why}"
        if fresh.mode == "sync":
            message = pipeline_failure_message(run_id=fresh.pk, stage=stage, message=why,
                                      hints=["Run it again: python manage.py run_pipeline --sync"])
            finish_run(fresh, status=PipelineRun.Status.FAILED, error=message, now=now)
            logger.error("%s", message)
        elif tries > cfg.max_retries:
            message = pipeline_failure_message(
                run_id=fresh.pk, stage=stage, message=f"{why}; gave up after {tries} attempts",
                hints=default_hints(stage, MemoryError()),
            )
            finish_run(fresh, status=PipelineRun.Status.FAILED, error=message, now=now)
            logger.error("%s", message)
        else:
            fresh.status = PipelineRun.Status.QUEUED
            fresh.attempts += 1 if lost else 0
            fresh.worker_pid, fresh.heartbeat_at, fresh.next_attempt_at = None, None, None
            fresh.error = (fresh.error or "") + text + "; queued again\n"
            fresh.save(update_fields=["status", "attempts", "worker_pid", "heartbeat_at", "next_attempt_at", "error"])
            logger.warning("pipeline run %s: %s; queued again", fresh.pk, text)
    if stage == "train":
        interrupted = f"interrupted: pipeline run {fresh.pk}'s worker was lost ({why})"
        if fresh.training_run_id:
            stop_training(training_run_id=fresh.training_run_id, why=interrupted)
        else:
            mark_training_failed(run_id=fresh.pk, why=interrupted)
    return True
