"""Slots: at most ``orchestrator.max_concurrent_pipelines`` runs hold one, decided under a row lock;
the cost limit skips a run about to start while today's (or the month's) tracked cost is over it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from investml import ledger
from training.models import OrchestratorLock, PipelineRun
from training.orchestrator import dispatch
from training.orchestrator.config import orchestrator_settings

logger = logging.getLogger(__name__)

SLOT_LOCK = "pipeline-slots"


@contextmanager
def _lock(name: str) -> Iterator[None]:
    """Serialize a decision across processes and machines (call inside ``transaction.atomic``)."""
    lock, _ = OrchestratorLock.objects.get_or_create(name=name)
    OrchestratorLock.objects.select_for_update().filter(pk=lock.pk).update(updated_at=timezone.now())
    yield


@dataclass
class Claim:
    run: PipelineRun | None
    skipped: list[int] = field(default_factory=list)
    waiting_on: list[int] = field(default_factory=list)


def claim_slot(*, run_id: int | None, mode: str) -> Claim:
    """Take a slot for ``run_id`` (or the oldest queued Celery run when None), under the slot lock.
    Runs that would start while today's cost is over the daily limit, or the month-to-date over the
    monthly one, are skipped instead."""
    cfg = orchestrator_settings()
    claim = Claim(run=None)
    now = timezone.now()
    with transaction.atomic():
        with _lock(SLOT_LOCK):
            holding = list(PipelineRun.objects.filter(status__in=PipelineRun.HOLDING_SLOT).values_list("pk", flat=True))
            queued = PipelineRun.objects.select_for_update().filter(status=PipelineRun.Status.QUEUED)
            queued = queued.filter(pk=run_id) if run_id is not None else queued.filter(mode=mode)
            for run in queued.order_by("created_at", "id"):
                breach = ledger.cost_limit_breach(day=timezone.localdate(), daily_limit=cfg.cost_limit_daily_usd)
                if breach is not None:
                    message = breach.message
                    run.status, run.status_reason, run.finished_at = PipelineRun.Status.SKIPPED, message, now
                    run.save(update_fields=["status", "status_reason", "finished_at"])
                    claim.skipped.append(run.pk)
                    continue
                if len(holding) >= cfg.max_concurrent_pipelines:
                    claim.waiting_on = holding
                    break
                run.status = PipelineRun.Status.RUNNING
                run.generation += 1
                run.attempts = max(1, run.attempts)
                run.started_at = run.started_at or now
                run.heartbeat_at = now
                run.next_attempt_at = None
                run.running_at_start = len(holding) + 1
                run.save(update_fields=["status", "generation", "attempts", "started_at", "heartbeat_at",
                                        "next_attempt_at", "running_at_start"])
                claim.run = run
                break
    for pk in claim.skipped:
        _alert_cost_limit(run_id=pk)
    return claim


def _alert_cost_limit(*, run_id: int) -> None:
    cfg = orchestrator_settings()
    run = PipelineRun.objects.get(pk=run_id)
    day = timezone.localdate()
    breach = ledger.cost_limit_breach(day=day, daily_limit=cfg.cost_limit_daily_usd)
    if breach is None:  # costs were corrected since: alert on what the run was skipped for
        key, spent, limit = day.isoformat(), float(ledger.cost_for_day(day=day)), cfg.cost_limit_daily_usd
    else:  # the daily alert is keyed by the day, the monthly one by the month
        key, spent, limit = breach.key, breach.spent_usd, breach.limit_usd
    logger.warning("%s: pipeline run %s skipped", run.status_reason, run_id)
    ledger.raise_alert(kind="cost_limit_exceeded", key=key, severity="critical", message=run.status_reason,
                       details={"spent_usd": spent, "limit_usd": limit, "skipped_pipeline_run": run_id})


def dispatch_queued_runs() -> list[int]:
    """Start queued Celery runs while slots are free (oldest first); returns the started run ids.
    Called when a run is requested, when one finishes, at worker start and by beat."""
    started: list[int] = []
    while True:
        claim = claim_slot(run_id=None, mode="celery")
        run = claim.run
        if run is None:
            if not claim.skipped:
                break
            continue
        try:
            task_id = dispatch.start_chain(run_id=run.pk, generation=run.generation)
        except Exception as exc:  # broker down: give the slot back, the run waits queued
            logger.warning("could not queue pipeline run %s on Celery (%s: %s); it stays queued", run.pk,
                           type(exc).__name__, exc)
            PipelineRun.objects.filter(pk=run.pk, generation=run.generation).update(
                status=PipelineRun.Status.QUEUED, heartbeat_at=None
            )
            break
        PipelineRun.objects.filter(pk=run.pk).update(celery_task_id=task_id or "")
        logger.info("pipeline run %s started on Celery (%s of %s slots, generation %s)", run.pk,
                    run.running_at_start, orchestrator_settings().max_concurrent_pipelines, run.generation)
        started.append(run.pk)
    return started
