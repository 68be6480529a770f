"""In-process runs (``run_pipeline --sync``): wait for a slot, then every stage in this process, in
order, retrying transient errors after their backoff."""

from __future__ import annotations

import logging
import time

from django.utils import timezone

from training.models import PipelineRun, PipelineStage
from training.orchestrator.config import orchestrator_settings
from training.orchestrator.errors import TrainingTimeout
from training.orchestrator.limits import claim_slot
from training.orchestrator.selectors import counts_text
from training.orchestrator.stage_work import STAGE_WORK, Progress, noop
from training.orchestrator.stages import (
    EXECUTED_STAGES,
    STAGES,
    begin_stage,
    complete_run,
    fail_stage,
    finish_stage_and_continue,
    heartbeat,
)
from training.orchestrator.train_stage import (
    record_noop_training,
    record_training,
    start_training,
    timeout_error,
)
from training.orchestrator.training_runs import mark_training_failed

logger = logging.getLogger(__name__)


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)
    else:
        logger.info(message)


def execute_sync(*, run_id: int, progress: Progress | None = None) -> PipelineRun:
    """Run every stage of a queued run in this process: wait for a slot, then the stages in order,
    retrying transient errors after their backoff. Returns the finished run."""
    cfg = orchestrator_settings()
    announced = False
    while True:
        claim = claim_slot(run_id=run_id, mode="sync")
        if claim.run is not None:
            break
        run = PipelineRun.objects.get(pk=run_id)
        if run.status != PipelineRun.Status.QUEUED:
            _say(progress, f"pipeline run {run.pk} {run.status}: {run.status_reason}")
            return run
        if not announced:
            _say(progress, f"pipeline run {run_id} waits for a slot: {len(claim.waiting_on)} of "
                           f"{cfg.max_concurrent_pipelines} running (runs {', '.join(map(str, claim.waiting_on))})")
            announced = True
        PipelineRun.objects.filter(pk=run_id).update(heartbeat_at=timezone.now())
        time.sleep(min(5.0, cfg.poll_seconds))
    run = claim.run
    generation = run.generation
    scope = ", ".join(run.tickers) if run.tickers else "the universe"
    _say(progress, f"pipeline run {run.pk} ({run.trigger}) on {scope}: stages {', '.join(STAGES)}")
    for index, stage in enumerate(EXECUTED_STAGES, 1):
        while True:
            ticket = begin_stage(run_id=run.pk, generation=generation, stage=stage)
            if ticket.action == "skip":
                _say(progress, f"[{index}/{len(EXECUTED_STAGES)}] {stage}: already done, skipped")
                break
            if ticket.action == "stop":
                return PipelineRun.objects.get(pk=run.pk)
            current = ticket.run
            assert current is not None
            _say(progress, f"[{index}/{len(EXECUTED_STAGES)}] {stage} ...")
            try:
                with heartbeat(run_id=run.pk, generation=generation):
                    if stage == "train":
                        if current.options.get("noop_seconds") is not None:
                            noop(current, stage)
                            outcome = record_noop_training(ticket)
                        else:
                            training = start_training(run=current, sync=True)
                            outcome = record_training(ticket=ticket, training=training)
                    else:
                        counts = STAGE_WORK[stage](run=current, progress=progress)
                        outcome = finish_stage_and_continue(ticket=ticket, counts=counts)
            except TrainingTimeout:
                mark_training_failed(run_id=run.pk, why=f"Pipeline {run.pk}: training exceeded "
                                                        f"training.max_training_hours ({cfg.max_training_hours:g} h)")
                outcome = fail_stage(ticket=ticket, exc=timeout_error(cfg.max_training_hours))
            except Exception as exc:  # noqa: BLE001 - recorded; retried or the run fails
                outcome = fail_stage(ticket=ticket, exc=exc)
            _say(progress, "  " + _stage_line(run_id=run.pk, stage=stage))
            if stage == "train":
                for derived in ("evaluate", "promote"):
                    if PipelineStage.objects.filter(run_id=run.pk, name=derived).exists():
                        _say(progress, "  " + _stage_line(run_id=run.pk, stage=derived))
            if outcome.action == "retry":
                time.sleep(outcome.countdown)
                continue
            if outcome.action == "stop":
                return PipelineRun.objects.get(pk=run.pk)
            break
    complete_run(run_id=run.pk, generation=generation)
    return PipelineRun.objects.get(pk=run.pk)


def _stage_line(*, run_id: int, stage: str) -> str:
    row = PipelineStage.objects.filter(run_id=run_id, name=stage).order_by("-attempt").first()
    if row is None:
        return f"{stage}: -"
    counts = counts_text(row.counts or {})
    line = f"{stage} {row.status} in {row.seconds:.1f}s" + (f" (attempt {row.attempt})" if row.attempt > 1 else "")
    line += f": {counts}" if counts else ""
    return line + (f" -- {row.error.splitlines()[0]}" if row.error else "")
