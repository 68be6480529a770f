"""Requests for a pipeline run: every trigger recorded, at most one active run per scope (the others
join it), automatic triggers suppressed while auto-retraining is off; queued on Celery or run here."""

from __future__ import annotations

import logging
import os
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from training.config import RetrainError, resolve_models
from training.models import PipelineRun, RetrainTrigger
from training.orchestrator.config import orchestrator_settings
from training.orchestrator.errors import PipelineError
from training.orchestrator.limits import dispatch_queued_runs
from training.orchestrator.reaper import reap_stale_runs
from training.orchestrator.scope import normalize_tickers, scope_for
from training.orchestrator.stage_work import Progress
from training.orchestrator.sync_executor import execute_sync
from training.processes import worker_host

logger = logging.getLogger(__name__)

AUTOMATIC_TRIGGERS = (PipelineRun.Trigger.DRIFT, PipelineRun.Trigger.PERFORMANCE)


def request_retrain(
    *, trigger: str, reason: str, requested_by: str = "", tickers: list[str] | None = None
) -> PipelineRun:
    """Request a retrain (a pipeline run: fresh data, features, train, evaluate, promote, predict,
    drift) for ``tickers`` (the universe when None). The single service behind monitoring's drift
    and performance triggers and the API's ``POST /retrain``.

    Every call is recorded as a ``RetrainTrigger`` with its reason. If a run of the same scope is
    queued or running, that run is returned (``run.deduplicated`` is True). Automatic triggers
    (``drift``, ``performance``) are suppressed while ``ENABLE_AUTO_RETRAINING`` /
    ``orchestrator.enable_auto_retraining`` is off: a skipped run with the reason is returned.
    Manual triggers (``api``, ``admin``, ``command``) always run. Queues on Celery.
    """
    return _request(trigger=trigger, reason=reason, requested_by=requested_by, tickers=tickers, sync=False)


def request_pipeline_run(
    *,
    trigger: str,
    requested_by: str = "",
    tickers: list[str] | None = None,
    sync: bool = False,
    reason: str = "",
    options: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> PipelineRun:
    """Request a pipeline run (deduplicated per scope, recorded as a trigger, as ``request_retrain``).

    ``sync``: run every stage in this process now (after waiting for a free slot) and return the
    finished run; else queue it on Celery. ``options``: ``models`` (learners to train, default every
    enabled one), ``noop_seconds`` (a smoke run: every stage only waits that long; for checking
    workers, limits and schedules), ``evaluation`` (``auto``, the default except for drift and
    performance triggers: walk-forward evaluation weekly, refits in between; ``full``: every learner
    evaluated; see ``training.daily_plan.plan_learner``). ``progress`` receives one line per stage.
    """
    return _request(trigger=trigger, reason=reason, requested_by=requested_by, tickers=tickers, sync=sync,
                    options=options, progress=progress)


def _check_options(options: dict[str, Any] | None) -> dict[str, Any]:
    options = dict(options or {})
    unknown = sorted(set(options) - {"models", "noop_seconds", "evaluation"})
    if unknown:
        raise PipelineError(f"unknown pipeline option(s): {', '.join(unknown)} "
                            "(known: models, noop_seconds, evaluation)")
    if options.get("evaluation") not in (None, "auto", "full"):
        raise PipelineError(f"evaluation must be 'auto' or 'full', not {options['evaluation']!r}")
    if options.get("models") is not None:
        try:
            options["models"] = resolve_models(list(options["models"]))
        except RetrainError as exc:
            raise PipelineError(str(exc)) from exc
    if options.get("noop_seconds") is not None:
        options["noop_seconds"] = max(0.0, float(options["noop_seconds"]))
    return {k: v for k, v in options.items() if v is not None}


def _request(*, trigger: str, reason: str, requested_by: str, tickers: list[str] | None, sync: bool,
             options: dict[str, Any] | None = None, progress: Progress | None = None) -> PipelineRun:
    if trigger not in PipelineRun.Trigger.values:
        raise PipelineError(f"unknown trigger {trigger!r} (known: {', '.join(PipelineRun.Trigger.values)})")
    symbols = normalize_tickers(tickers)
    scope = scope_for(symbols)
    options = _check_options(options)
    cfg = orchestrator_settings()
    reason, requested_by = (reason or "").strip(), (requested_by or "")[:150]
    if sync:
        reap_stale_runs()  # a run left "running" by a killed process must not block this one

    if trigger in AUTOMATIC_TRIGGERS and not cfg.enable_auto_retraining:
        why = ("automatic retraining is off (ENABLE_AUTO_RETRAINING=false or orchestrator.enable_auto_retraining)"
               f"; {trigger} trigger not acted on")
        with transaction.atomic():
            run = PipelineRun.objects.create(
                trigger=trigger, reason=reason, requested_by=requested_by, scope=scope, tickers=symbols,
                status=PipelineRun.Status.SKIPPED, status_reason=why, options=options,
                mode="sync" if sync else "celery", finished_at=timezone.now(),
            )
            RetrainTrigger.objects.create(trigger=trigger, reason=reason, requested_by=requested_by, scope=scope,
                                          tickers=symbols, outcome=RetrainTrigger.Outcome.SUPPRESSED,
                                          pipeline_run=run)
        logger.info("Retraining trigger suppressed (%s): %s", trigger, why)
        run.deduplicated = False
        return run

    created = False
    with transaction.atomic():
        run = PipelineRun.objects.select_for_update().filter(scope=scope, status__in=PipelineRun.ACTIVE).first()
        if run is None:
            try:
                with transaction.atomic():
                    run = PipelineRun.objects.create(
                        trigger=trigger, reason=reason, requested_by=requested_by, scope=scope, tickers=symbols,
                        options=options, mode="sync" if sync else "celery",
                        worker_host=worker_host() if sync else "", worker_pid=os.getpid() if sync else None,
                    )
                created = True
            except IntegrityError:  # another machine created it between our read and our insert
                run = PipelineRun.objects.select_for_update().get(scope=scope, status__in=PipelineRun.ACTIVE)
        adopt = sync and not created and run.status == PipelineRun.Status.QUEUED
        if adopt:  # run_pipeline --sync takes over a run that is only waiting for a slot
            run.mode, run.worker_host, run.worker_pid = "sync", worker_host(), os.getpid()
            run.save(update_fields=["mode", "worker_host", "worker_pid"])
        RetrainTrigger.objects.create(
            trigger=trigger, reason=reason, requested_by=requested_by, scope=scope, tickers=symbols,
            outcome=RetrainTrigger.Outcome.QUEUED if created else RetrainTrigger.Outcome.DEDUPLICATED,
            deduplicated=not created, pipeline_run=run,
        )
    what = ", ".join(symbols) if symbols else "the universe"
    if created:
        logger.info("pipeline run %s queued: %s trigger by %s for %s%s", run.pk, trigger, requested_by or "-", what,
                    f" ({reason})" if reason else "")
    else:
        logger.info("%s trigger by %s deduplicated into pipeline run %s (%s) for %s", trigger,
                    requested_by or "-", run.pk, run.status, what)
    if sync and (created or adopt):
        run = execute_sync(run_id=run.pk, progress=progress)
    elif created and not sync:
        dispatch_queued_runs()
        run.refresh_from_db()
    run.deduplicated = not created and not adopt  # the caller did not start or run it
    return run

