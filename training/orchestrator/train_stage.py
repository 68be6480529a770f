"""The train stage: a ``TrainingRun`` (``training.services.retrain``) trained in this process under a
deadline, or queued on Celery and polled without holding a worker slot; its evaluate and promote
stages are recorded from the finished training run."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from features.common import jsonable
from registry import selectors as registry_selectors
from training.config import RetrainError
from training.models import PipelineRun, PipelineStage, TrainingRun
from training.orchestrator.config import orchestrator_settings
from training.orchestrator.errors import (
    PermanentStageError,
    TrainingTimeout,
    TransientStageError,
    is_transient,
)
from training.orchestrator.stages import (
    POSITION,
    Outcome,
    Ticket,
    begin_stage,
    fail_stage,
    finish_stage_and_continue,
    touch,
)
from training.orchestrator.training_runs import pipeline_requester, stop_training
from training.services import retrain, training_run_resend_if_lost


def record_noop_training(ticket: Ticket) -> Outcome:
    """A smoke run's train stage: the evaluate and promote stages it would have recorded."""
    row = ticket.stage
    assert row is not None
    now = timezone.now()
    source = f"smoke run, train attempt {row.attempt}"
    with transaction.atomic():
        if not _derived_stages_recorded(row=row, source=source):
            for name in ("evaluate", "promote"):
                _derived_stage(run_id=row.run_id, name=name, source=source, started=now, seconds=0.0,
                               status=PipelineStage.Status.SUCCEEDED, counts={"noop": True})
    return finish_stage_and_continue(ticket=ticket, counts={"noop": True})


def _derived_stages_recorded(*, row: PipelineStage, source: str) -> bool:
    """Whether this train attempt's evaluate and promote stages exist (``source`` names where they
    came from). Locks the attempt first, so two deliveries of the same poll record them once."""
    PipelineStage.objects.select_for_update().filter(pk=row.pk).first()
    return PipelineStage.objects.filter(run_id=row.run_id, name="evaluate", worker=source).exists()


def _derived_stage(*, run_id: int, name: str, source: str, started: datetime, seconds: float, status: str,
                   counts: dict[str, Any], error: str = "") -> None:
    attempt = 1 + PipelineStage.objects.filter(run_id=run_id, name=name).count()
    PipelineStage.objects.create(run_id=run_id, name=name, position=POSITION[name], attempt=attempt,
                                 started_at=started, finished_at=started + timedelta(seconds=seconds),
                                 seconds=seconds, status=status, counts=jsonable(counts), error=error, worker=source)


def _retrain_kwargs(run: PipelineRun) -> dict[str, Any]:
    # A drift or degradation trigger questions the models' skill: those runs always re-evaluate.
    auto = run.trigger not in (PipelineRun.Trigger.DRIFT, PipelineRun.Trigger.PERFORMANCE)
    return {"models": run.options.get("models"), "tickers": list(run.tickers) or None,
            "trigger": run.trigger, "requested_by": pipeline_requester(run.pk),
            "evaluation": run.options.get("evaluation") or ("auto" if auto else "full")}


def start_training(*, run: PipelineRun, sync: bool) -> TrainingRun:
    """Create the run's training run (``sync``: train it here now; else queued on Celery), or reuse
    the one a lost attempt left running."""
    if run.training_run_id:
        existing = TrainingRun.objects.get(pk=run.training_run_id)
        if existing.status in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING, TrainingRun.Status.SUCCEEDED):
            return existing
    try:
        if sync:
            with deadline(hours=orchestrator_settings().max_training_hours):
                training = retrain(**_retrain_kwargs(run), sync=True)
        else:
            training = retrain(**_retrain_kwargs(run), sync=False)
    except RetrainError as exc:
        if is_transient(exc):
            raise TransientStageError(str(exc)) from exc
        raise PermanentStageError(str(exc), hints=["Check the models section of config/pipeline.json"]) from exc
    PipelineRun.objects.filter(pk=run.pk).update(training_run=training)
    run.training_run = training
    return training


@contextmanager
def deadline(*, hours: float) -> Iterator[None]:
    """Raise ``TrainingTimeout`` in this (main) thread after ``hours`` (SIGALRM; elsewhere no-op)."""
    seconds = float(hours) * 3600
    usable = (seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TrainingTimeout(f"training exceeded training.max_training_hours ({hours:g} h)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def timeout_error(hours: float) -> PermanentStageError:
    """The train stage's error when ``training.max_training_hours`` passed."""
    return PermanentStageError(
        f"training exceeded training.max_training_hours ({hours:g} h); the training run was stopped",
        hints=["Train fewer tickers (--tickers) or smaller models (config/pipeline.json models section)",
               "Add Celery workers: Prophet fans out per chunk of tickers (ML_PROPHET_CHUNK_TICKERS)",
               "Raise training.max_training_hours in config/pipeline.json"],
    )


def training_stage_counts(training: TrainingRun) -> dict[str, dict[str, Any]]:
    """The train, evaluate and promote stages' counts, status and timings from a training run."""
    stages = list(training.stages or [])
    versions = {v.model.name: v for v in training.model_versions.select_related("model")}

    def window(names: list[dict[str, Any]]) -> dict[str, Any]:
        starts = [s.get("started_at") for s in names if s.get("started_at")]
        return {"started_at": min(starts) if starts else None,
                "seconds": round(sum(float(s.get("seconds") or 0) for s in names), 3),
                "failed": [f"{s['name']}: {s.get('error', '')}" for s in names if s.get("status") == "failed"]}

    evaluate = [s for s in stages if str(s.get("name", "")).startswith(("evaluate:", "chunk:", "combine:"))]
    promote = [s for s in stages if str(s.get("name", "")).startswith(("register:", "gate:"))]
    rank_ic = {s["name"].split(":", 1)[1]: (s.get("counts") or {}).get("rank_ic") for s in evaluate
               if s["name"].startswith(("evaluate:", "combine:"))}
    gates = {s["name"].split(":", 1)[1]: bool((s.get("counts") or {}).get("promoted")) for s in promote
             if s["name"].startswith("gate:")}
    return {
        "train": {"training_run": training.pk, "status": training.status, "models": list(training.model_names),
                  "cpu_seconds": round(float(training.cpu_seconds or 0), 1), "cost_usd": float(training.cost_usd or 0),
                  "versions": {n: f"{v.version} ({v.status})" for n, v in versions.items()}},
        "evaluate": {**window(evaluate), "rank_ic": rank_ic},
        "promote": {**window(promote), "promoted": sorted(n for n, ok in gates.items() if ok),
                    "kept_staging": sorted(n for n, ok in gates.items() if not ok)},
    }


def record_training(*, ticket: Ticket, training: TrainingRun) -> Outcome:
    """Close the train stage from a finished training run and add its evaluate and promote stages
    (once, however many deliveries of the poll get here)."""
    run = ticket.run
    assert run is not None
    info = training_stage_counts(training)
    now = timezone.now()
    source = f"training run {training.pk}"
    row = ticket.stage
    assert row is not None
    with transaction.atomic():
        if not _derived_stages_recorded(row=row, source=source):
            for name in ("evaluate", "promote"):
                part = info[name]
                started = _parse_time(part.pop("started_at")) or now
                failed = part.pop("failed")
                _derived_stage(run_id=run.pk, name=name, source=source, started=started, seconds=part["seconds"],
                               status=PipelineStage.Status.FAILED if failed else PipelineStage.Status.SUCCEEDED,
                               counts=part, error="\n".join(failed)[:5000])
            PipelineRun.objects.filter(pk=run.pk).update(cost_usd=F("cost_usd") + (training.cost_usd or Decimal("0")))
    if training.status == TrainingRun.Status.SUCCEEDED:
        return finish_stage_and_continue(ticket=ticket, counts=info["train"])
    error_lines = [line for line in (training.error or "").splitlines() if line.strip()]
    first = error_lines[0] if error_lines else f"training run {training.pk} failed"
    first = first.removeprefix("ERROR: ")
    if any(word in (training.error or "") for word in ("Out of memory", "OperationalError", "InterfaceError")):
        return fail_stage(ticket=ticket, exc=TransientStageError(
            f"training run {training.pk} failed: {first}",
            hints=[line.split(". ", 1)[-1] for line in error_lines if line[:2].rstrip(".").isdigit()]))
    if registry_selectors.versions(statuses=["active"]).exists():  # the active models still serve: predict with them
        return finish_stage_and_continue(
            ticket=ticket, counts=info["train"], status=PipelineStage.Status.DEGRADED,
            error=f"training run {training.pk} failed: {first} (the active models still predict)")
    return fail_stage(ticket=ticket, exc=PermanentStageError(
        f"training run {training.pk} failed and no model is active: {first}",
        hints=["See the training run's stages and log: python manage.py retrain --status",
               "Check that features exist: python manage.py build_features"]))


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)


def check_training(*, run_id: int, generation: int) -> Outcome:
    """Poll the train stage's training run: "wait" (poll again), or record it and "continue" or
    "stop"; starts the next attempt after a transient failure's backoff; enforces
    ``training.max_training_hours``."""
    cfg = orchestrator_settings()
    run = PipelineRun.objects.filter(pk=run_id).select_related("training_run").first()
    if run is None or run.generation != generation or run.status not in PipelineRun.HOLDING_SLOT:
        return Outcome("stop")
    latest = PipelineStage.objects.filter(run=run, name="train").order_by("-attempt").first()
    if latest is None:
        return Outcome("stop")
    if latest.status in PipelineStage.DONE:
        return Outcome("continue")
    if latest.status == PipelineStage.Status.FAILED:
        if run.status != PipelineRun.Status.RETRYING:
            return Outcome("stop")
        ticket = begin_stage(run_id=run_id, generation=generation, stage="train")  # the backoff has passed
        if ticket.action != "run":
            return Outcome("continue" if ticket.action == "skip" else "stop")
        try:
            start_training(run=ticket.run, sync=False)
        except Exception as exc:  # noqa: BLE001 - recorded; retried or the run fails
            return fail_stage(ticket=ticket, exc=exc)
        touch(run_id=run_id, generation=generation, release_process=True)
        return Outcome("wait", countdown=cfg.poll_seconds)
    ticket = Ticket("run", run=run, stage=latest)
    if run.options.get("noop_seconds") is not None:
        return record_noop_training(ticket)
    training = run.training_run
    if training is None:
        return fail_stage(ticket=ticket, exc=PermanentStageError("the train stage has no training run"))
    if training.status in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING):
        started = latest.started_at or timezone.now()
        if cfg.max_training_hours > 0 and timezone.now() - started > timedelta(hours=cfg.max_training_hours):
            stop_training(training_run_id=training.pk,
                          why=f"Pipeline {run.pk}: training exceeded training.max_training_hours "
                              f"({cfg.max_training_hours:g} h)")
            return fail_stage(ticket=ticket, exc=timeout_error(cfg.max_training_hours))
        if not touch(run_id=run_id, generation=generation, release_process=True):
            return Outcome("stop")
        training_run_resend_if_lost(run=training)  # its machine lost: trained again elsewhere
        return Outcome("wait", countdown=cfg.poll_seconds)
    return record_training(ticket=ticket, training=training)
