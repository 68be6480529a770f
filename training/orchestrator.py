"""The orchestrator: daily pipeline runs, retrain triggers, the cross-machine concurrency limit,
retries, the heartbeat reaper and the cost limit (the spec's "1. ML Orchestrator").

A pipeline run goes through these stages, each attempt recorded as a ``PipelineStage`` row:

``update_market_data``  new daily bars from the provider (``features.services.market_updates``);
``build_features``      the feature store build (on Celery: one task per chunk of tickers, a chord);
``train``               a ``TrainingRun`` (``training.services.retrain``; Prophet fans out per ticker
                        chunk on Celery), awaited without holding a worker slot;
``evaluate``            walk-forward evaluation of every learner (recorded from the training run);
``promote``             registration and the promotion gate (recorded from the training run);
``batch_predict``       ``inference.services.batch_predict``: daily predictions and recommendations;
``check_drift``         ``monitoring.services.check_drift`` on the active models (both registered by
                        their apps, ``register_stage_hook``: training does not import them).

Entry points (writes): ``request_retrain`` (monitoring's drift/performance triggers and the API's
``POST /retrain``), ``request_pipeline_run`` (schedule, command, admin), ``dispatch_queued_runs``,
``reap_stale_runs``, ``cancel_run``. The Celery side is ``training.pipeline_tasks``; with
``sync=True`` every stage runs in this process (``manage.py run_pipeline --sync``).

Guarantees:

* **one active run per scope** (``"universe"`` or a hash of the ticker list): a partial unique
  constraint, so two triggers on two machines cannot both create one; the second is recorded as
  deduplicated and gets the active run;
* **at most ``orchestrator.max_concurrent_pipelines`` runs hold a slot** (running or retrying),
  decided under a row lock (``OrchestratorLock``; SQLite serializes write transactions); the others
  wait queued, FIFO, and the run that finishes starts the next (plus the periodic dispatcher);
* **cost limit**: a run about to start while today's tracked cost is above
  ``ML_DAILY_COST_LIMIT_USD``, or the month-to-date above ``ML_MONTHLY_COST_LIMIT_USD``, is skipped
  with the reason (``Daily cost limit exceeded: ...`` / ``Monthly cost limit exceeded: ...``) and a
  ``cost_limit_exceeded`` alert (keyed by the day, or by the month);
* **retries**: transient errors (database or broker unavailable, provider 5xx/timeouts, out of
  memory) are retried with exponential backoff and jitter up to ``orchestrator.max_retries`` times
  per stage, every attempt recorded; permanent errors fail the run at once with what to do;
* **crash safety**: a run holding a slot has a heartbeat (a thread while a stage runs in-process,
  each poll while training runs); ``reap_stale_runs`` (beat, and at worker start) fails the attempt
  of a run whose process is gone or whose heartbeat is stale and queues it again (up to
  ``max_retries``). Every (re)dispatch bumps the run's ``generation``; tasks of an older generation
  (a redelivered message) stop, and stages that already succeeded are skipped.

Knobs from the environment (defaults in brackets): ``ML_PIPELINE_HEARTBEAT_SECONDS`` [30],
``ML_PIPELINE_HEARTBEAT_TIMEOUT_SECONDS`` [600], ``ML_PIPELINE_POLL_SECONDS`` [10],
``ML_PIPELINE_FEATURE_CHUNK_TICKERS`` [500].
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import redis.exceptions
import requests
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from features.common import chunked, env_number, jsonable
from investml import ledger
from training.models import OrchestratorLock, PipelineRun, PipelineStage, RetrainTrigger, TrainingRun

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

STAGES = ("update_market_data", "build_features", "train", "evaluate", "promote", "batch_predict", "check_drift")
# The stages that do work of their own; evaluate and promote happen inside the training run.
EXECUTED_STAGES = ("update_market_data", "build_features", "train", "batch_predict", "check_drift")
POSITION = {name: i for i, name in enumerate(STAGES)}
AUTOMATIC_TRIGGERS = (PipelineRun.Trigger.DRIFT, PipelineRun.Trigger.PERFORMANCE)
SLOT_LOCK = "pipeline-slots"
UNIVERSE = "universe"


# --------------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class OrchestratorSettings:
    max_concurrent_pipelines: int
    enable_scheduling: bool
    enable_auto_retraining: bool
    cost_limit_daily_usd: float
    max_retries: int
    retry_backoff_seconds: float
    max_training_hours: float
    heartbeat_seconds: float
    heartbeat_timeout_seconds: float
    poll_seconds: float
    feature_chunk_tickers: int


def _env_number(name: str, default: float) -> float:
    return env_number(name, default, cast=float, error=PipelineError)


def orchestrator_settings() -> OrchestratorSettings:
    """The orchestrator's knobs, read at each call: config/pipeline.json's ``orchestrator`` and
    ``training`` sections, ``ENABLE_AUTO_RETRAINING`` and ``ML_DAILY_COST_LIMIT_USD`` (environment
    wins, as in settings), and the ``ML_PIPELINE_*`` variables."""
    orch = settings.PIPELINE_CONFIG["orchestrator"]
    training = settings.PIPELINE_CONFIG["training"]
    return OrchestratorSettings(
        max_concurrent_pipelines=max(1, int(orch.get("max_concurrent_pipelines", 3))),
        enable_scheduling=bool(orch.get("enable_scheduling", True)),
        enable_auto_retraining=bool(getattr(settings, "ENABLE_AUTO_RETRAINING",
                                            orch.get("enable_auto_retraining", True))),
        cost_limit_daily_usd=float(getattr(settings, "ML_DAILY_COST_LIMIT_USD",
                                           orch.get("cost_limit_daily_usd", 10.0))),
        max_retries=max(0, int(orch.get("max_retries", 3))),
        retry_backoff_seconds=max(0.0, float(orch.get("retry_backoff_seconds", 30.0))),
        max_training_hours=float(training.get("max_training_hours", 24.0)),
        heartbeat_seconds=max(0.05, _env_number("ML_PIPELINE_HEARTBEAT_SECONDS", 30)),
        heartbeat_timeout_seconds=max(1.0, _env_number("ML_PIPELINE_HEARTBEAT_TIMEOUT_SECONDS", 600)),
        poll_seconds=max(0.05, _env_number("ML_PIPELINE_POLL_SECONDS", 10)),
        feature_chunk_tickers=max(1, int(_env_number("ML_PIPELINE_FEATURE_CHUNK_TICKERS", 500))),
    )


def backoff_seconds(*, attempt: int, base: float, cap: float = 3600.0) -> float:
    """Exponential backoff with jitter before retry number ``attempt`` (1, 2, ...): half of
    ``base * 2**(attempt-1)`` fixed, the other half random, at most ``cap``."""
    step = min(cap, base * (2 ** max(0, attempt - 1)))
    return step / 2 + random.uniform(0, step / 2)  # noqa: S311 - jitter, not cryptography


# --------------------------------------------------------------------------------------------------
# errors


class PipelineError(Exception):
    """Bad orchestrator input (unknown trigger, bad option)."""


class StageError(Exception):
    """A stage failed. ``hints`` say what to do; ``transient`` errors are retried."""

    transient = False

    def __init__(self, message: str, *, hints: Sequence[str] = ()):
        super().__init__(message)
        self.hints = list(hints)


class PermanentStageError(StageError):
    transient = False


class TransientStageError(StageError):
    transient = True


class TrainingTimeout(BaseException):  # noqa: N818 - a BaseException, so training's handlers let it through
    """``training.max_training_hours`` passed while training ran in this process."""


_PERMANENT_DB_TEXT = ("no such table", "no such column", "does not exist", "syntax error", "permission denied")


def is_transient(exc: BaseException) -> bool:
    """Whether another attempt of the stage can succeed: the database or broker unavailable, a
    provider's 5xx or timeout, out of memory. Looks through the exception's causes too."""
    from django.db import InterfaceError
    from django.db import OperationalError as DjangoOperationalError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StageError):
            return current.transient
        if isinstance(current, MemoryError):
            return True
        if isinstance(current, DjangoOperationalError | InterfaceError):
            return not any(text in str(current).lower() for text in _PERMANENT_DB_TEXT)
        if _is_connection_error(current):
            return True
        if getattr(current, "retryable", False) is True:  # features.providers.ProviderError (5xx, timeouts)
            return True
        current = current.__cause__ or current.__context__
    return False


_CONNECTION_ERRORS = (ConnectionError, KombuOperationalError, redis.exceptions.ConnectionError,
                      redis.exceptions.TimeoutError, requests.ConnectionError, requests.Timeout)


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, _CONNECTION_ERRORS)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, StageError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "Out of memory"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def failure_message(*, run_id: int, stage: str, message: str, hints: Sequence[str] = ()) -> str:
    """The spec's troubleshooting tone: what failed, then what to try."""
    lines = [f"ERROR: Pipeline {run_id} failed at {stage}: {message}"]
    if hints:
        lines.append("Solutions:")
        lines += [f"{i}. {hint}" for i, hint in enumerate(hints, 1)]
    return "\n".join(lines)


def _default_hints(stage: str, exc: BaseException) -> list[str]:
    if isinstance(exc, StageError) and exc.hints:
        return exc.hints
    if isinstance(exc, MemoryError):
        return ["Check available memory: free -h",
                "Reduce batch_size (or hidden_size / sequence_length) in config/pipeline.json",
                "Enable data sampling for large datasets (ML_LSTM_MAX_TRAIN_ROWS) or run on fewer tickers (--tickers)",
                "Monitor resource usage: docker stats"]
    if is_transient(exc):
        return ["Check that the database, Redis and the data provider are reachable",
                "Run it again: python manage.py run_pipeline"]
    return ["See the run's stages: python manage.py retrain --status (pipeline runs are listed first)",
            "Check the worker log (docker-compose logs -f worker)"]


# --------------------------------------------------------------------------------------------------
# scope and small helpers


def normalize_tickers(tickers: Sequence[str] | str | None) -> list[str]:
    if tickers is None:
        return []
    if isinstance(tickers, str):
        tickers = tickers.split(",")
    return sorted({t.strip().upper() for t in tickers if t and t.strip()})


def scope_for(tickers: Sequence[str]) -> str:
    """``"universe"`` for the whole universe, else ``"tickers:<sha256[:16]>"`` of the sorted list."""
    if not tickers:
        return UNIVERSE
    digest = hashlib.sha256(",".join(sorted(tickers)).encode("utf-8")).hexdigest()[:16]
    return f"tickers:{digest}"


def _host() -> str:
    return socket.gethostname()[:200]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _append_error(run_id: int, text: str) -> None:
    PipelineRun.objects.filter(pk=run_id).update(error=Concat(F("error"), Value(text.rstrip() + "\n")))


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)
    else:
        logger.info(message)


@contextmanager
def _lock(name: str) -> Iterator[None]:
    """Serialize a decision across processes and machines (call inside ``transaction.atomic``)."""
    lock, _ = OrchestratorLock.objects.get_or_create(name=name)
    OrchestratorLock.objects.select_for_update().filter(pk=lock.pk).update(updated_at=timezone.now())
    yield


# --------------------------------------------------------------------------------------------------
# requests and triggers


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
    evaluated; see ``training.services.plan_learner``). ``progress`` receives one line per stage.
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
        from training.services import RetrainError, resolve_models

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
                        worker_host=_host() if sync else "", worker_pid=os.getpid() if sync else None,
                    )
                created = True
            except IntegrityError:  # another machine created it between our read and our insert
                run = PipelineRun.objects.select_for_update().get(scope=scope, status__in=PipelineRun.ACTIVE)
        adopt = sync and not created and run.status == PipelineRun.Status.QUEUED
        if adopt:  # run_pipeline --sync takes over a run that is only waiting for a slot
            run.mode, run.worker_host, run.worker_pid = "sync", _host(), os.getpid()
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


# --------------------------------------------------------------------------------------------------
# slots: the concurrency limit and the cost limit


@dataclass
class Claim:
    run: PipelineRun | None
    skipped: list[int] = field(default_factory=list)
    waiting_on: list[int] = field(default_factory=list)


def _claim(*, run_id: int | None, mode: str) -> Claim:
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
    from training import pipeline_tasks

    started: list[int] = []
    while True:
        claim = _claim(run_id=None, mode="celery")
        run = claim.run
        if run is None:
            if not claim.skipped:
                break
            continue
        try:
            task_id = pipeline_tasks.start_chain(run_id=run.pk, generation=run.generation)
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


# --------------------------------------------------------------------------------------------------
# stages: begin, heartbeat, finish, fail


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


def begin_stage(*, run_id: int, generation: int, stage: str) -> Ticket:
    """Start an attempt of ``stage`` if the run is still ours (same generation, holding a slot).
    A stage that already succeeded is skipped (a redelivered task); an attempt left "running" by a
    lost worker is closed as failed first and counts as an attempt."""
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
        for lost in (a for a in attempts if a.status == PipelineStage.Status.RUNNING):
            lost.status, lost.finished_at = PipelineStage.Status.FAILED, now
            lost.error = f"interrupted: the worker ({lost.worker or '?'}) was lost; the task was delivered again"
            lost.save(update_fields=["status", "finished_at", "error"])
            lost_message = lost.error
        attempt = (attempts[-1].attempt + 1) if attempts else 1
        if attempt > cfg.max_retries + 1:
            message = failure_message(
                run_id=run.pk, stage=stage,
                message=f"the worker running it was lost {len(attempts)} times (killed, or out of memory?)",
                hints=_default_hints(stage, MemoryError()),
            )
            _finish_run(run, status=PipelineRun.Status.FAILED, error=message, now=now)
            return Ticket("stop", run=run, reason=message)
        row = PipelineStage.objects.create(run=run, name=stage, position=POSITION[stage], attempt=attempt,
                                           status=PipelineStage.Status.RUNNING, started_at=now,
                                           worker=f"{_host()}:{os.getpid()}")
        run.status = PipelineRun.Status.RUNNING
        run.current_stage = stage
        run.worker_host, run.worker_pid, run.heartbeat_at, run.next_attempt_at = _host(), os.getpid(), now, None
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
    """Keep the run's heartbeat fresh from a thread while a stage runs in this process. Skipped
    inside an open transaction (tests), where another connection could not write anyway."""
    if connection.in_atomic_block:
        yield
        return
    interval = orchestrator_settings().heartbeat_seconds
    stop = threading.Event()

    def beat() -> None:
        from django.db import connection as thread_connection

        try:
            while not stop.wait(interval):
                try:
                    touch(run_id=run_id, generation=generation)
                except Exception:  # noqa: BLE001 - a missed beat is not fatal; the next one retries
                    logger.warning("heartbeat of pipeline run %s failed", run_id, exc_info=True)
        finally:
            thread_connection.close()

    thread = threading.Thread(target=beat, name=f"pipeline-{run_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def finish_stage(*, ticket: Ticket, counts: dict[str, Any], status: str = PipelineStage.Status.SUCCEEDED,
                 error: str = "") -> None:
    row = ticket.stage
    assert row is not None
    now = timezone.now()
    row.status, row.finished_at, row.counts, row.error = status, now, jsonable(counts), error
    row.seconds = round((now - row.started_at).total_seconds(), 3) if row.started_at else 0.0
    row.save(update_fields=["status", "finished_at", "seconds", "counts", "error"])
    PipelineRun.objects.filter(pk=row.run_id).update(worker_pid=None, heartbeat_at=now)


def fail_stage(*, ticket: Ticket, exc: BaseException) -> Outcome:
    """Record a failed attempt; "retry" with a countdown for a transient error with attempts left,
    else fail the run ("stop") with the spec-toned message."""
    cfg = orchestrator_settings()
    row, run = ticket.stage, ticket.run
    assert row is not None and run is not None
    text = _describe(exc)
    transient = is_transient(exc)
    attempts_left = transient and row.attempt <= cfg.max_retries
    if attempts_left:
        countdown = backoff_seconds(attempt=row.attempt, base=cfg.retry_backoff_seconds)
        finish_stage(ticket=ticket, counts=row.counts or {}, status=PipelineStage.Status.FAILED,
                     error=f"{text} (transient; retry {row.attempt} of {cfg.max_retries} in {countdown:.1f}s)")
        updated = PipelineRun.objects.filter(pk=run.pk, generation=run.generation,
                                             status__in=PipelineRun.HOLDING_SLOT).update(
            status=PipelineRun.Status.RETRYING, attempts=F("attempts") + 1, worker_pid=None,
            heartbeat_at=timezone.now(), next_attempt_at=timezone.now() + timedelta(seconds=countdown),
        )
        _append_error(run.pk, f"attempt {row.attempt} of {row.name} failed: {text}; retrying in {countdown:.1f}s")
        logger.warning("pipeline run %s: %s failed (%s); retry %s of %s in %.1fs", run.pk, row.name, text,
                       row.attempt, cfg.max_retries, countdown)
        return Outcome("retry" if updated else "stop", countdown=countdown)
    finish_stage(ticket=ticket, counts=row.counts or {}, status=PipelineStage.Status.FAILED, error=text)
    message = text if not transient else f"{text} (after {row.attempt} attempts)"
    full = failure_message(run_id=run.pk, stage=row.name, message=message, hints=_default_hints(row.name, exc))
    fail_run(run_id=run.pk, generation=run.generation, message=full)
    return Outcome("stop")


def fail_run(*, run_id: int, generation: int | None, message: str) -> None:
    with transaction.atomic():
        run = PipelineRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status in PipelineRun.FINISHED:
            return
        if generation is not None and run.generation != generation:
            return
        _finish_run(run, status=PipelineRun.Status.FAILED, error=message, now=timezone.now())
    logger.error("%s", message)
    _after_finish()


def _finish_run(run: PipelineRun, *, status: str, error: str = "", now: datetime) -> None:
    run.status, run.finished_at = status, now
    run.worker_pid, run.next_attempt_at = None, None
    if error:
        run.error = (run.error or "") + error.rstrip() + "\n"
        run.status_reason = error.splitlines()[0][:2000]
    run.save(update_fields=["status", "finished_at", "worker_pid", "next_attempt_at", "error", "status_reason"])


def _after_finish() -> None:
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
        failed = [s for s in _latest_attempts(run)
                  if s.status in (PipelineStage.Status.FAILED, PipelineStage.Status.DEGRADED)]
        if failed:
            first = failed[0]
            _finish_run(run, status=PipelineRun.Status.FAILED, now=now,
                        error=failure_message(run_id=run.pk, stage=first.name, message=first.error.splitlines()[0]
                                              if first.error else "failed"))
        else:
            _finish_run(run, status=PipelineRun.Status.SUCCEEDED, now=now)
        run.current_stage = ""
        run.save(update_fields=["current_stage"])
    logger.info("pipeline run %s %s in %.1fs", run.pk, run.status, run.duration_seconds or 0)
    _after_finish()
    return True


def cancel_run(*, run_id: int, actor: str) -> PipelineRun:
    """Cancel a queued or running run. A running one stops at its next stage boundary; its
    training run (if any) is revoked on Celery."""
    with transaction.atomic():
        run = PipelineRun.objects.select_for_update().get(pk=run_id)
        if run.status not in PipelineRun.ACTIVE:
            return run
        _finish_run(run, status=PipelineRun.Status.CANCELLED, now=timezone.now(),
                    error=f"cancelled by {actor or 'someone'}")
    if run.training_run_id:
        _stop_training(training_run_id=run.training_run_id, why=f"pipeline run {run.pk} was cancelled by {actor}")
    _after_finish()
    return run


def _stop_training(*, training_run_id: int, why: str) -> None:
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
            from investml.celery import app

            app.control.revoke(training.celery_task_id, terminate=True, signal="SIGKILL")
        except Exception:  # noqa: BLE001 - the training run is already marked; the task may finish late
            logger.warning("could not revoke training task %s", training.celery_task_id, exc_info=True)


# --------------------------------------------------------------------------------------------------
# the stages' work


def _record_noop_training(ticket: Ticket) -> None:
    """A smoke run's train stage: the evaluate and promote stages it would have recorded."""
    row = ticket.stage
    assert row is not None
    now = timezone.now()
    for name in ("evaluate", "promote"):
        attempt = 1 + PipelineStage.objects.filter(run_id=row.run_id, name=name).count()
        PipelineStage.objects.create(run_id=row.run_id, name=name, position=POSITION[name], attempt=attempt,
                                     status=PipelineStage.Status.SUCCEEDED, started_at=now, finished_at=now,
                                     counts={"noop": True})
    finish_stage(ticket=ticket, counts={"noop": True})


def _noop(run: PipelineRun, stage: str) -> dict[str, Any] | None:
    seconds = run.options.get("noop_seconds")
    if seconds is None:
        return None
    time.sleep(float(seconds))
    return {"noop": True, "seconds": float(seconds)}


def stage_update_market_data(*, run: PipelineRun, progress: Progress | None = None) -> dict[str, Any]:
    noop = _noop(run, "update_market_data")
    if noop is not None:
        return noop
    from features.services.market_updates import update_market_data

    try:
        summary = update_market_data(tickers=list(run.tickers) or None, progress=progress)
    except ValueError as exc:  # e.g. "ALPHAVANTAGE_API_KEY is not set", unknown provider
        if is_transient(exc):
            raise
        raise PermanentStageError(
            str(exc), hints=["Set the provider's API key (<PROVIDER>_API_KEY) or ML_MARKET_DATA_PROVIDER",
                             "With no provider the bundled files under ML_DATA_PATH/prices are read"],
        ) from exc
    counts = {k: v for k, v in summary.as_dict().items()
              if k in ("provider", "as_of", "tickers_requested", "tickers_fresh", "tickers_checked", "tickers_updated",
                       "rows_added", "rows_updated", "rows_rejected", "calls", "cost_usd", "warning",
                       "ingestion_run")}
    counts["failed"] = len(summary.failed)
    reasons = set(summary.failed_reasons.values())
    if summary.tickers_checked and not summary.tickers_updated and summary.failed and \
            reasons <= {"server_error", "timeout", "rate_limited"} and len(summary.failed) >= summary.tickers_checked:
        raise TransientStageError(
            f"the {summary.provider} provider failed for all {len(summary.failed)} tickers "
            f"({', '.join(sorted(reasons))})",
            hints=["Check the provider's status page and your plan's limits", "The next attempt retries it"],
        )
    # social posts with the day's bars, before the features (only when ML_SOCIAL_PROVIDER is set)
    from features.services.social import update_social_if_configured

    try:
        social = update_social_if_configured(tickers=list(run.tickers) or None, progress=progress)
    except ValueError as exc:  # an unknown ML_SOCIAL_PROVIDER
        raise PermanentStageError(str(exc), hints=["Set ML_SOCIAL_PROVIDER=stocktwits, or leave it empty"]) from exc
    if social is not None:
        counts["social"] = social
    cost = summary.cost_usd + (social["cost_usd"] if social is not None else 0.0)
    if cost:
        PipelineRun.objects.filter(pk=run.pk).update(cost_usd=F("cost_usd") + Decimal(str(round(cost, 6))))
    return counts


def feature_chunks(*, run: PipelineRun) -> list[list[str]]:
    """The tickers to build in chunks of ``ML_PIPELINE_FEATURE_CHUNK_TICKERS`` (tickers with bars)."""
    from django.db.models import Exists, OuterRef

    from features.models import PriceBar, Ticker

    has_bars = Exists(PriceBar.objects.filter(ticker=OuterRef("pk")))
    qs = Ticker.objects.filter(has_bars)
    if run.tickers:
        qs = qs.filter(symbol__in=run.tickers)
    symbols = list(qs.order_by("symbol").values_list("symbol", flat=True))
    size = orchestrator_settings().feature_chunk_tickers
    return chunked(symbols, size)


def _feature_error(exc: Exception) -> StageError:
    message = str(exc)
    if "no bars" in message:
        return PermanentStageError(
            "no price bars. Run `python manage.py load_sample` or `python manage.py update_market_data` first.",
            hints=["Run `python manage.py load_sample` (the bundled sample) or `python manage.py update_market_data`",
                   "Check the --tickers you asked for have bars"],
        )
    return PermanentStageError(message, hints=["Check the feature build: python manage.py build_features",
                                               "See Features > Feature materializations in the admin"])


def stage_build_features(*, run: PipelineRun, progress: Progress | None = None,
                         tickers: list[str] | None = None) -> dict[str, Any]:
    """One build in this process (chunked inside); ``tickers``: one chunk of a fanned-out build."""
    noop = _noop(run, "build_features")
    if noop is not None:
        return noop
    from features.services.feature_store import DEFAULT_CHUNK_SIZE, FeatureStoreError, build_features

    chosen = tickers if tickers is not None else (list(run.tickers) or None)
    try:
        summary = build_features(tickers=chosen, progress=progress,
                                 chunk_size=max(len(chosen), 1) if tickers is not None else DEFAULT_CHUNK_SIZE)
    except FeatureStoreError as exc:
        raise _feature_error(exc) from exc
    return {"feature_set": summary.feature_set, "version": summary.version, "mode": summary.mode,
            "tickers": summary.tickers, "rows": summary.rows, "files_written": summary.files_written,
            "seconds": round(summary.seconds, 3), "online_vectors": summary.online_vectors,
            "materialization": summary.materialization_id}


def merge_feature_chunks(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts of a fanned-out build from its chunk results; raises the first chunk's error."""
    errors = [r for r in results if r.get("error")]
    if errors:
        first = errors[0]
        cls = TransientStageError if first.get("transient") else PermanentStageError
        raise cls(f"chunk {first.get('chunk')}: {first['error']}", hints=first.get("hints") or ())
    counts: dict[str, Any] = {"chunks": len(results), "tickers": 0, "rows": 0, "files_written": 0}
    for r in results:
        for key in ("tickers", "rows", "files_written"):
            counts[key] += int(r.get(key) or 0)
        counts.setdefault("version", r.get("version"))
    return counts


def build_feature_chunk(*, run_id: int, generation: int, chunk: int, tickers: list[str]) -> dict[str, Any]:
    """Body of a chunk task: never raises, so the chord's callback always runs and decides."""
    run = PipelineRun.objects.filter(pk=run_id, generation=generation, status__in=PipelineRun.HOLDING_SLOT).first()
    if run is None:
        return {"chunk": chunk, "skipped": True}
    for attempt in range(1, orchestrator_settings().max_retries + 2):
        try:
            with heartbeat(run_id=run_id, generation=generation):
                return {"chunk": chunk, **stage_build_features(run=run, tickers=tickers)}
        except Exception as exc:  # noqa: BLE001 - reported to the chord callback
            if is_transient(exc) and attempt <= orchestrator_settings().max_retries:
                time.sleep(backoff_seconds(attempt=attempt, base=orchestrator_settings().retry_backoff_seconds))
                continue
            return {"chunk": chunk, "error": _describe(exc), "transient": is_transient(exc),
                    "hints": list(getattr(exc, "hints", []) or [])}
    raise AssertionError("unreachable")  # pragma: no cover


def _retrain_kwargs(run: PipelineRun) -> dict[str, Any]:
    # A drift or degradation trigger questions the models' skill: those runs always re-evaluate.
    auto = run.trigger not in (PipelineRun.Trigger.DRIFT, PipelineRun.Trigger.PERFORMANCE)
    return {"models": run.options.get("models"), "tickers": list(run.tickers) or None,
            "trigger": run.trigger, "requested_by": f"pipeline run {run.pk}",
            "evaluation": run.options.get("evaluation") or ("auto" if auto else "full")}


def start_training(*, run: PipelineRun, sync: bool) -> TrainingRun:
    """Create the run's training run (``sync``: train it here now; else queued on Celery), or reuse
    the one a lost attempt left running."""
    from training.services import RetrainError, retrain

    if run.training_run_id:
        existing = TrainingRun.objects.get(pk=run.training_run_id)
        if existing.status in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING, TrainingRun.Status.SUCCEEDED):
            return existing
    try:
        if sync:
            with _deadline(hours=orchestrator_settings().max_training_hours):
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
def _deadline(*, hours: float) -> Iterator[None]:
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


def _timeout_error(hours: float) -> PermanentStageError:
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
    """Close the train stage from a finished training run and add its evaluate and promote stages."""
    run = ticket.run
    assert run is not None
    info = training_stage_counts(training)
    now = timezone.now()
    for name in ("evaluate", "promote"):
        part = info[name]
        started = _parse_time(part.pop("started_at")) or now
        failed = part.pop("failed")
        attempt = 1 + PipelineStage.objects.filter(run=run, name=name).count()
        PipelineStage.objects.create(
            run=run, name=name, position=POSITION[name], attempt=attempt, started_at=started,
            finished_at=started + timedelta(seconds=part["seconds"]), seconds=part["seconds"],
            status=PipelineStage.Status.FAILED if failed else PipelineStage.Status.SUCCEEDED,
            counts=jsonable(part), error="\n".join(failed)[:5000], worker=f"training run {training.pk}",
        )
    PipelineRun.objects.filter(pk=run.pk).update(cost_usd=F("cost_usd") + (training.cost_usd or Decimal("0")))
    if training.status == TrainingRun.Status.SUCCEEDED:
        finish_stage(ticket=ticket, counts=info["train"])
        return Outcome("continue", counts=info["train"])
    error_lines = [line for line in (training.error or "").splitlines() if line.strip()]
    first = error_lines[0] if error_lines else f"training run {training.pk} failed"
    first = first.removeprefix("ERROR: ")
    if any(word in (training.error or "") for word in ("Out of memory", "OperationalError", "InterfaceError")):
        return fail_stage(ticket=ticket, exc=TransientStageError(
            f"training run {training.pk} failed: {first}",
            hints=[line.split(". ", 1)[-1] for line in error_lines if line[:2].rstrip(".").isdigit()]))
    from registry.selectors import versions

    if versions(statuses=["active"]).exists():  # the active models still serve: predict with them
        finish_stage(ticket=ticket, counts=info["train"], status=PipelineStage.Status.DEGRADED,
                     error=f"training run {training.pk} failed: {first} (the active models still predict)")
        return Outcome("continue", counts=info["train"])
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
        _record_noop_training(ticket)
        return Outcome("continue")
    training = run.training_run
    if training is None:
        return fail_stage(ticket=ticket, exc=PermanentStageError("the train stage has no training run"))
    if training.status in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING):
        started = latest.started_at or timezone.now()
        if cfg.max_training_hours > 0 and timezone.now() - started > timedelta(hours=cfg.max_training_hours):
            _stop_training(training_run_id=training.pk,
                           why=f"Pipeline {run.pk}: training exceeded training.max_training_hours "
                               f"({cfg.max_training_hours:g} h)")
            return fail_stage(ticket=ticket, exc=_timeout_error(cfg.max_training_hours))
        if not touch(run_id=run_id, generation=generation, release_process=True):
            return Outcome("stop")
        return Outcome("wait", countdown=cfg.poll_seconds)
    return record_training(ticket=ticket, training=training)


# The last two stages belong to the apps above training: inference registers ``batch_predict`` (the
# day's predictions: ``inference.services.batch_predict``'s result) and monitoring ``check_drift`` (a
# summary of the drift reports) in their ``AppConfig.ready()``, so the orchestrator imports neither.
STAGE_HOOKS: dict[str, Callable[[], dict[str, Any]]] = {}
_HOOK_OWNERS = {"batch_predict": "inference", "check_drift": "monitoring"}


def register_stage_hook(*, stage: str, work: Callable[[], dict[str, Any]]) -> None:
    """Install the work of ``stage`` (``batch_predict`` or ``check_drift``), replacing any before."""
    if stage not in _HOOK_OWNERS:
        raise ValueError(f"{stage!r} is not a stage another app provides (those are {', '.join(_HOOK_OWNERS)})")
    STAGE_HOOKS[stage] = work


def _stage_hook(stage: str) -> Callable[[], dict[str, Any]]:
    try:
        return STAGE_HOOKS[stage]
    except KeyError:
        app = _HOOK_OWNERS[stage]
        raise PermanentStageError(f"no {stage} stage is registered: the {app} app provides it",
                                  hints=[f"Add '{app}' to INSTALLED_APPS"]) from None


def stage_batch_predict(*, run: PipelineRun, progress: Progress | None = None) -> dict[str, Any]:
    noop = _noop(run, "batch_predict")
    if noop is not None:
        return noop
    # Always the whole universe: ranks and recommendations are cross-sectional, and a day's rows of
    # a model version are replaced as a whole (a ticker-scoped run retrains, it does not narrow them).
    result = _stage_hook("batch_predict")()
    models = result.get("models") or {}
    if not models:
        errors = "; ".join(f"{k}: {v}" for k, v in (result.get("errors") or {}).items())
        raise PermanentStageError(
            "no active model to predict with" + (f" ({errors})" if errors else " (none passed the promotion gate)"),
            hints=["See why the gate kept each version staging: python manage.py retrain --status",
                   "Promote a version by hand: python manage.py promote MODEL --force",
                   "Or lower MODEL_PERFORMANCE_THRESHOLD (the gate's threshold)"],
        )
    return {"date": result.get("date"), "tickers": result.get("tickers"),
            "rows": {name: m.get("rows") for name, m in models.items()},
            "preferred_model": result.get("preferred_model"), "errors": result.get("errors") or {},
            "seconds": round(float(result.get("seconds") or 0), 3)}


def stage_check_drift(*, run: PipelineRun, progress: Progress | None = None) -> dict[str, Any]:
    noop = _noop(run, "check_drift")
    if noop is not None:
        return noop
    return _stage_hook("check_drift")()


STAGE_WORK: dict[str, Callable[..., dict[str, Any]]] = {
    "update_market_data": stage_update_market_data,
    "build_features": stage_build_features,
    "batch_predict": stage_batch_predict,
    "check_drift": stage_check_drift,
}


# --------------------------------------------------------------------------------------------------
# Celery stage bodies (training.pipeline_tasks calls these)


def run_stage(*, run_id: int, generation: int, stage: str) -> Outcome:
    """One stage of a Celery run: skip it if done, run it here, or ask to fan out / retry / stop."""
    ticket = begin_stage(run_id=run_id, generation=generation, stage=stage)
    if ticket.action != "run":
        return Outcome("continue" if ticket.action == "skip" else "stop")
    run = ticket.run
    assert run is not None
    try:
        with heartbeat(run_id=run_id, generation=generation):
            if stage == "build_features" and run.options.get("noop_seconds") is None:
                chunks = feature_chunks(run=run)
                if len(chunks) > 1:
                    touch(run_id=run_id, generation=generation, release_process=True)
                    return Outcome("fan_out", chunks=chunks)
            if stage == "train":
                if run.options.get("noop_seconds") is not None:
                    _noop(run, stage)
                    return Outcome("continue")
                training = start_training(run=run, sync=False)
                touch(run_id=run_id, generation=generation, release_process=True)
                return Outcome("continue", counts={"training_run": training.pk})
            counts = STAGE_WORK[stage](run=run)
    except Exception as exc:  # noqa: BLE001 - recorded; retried or the run fails
        return fail_stage(ticket=ticket, exc=exc)
    finish_stage(ticket=ticket, counts=counts)
    return Outcome("continue", counts=counts)


def finish_feature_fan_out(*, run_id: int, generation: int, results: Sequence[dict[str, Any]]) -> Outcome:
    """Chord callback body: close the build_features stage from its chunks."""
    run = PipelineRun.objects.filter(pk=run_id).first()
    if run is None or run.generation != generation or run.status not in PipelineRun.HOLDING_SLOT:
        return Outcome("stop")
    row = PipelineStage.objects.filter(run=run, name="build_features").order_by("-attempt").first()
    if row is None or row.status != PipelineStage.Status.RUNNING:
        return Outcome("continue" if row is not None and row.status == PipelineStage.Status.SUCCEEDED else "stop")
    ticket = Ticket("run", run=run, stage=row)
    try:
        counts = merge_feature_chunks(results)
    except StageError as exc:
        return fail_stage(ticket=ticket, exc=exc)
    finish_stage(ticket=ticket, counts=counts)
    return Outcome("continue", counts=counts)


# --------------------------------------------------------------------------------------------------
# in-process runs (run_pipeline --sync)


def execute_sync(*, run_id: int, progress: Progress | None = None) -> PipelineRun:
    """Run every stage of a queued run in this process: wait for a slot, then the stages in order,
    retrying transient errors after their backoff. Returns the finished run."""
    cfg = orchestrator_settings()
    announced = False
    while True:
        claim = _claim(run_id=run_id, mode="sync")
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
                            _noop(current, stage)
                            _record_noop_training(ticket)
                            outcome = Outcome("continue")
                        else:
                            training = start_training(run=current, sync=True)
                            outcome = record_training(ticket=ticket, training=training)
                    else:
                        counts = STAGE_WORK[stage](run=current, progress=progress)
                        finish_stage(ticket=ticket, counts=counts)
                        outcome = Outcome("continue", counts=counts)
            except TrainingTimeout:
                _mark_training_failed(run_id=run.pk, why=f"Pipeline {run.pk}: training exceeded "
                                                         f"training.max_training_hours ({cfg.max_training_hours:g} h)")
                outcome = fail_stage(ticket=ticket, exc=_timeout_error(cfg.max_training_hours))
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


def _mark_training_failed(*, run_id: int, why: str) -> None:
    for training in TrainingRun.objects.filter(requested_by=f"pipeline run {run_id}",
                                               status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING]):
        _stop_training(training_run_id=training.pk, why=why)
    latest = TrainingRun.objects.filter(requested_by=f"pipeline run {run_id}").order_by("-id").first()
    if latest is not None:
        PipelineRun.objects.filter(pk=run_id).update(training_run=latest)


def _short(value: Any) -> str | None:
    """A count for one line: scalars as they are, short lists and dicts inline, long ones left out."""
    if isinstance(value, list | tuple):
        return ",".join(map(str, value)) if 0 < len(value) <= 8 else None
    if isinstance(value, dict):
        if not 0 < len(value) <= 6 or any(isinstance(v, dict | list) for v in value.values()):
            return None
        return ",".join(f"{k}:{round(v, 4) if isinstance(v, float) else v}" for k, v in value.items())
    return None if value in ("", None) else str(value)


def _counts_text(counts: dict[str, Any]) -> str:
    parts = ((k, _short(v)) for k, v in counts.items())
    return ", ".join(f"{k}={v}" for k, v in parts if v is not None)


def _stage_line(*, run_id: int, stage: str) -> str:
    row = PipelineStage.objects.filter(run_id=run_id, name=stage).order_by("-attempt").first()
    if row is None:
        return f"{stage}: -"
    counts = _counts_text(row.counts or {})
    line = f"{stage} {row.status} in {row.seconds:.1f}s" + (f" (attempt {row.attempt})" if row.attempt > 1 else "")
    line += f": {counts}" if counts else ""
    return line + (f" -- {row.error.splitlines()[0]}" if row.error else "")


# --------------------------------------------------------------------------------------------------
# the reaper


def reap_stale_runs(*, now: datetime | None = None) -> list[int]:
    """Fail the current attempt of every run whose worker is gone (its process on this machine no
    longer exists, or no heartbeat for ``ML_PIPELINE_HEARTBEAT_TIMEOUT_SECONDS``) and queue it again
    (up to ``orchestrator.max_retries`` attempts of a stage; in-process ``--sync`` runs fail, their
    caller reruns them). Returns the reaped run ids; then starts queued runs."""
    cfg = orchestrator_settings()
    now = now or timezone.now()
    host = _host()
    reaped: list[int] = []
    holding = PipelineRun.objects.filter(status__in=PipelineRun.HOLDING_SLOT)
    waiting_sync = PipelineRun.objects.filter(status=PipelineRun.Status.QUEUED, mode="sync")
    for run in list(holding) + list(waiting_sync):
        why = _dead_reason(run, now=now, host=host, timeout=cfg.heartbeat_timeout_seconds)
        if why and _reap(run, why=why, now=now):
            reaped.append(run.pk)
    if reaped:
        _after_finish()
    return reaped


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
            message = failure_message(run_id=fresh.pk, stage=stage, message=why,
                                      hints=["Run it again: python manage.py run_pipeline --sync"])
            _finish_run(fresh, status=PipelineRun.Status.FAILED, error=message, now=now)
            logger.error("%s", message)
        elif tries > cfg.max_retries:
            message = failure_message(
                run_id=fresh.pk, stage=stage, message=f"{why}; gave up after {tries} attempts",
                hints=_default_hints(stage, MemoryError()),
            )
            _finish_run(fresh, status=PipelineRun.Status.FAILED, error=message, now=now)
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
            _stop_training(training_run_id=fresh.training_run_id, why=interrupted)
        else:
            _mark_training_failed(run_id=fresh.pk, why=interrupted)
    return True


# --------------------------------------------------------------------------------------------------
# schedules (django-celery-beat)

SEED_MARK = "seeded: "


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    task: str
    description: str
    automatic: bool  # switched off by orchestrator.enable_scheduling = false
    crontab: dict[str, str] | None = None
    every_seconds: int | None = None
    # a message not started within this many seconds is dropped: a stopped worker must not find a
    # backlog of every-minute runs when it comes back
    expire_seconds: int | None = None


def _crontab(schedule: dict[str, Any], *, where: str) -> dict[str, str]:
    hour, minute = (int(part) for part in str(schedule.get("time_of_day", "02:00")).split(":"))
    frequency = schedule.get("frequency", "daily")
    fields = {"minute": str(minute), "hour": str(hour), "day_of_week": "*", "day_of_month": "*",
              "month_of_year": "*"}
    if frequency == "hourly":
        fields["hour"] = "*"
    elif frequency == "weekly":
        day = int(schedule.get("day_of_week", 0))
        if not 0 <= day <= 6:
            raise PipelineError(f"{where}.day_of_week must be 0 (Sunday) .. 6 (Saturday), got {day}")
        fields["day_of_week"] = str(day)
    return fields


def schedule_specs() -> list[ScheduleSpec]:
    """The periodic tasks the orchestrator seeds, from config/pipeline.json's ``training`` section."""
    training = settings.PIPELINE_CONFIG["training"]
    daily = _crontab(training["default_schedule"], where="training.default_schedule")
    drift = _crontab(training["drift_schedule"], where="training.drift_schedule")
    return [
        ScheduleSpec("investml: daily pipeline", "training.pipeline.run_daily",
                     "The daily pipeline on the whole universe (training.default_schedule, UTC).", True, crontab=daily),
        ScheduleSpec("investml: drift check", "monitoring.check_drift",
                     "Drift of the active models' recent features (training.drift_schedule, UTC); a newly "
                     "opened drift alert requests a retrain.", True, crontab=drift),
        ScheduleSpec("investml: performance tracking", "monitoring.track_performance",
                     "Realized accuracy of the stored predictions (training.drift_schedule, UTC); a newly "
                     "opened low-accuracy alert requests a retrain.", True, crontab=drift),
        ScheduleSpec("investml: evaluate alerts", "monitoring.evaluate_alerts",
                     "Every alert rule, every minute.", False, every_seconds=60, expire_seconds=55),
        ScheduleSpec("investml: storage cost", "monitoring.record_storage_cost",
                     "The day's storage cost, once a day.", False,
                     crontab={"minute": "55", "hour": "23", "day_of_week": "*", "day_of_month": "*",
                              "month_of_year": "*"}),
        ScheduleSpec("investml: reap stale pipeline runs", "training.pipeline.reap_stale",
                     "Pipeline runs whose worker is gone: fail the attempt, queue them again.", False,
                     every_seconds=60, expire_seconds=55),
        ScheduleSpec("investml: dispatch queued pipeline runs", "training.pipeline.dispatch_queued",
                     "Start queued pipeline runs while slots are free.", False, every_seconds=60, expire_seconds=55),
        ScheduleSpec("investml: data retention", "inference.apply_retention",
                     "Delete prediction-log rows older than ML_PREDICTION_LOG_RETENTION_DAYS and compliance records "
                     "older than ML_COMPLIANCE_RETENTION_DAYS (whole chain prefixes, checkpointed), daily.", False,
                     crontab={"minute": "40", "hour": "3", "day_of_week": "*", "day_of_month": "*",
                              "month_of_year": "*"}),
        # after the US close and the day's price update, before the next 02:00 pipeline, which uses them
        ScheduleSpec("investml: news", "features.update_news",
                     "The active tickers' new headlines from ML_NEWS_PROVIDER, daily; a no-op without one.", True,
                     crontab={"minute": "30", "hour": "22", "day_of_week": "*", "day_of_month": "*",
                              "month_of_year": "*"}),
        ScheduleSpec("investml: fundamentals refresh", "features.refresh_fundamentals",
                     "Each active ticker's fundamentals from ML_FUNDAMENTALS_PROVIDER once every "
                     "ML_FUNDAMENTALS_REFRESH_DAYS (7): the day's share of the universe, within the provider's "
                     "remaining daily quota; a no-op without a provider.", True,
                     crontab={"minute": "15", "hour": "23", "day_of_week": "*", "day_of_month": "*",
                              "month_of_year": "*"}),
        ScheduleSpec("investml: intraday quotes", "inference.poll_quotes",
                     "The provider's intraday snapshot into the API's today-so-far bars, every minute; a no-op unless "
                     "ML_INTRADAY_POLL_ENABLED and within ML_INTRADAY_POLL_HOURS of a trading day.", False,
                     every_seconds=60, expire_seconds=55),
    ]


def _schedule_signature(task: Any) -> str:
    if task.crontab_id:
        c = task.crontab
        when = f"crontab {c.minute} {c.hour} {c.day_of_month} {c.month_of_year} {c.day_of_week} {c.timezone}"
    elif task.interval_id:
        when = f"every {task.interval.every} {task.interval.period}"
    else:
        when = "other"
    return f"{task.task} {when} enabled={task.enabled}"


def _seeded_signature(description: str) -> str:
    lines = [line for line in (description or "").splitlines() if line.startswith(SEED_MARK)]
    return lines[-1][len(SEED_MARK):] if lines else ""


def seed_schedules(*, force: bool = False) -> list[dict[str, Any]]:
    """Create or update the orchestrator's periodic tasks (django-celery-beat), by name: re-seeding
    never duplicates. A task edited in the admin since it was seeded is kept as edited (``force``
    resets it), except that ``orchestrator.enable_scheduling = false`` always disables the automatic
    ones (daily pipeline, drift check, performance tracking). Returns one row per task."""
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    from investml.celery import app

    cfg = orchestrator_settings()
    app.loader.import_default_modules()  # Celery's autodiscovery of every app's tasks module (lazy outside workers)
    registered = set(app.tasks.keys())
    results: list[dict[str, Any]] = []
    for spec in schedule_specs():
        if spec.task not in registered:
            results.append({"name": spec.name, "task": spec.task, "action": "missing",
                            "detail": f"no Celery task named {spec.task}; not scheduled"})
            continue
        enabled = cfg.enable_scheduling or not spec.automatic
        with transaction.atomic():
            task = PeriodicTask.objects.select_for_update().filter(name=spec.name).first()
            before = _schedule_signature(task) if task is not None else ""
            edited = task is not None and _seeded_signature(task.description) != before
            if edited and not force:
                action, detail = "kept", "edited in the admin since it was seeded (--force resets it)"
                if spec.automatic and not cfg.enable_scheduling and task.enabled:
                    task.enabled = False
                    task.save(update_fields=["enabled"])
                    action, detail = "disabled", "orchestrator.enable_scheduling is false (schedule kept as edited)"
                results.append({"name": spec.name, "task": spec.task, "action": action, "detail": detail,
                                "schedule": _schedule_signature(task)})
                continue
            if spec.crontab is not None:
                crontab, _ = CrontabSchedule.objects.get_or_create(**spec.crontab, timezone="UTC")
                interval = None
            else:
                interval, _ = IntervalSchedule.objects.get_or_create(every=int(spec.every_seconds or 60),
                                                                     period=IntervalSchedule.SECONDS)
                crontab = None
            if task is None:
                task = PeriodicTask(name=spec.name)
            task.task, task.crontab, task.interval, task.solar, task.clocked = spec.task, crontab, interval, None, None
            task.enabled, task.one_off = enabled, False
            task.expire_seconds = spec.expire_seconds
            task.description = f"{spec.description}\n{SEED_MARK}{_schedule_signature(task)}"
            task.save()
            after = _schedule_signature(task)
        action = "created" if not before else ("updated" if after != before or edited else "unchanged")
        results.append({"name": spec.name, "task": spec.task, "action": action, "schedule": after,
                        "detail": "" if enabled else "disabled: orchestrator.enable_scheduling is false"})
    return results


# --------------------------------------------------------------------------------------------------
# reads (run_pipeline, retrain --status, admin)


def _latest_attempts(run: PipelineRun) -> list[PipelineStage]:
    latest: dict[str, PipelineStage] = {}
    for row in run.stages.all().order_by("position", "attempt"):
        latest[row.name] = row
    return sorted(latest.values(), key=lambda r: r.position)


def last_succeeded_run(*, tickers: Sequence[str] | None = None) -> PipelineRun | None:
    """The newest succeeded run of the scope of ``tickers`` (the universe when empty)."""
    return (PipelineRun.objects.filter(scope=scope_for(normalize_tickers(tickers)), status=PipelineRun.Status.SUCCEEDED)
            .order_by("-finished_at", "-id").first())


def recent_pipeline_runs(*, limit: int = 10) -> list[PipelineRun]:
    return list(PipelineRun.objects.prefetch_related("stages").select_related("training_run")
                .order_by("-created_at", "-id")[:limit])


def run_summary(run: PipelineRun) -> dict[str, Any]:
    """What ``run_pipeline --json`` and ``retrain --status --json`` show for a pipeline run."""
    stages = []
    for row in _latest_attempts(run):
        stages.append({"name": row.name, "status": row.status, "attempt": row.attempt,
                       "started_at": row.started_at, "finished_at": row.finished_at, "seconds": row.seconds,
                       "counts": row.counts, "error": row.error})
    return jsonable({
        "id": run.pk, "kind": "pipeline", "status": run.status, "trigger": run.trigger, "reason": run.reason,
        "requested_by": run.requested_by, "scope": run.scope, "tickers": run.tickers or "all", "mode": run.mode,
        "attempts": run.attempts, "deduplicated": bool(getattr(run, "deduplicated", False)),
        "created_at": run.created_at, "started_at": run.started_at, "finished_at": run.finished_at,
        "duration_seconds": run.duration_seconds, "cost_usd": float(run.cost_usd or 0),
        "training_run": run.training_run_id, "current_stage": run.current_stage,
        "status_reason": run.status_reason, "error": run.error, "stages": stages,
    })


def format_run(summary: dict[str, Any]) -> list[str]:
    """Human lines for a run summary: a header, one line per stage, the error."""
    duration = f"{summary['duration_seconds']:.1f}s" if summary.get("duration_seconds") is not None else "-"
    tickers = summary["tickers"] if isinstance(summary["tickers"], str) else ",".join(summary["tickers"][:8]) + (
        f",... ({len(summary['tickers'])} in all)" if len(summary["tickers"]) > 8 else "")
    lines = [f"pipeline run {summary['id']}: {summary['status']} ({summary['trigger']}, "
             f"{summary['requested_by'] or '-'}) created {summary['created_at']}, duration {duration}, "
             f"attempts {summary['attempts']}, ${summary['cost_usd']:.6f}; tickers {tickers}"
             + (f"; training run {summary['training_run']}" if summary.get("training_run") else "")]
    if summary.get("reason"):
        lines.append(f"  reason: {summary['reason']}")
    for st in summary["stages"]:
        counts = _counts_text(st.get("counts") or {})
        lines.append(f"  {st['name']:<20} {st['status']:<10} {float(st['seconds'] or 0):>9.1f}s"
                     + (f"  attempt {st['attempt']}" if st["attempt"] > 1 else "")
                     + (f"  {counts}" if counts else "")
                     + (f"  {st['error'].splitlines()[0]}" if st.get("error") else ""))
    if summary["status"] in ("skipped", "cancelled") and summary.get("status_reason"):
        lines.append(f"  {summary['status']}: {summary['status_reason']}")
    if summary.get("error") and summary["status"] == "failed":
        lines += ["  " + line for line in summary["error"].rstrip().splitlines()[-8:]]
    return lines


__all__ = [
    "STAGES", "OrchestratorSettings", "PipelineError", "StageError", "PermanentStageError", "TransientStageError",
    "request_retrain", "request_pipeline_run", "dispatch_queued_runs", "reap_stale_runs", "cancel_run",
    "orchestrator_settings", "recent_pipeline_runs", "run_summary", "format_run", "scope_for", "is_transient",
    "backoff_seconds", "seed_schedules", "schedule_specs", "last_succeeded_run", "register_stage_hook",
]
