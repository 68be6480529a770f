"""Stopping the training run a pipeline run started: when the run is cancelled, its worker is lost or
``training.max_training_hours`` passes."""

from __future__ import annotations

import logging

from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from investml.celery import app
from training.models import PipelineRun, TrainingRun

logger = logging.getLogger(__name__)

PIPELINE_REQUESTER_PREFIX = "pipeline run "


def pipeline_requester(run_id: int) -> str:
    """``requested_by`` of the training runs pipeline run ``run_id`` starts (how they are found again)."""
    return f"{PIPELINE_REQUESTER_PREFIX}{run_id}"


def stop_training(*, training_run_id: int, why: str) -> None:
    """Mark a still-running training run failed and revoke its Celery task (killing it)."""
    training = TrainingRun.objects.filter(pk=training_run_id).first()
    if training is None:
        return
    updated = TrainingRun.objects.filter(pk=training_run_id, status__in=[TrainingRun.Status.QUEUED,
                                                                         TrainingRun.Status.RUNNING]).update(
        status=TrainingRun.Status.FAILED, finished_at=timezone.now(),
        error=Concat(F("error"), Value(f"ERROR: {why}\n")),
    )
    if updated and training.celery_task_id:
        try:
            app.control.revoke(training.celery_task_id, terminate=True, signal="SIGKILL")
        except Exception:  # noqa: BLE001 - the training run is already marked; the task may finish late
            logger.warning("could not revoke training task %s", training.celery_task_id, exc_info=True)


def mark_training_failed(*, run_id: int, why: str) -> None:
    """Stop every training run pipeline run ``run_id`` started and link the newest one to it (the
    train stage may have been lost before it recorded its training run)."""
    for training in TrainingRun.objects.filter(requested_by=pipeline_requester(run_id),
                                               status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING]):
        stop_training(training_run_id=training.pk, why=why)
    latest = TrainingRun.objects.filter(requested_by=pipeline_requester(run_id)).order_by("-id").first()
    if latest is not None:
        PipelineRun.objects.filter(pk=run_id).update(training_run=latest)
