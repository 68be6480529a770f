"""Training runs: load the training frame, evaluate every learner walk-forward, fit it on all data,
register it, gate it, stack the ensemble on out-of-fold predictions, and account for the cost.

``retrain`` creates a ``TrainingRun`` and runs it in-process (``sync=True``) or queues
``training.tasks.retrain_task`` (sent by ``training.dispatch``). A run goes through these stages, each recorded in
``TrainingRun.stages`` with its wall and CPU seconds and counts (``training.runs``):

``load_frame``          the feature store's training frame (``training_frame``) for the window;
``prepare``             training-data hash, walk-forward folds, drift reference profile;
``plan:<learner>``      in ``auto`` runs, evaluate, refit or keep (``training.daily_plan``);
``evaluate:<learner>``  walk-forward out of sample: a fresh learner per fold, fitted on the dates
                        before the fold minus a purge gap of at least the horizon, scored on the fold;
``fit:<learner>``       the final model on every labelled row up to the end of the window;
``register:<learner>``  a new registry version (semver, artifact, out-of-sample table, lineage);
``gate:<learner>``      the promotion gate (``registry.services.promote``);
``*:ensemble``          the ensemble, fitted on its members' out-of-fold predictions only;
``finish``              CPU seconds -> cost (a ``CostRecord``), status.

Prophet is fitted per chunk of tickers (``training.prophet_chunks``): in-process one chunk after the
other with ``sync=True``; otherwise the chunks run in parallel as a Celery chord (``training.tasks``,
whose bodies are ``run_prophet_chunk``, ``merge_prophet_chunks`` and ``fail_prophet_part``) while
the worker that holds the run trains the other learners, and whichever part finishes last stacks
the ensemble (``training.stacking``) and closes the run. The knobs: ``training.config``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from features.common import jsonable
from investml import ledger
from registry import artifacts
from training import dispatch
from training.config import (
    ENSEMBLE,
    RetrainError,
    cpu_hour_usd,
    heartbeat_timeout_seconds,
    horizon_days,
    reevaluate_every_trading_days,
    resolve_models,
    walk_forward_settings,
)
from training.daily_plan import plan_learner, refit_learner
from training.fitting import prepare, train_learner
from training.learners.prophet_learner import ProphetLearner
from training.models import TrainingRun
from training.processes import worker_id
from training.prophet_chunks import (
    ProphetChunk,
    combine_prophet,
    context_from_options,
    dispatch_prophet,
    fit_prophet_chunk,
    previous_prophet,
    scratch_path,
    train_prophet_inprocess,
)
from training.runs import (
    add_cpu,
    append_log,
    cpu_seconds_now,
    part_done,
    record_failure,
    stage,
    trainer_alive,
    training_failure_message,
    training_heartbeat,
)
from training.stacking import train_ensemble

logger = logging.getLogger(__name__)

# A run has one of these before its parts finished only when the orchestrator stopped it (cancelled,
# over max_training_hours): its late parts must not register or promote anything.
STOPPED = (TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED)
EVALUATION_MODES = ("full", "auto")


def retrain(
    *,
    models: Sequence[str] | None = None,
    tickers: Sequence[str] | None = None,
    trigger: str = "manual",
    requested_by: str = "",
    sync: bool = False,
    evaluation: str = "full",
) -> TrainingRun:
    """Create a training run for ``models`` (all enabled learners when None) on ``tickers`` (the
    whole universe when None) and run it now (``sync``) or queue it on Celery.

    ``evaluation``: ``full`` evaluates every learner walk-forward; ``auto`` (the daily pipeline) does
    so only when a learner's last evaluation is older than ``training.reevaluate_every_trading_days``
    or its procedure changed, and otherwise refits it or keeps it (see
    ``training.daily_plan.plan_learner``)."""
    if evaluation not in EVALUATION_MODES:
        raise RetrainError(f"evaluation must be one of {', '.join(EVALUATION_MODES)}, not {evaluation!r}")
    names = resolve_models(models)
    symbols = sorted({t.strip().upper() for t in (tickers or []) if t and t.strip()})
    horizon = horizon_days()
    wf = walk_forward_settings(horizon=horizon)
    run = TrainingRun.objects.create(
        status=TrainingRun.Status.QUEUED,
        trigger=trigger[:30],
        requested_by=requested_by[:150],
        model_names=names,
        tickers=symbols,
        options=jsonable({
            "horizon": horizon,
            "train_years": settings.PIPELINE_CONFIG.training.train_years,
            "walk_forward": asdict(wf),
            "lstm_max_train_rows": settings.ML_LSTM_MAX_TRAIN_ROWS,
            "prophet_chunk_tickers": settings.ML_PROPHET_CHUNK_TICKERS,
            "cpu_hour_usd": cpu_hour_usd(),
            "sync": bool(sync),
            "evaluation": evaluation,
            "reevaluate_every_trading_days": reevaluate_every_trading_days(),
        }),
    )
    scope = ", ".join(symbols[:10]) + (f" ... ({len(symbols)} tickers)" if len(symbols) > 10 else "")
    append_log(run.pk, f"queued by {requested_by or trigger}: models {', '.join(names)}; tickers {scope or 'all'}")
    if sync:
        return execute_run(run_id=run.pk, distributed=False)
    try:
        task_id = dispatch.retrain_send(run_id=run.pk)
    except Exception as exc:  # broker down: the run must not stay queued forever
        record_failure(run.pk, "queueing", exc)
        TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.FAILED, finished_at=timezone.now())
        raise RetrainError(
            f"could not queue training run {run.pk} on Celery ({type(exc).__name__}: {exc}); check the broker "
            "(REDIS_URL) and the worker, or run in this process with --sync"
        ) from exc
    TrainingRun.objects.filter(pk=run.pk, celery_task_id="").update(celery_task_id=task_id)
    run.refresh_from_db()
    return run


def _run_main_part(run: TrainingRun, *, distributed: bool) -> None:
    """Train the run's learners in this process (Prophet's chunks go to Celery when ``distributed``),
    then close the run if no other part is pending."""
    run_id = run.pk
    max_seconds = settings.PIPELINE_CONFIG.training.max_training_hours * 3600
    cpu0, wall0, excluded = cpu_seconds_now(), time.perf_counter(), 0.0
    stopping = False
    try:
        ctx = prepare(run)
        names = list(run.model_names)
        plans = {name: plan_learner(ctx, name) for name in names if name != ENSEMBLE}
        if "prophet_forecaster" in plans and plans["prophet_forecaster"].action == "evaluate" and distributed:
            started = cpu_seconds_now()
            dispatch_prophet(ctx)
            excluded += cpu_seconds_now() - started  # eager mode runs the chunks right here
        for name in names:
            if name == ENSEMBLE:
                continue
            plan = plans[name]
            if plan.action == "keep" or (name == "prophet_forecaster" and distributed):
                continue
            if time.perf_counter() - wall0 > max_seconds:
                record_failure(run_id, f"learner {name}", TimeoutError(
                    f"the run exceeded training.max_training_hours ({max_seconds / 3600:g} h); "
                    f"{name} and the learners after it were not trained"
                ))
                break
            try:
                if name == "prophet_forecaster":
                    train_prophet_inprocess(ctx)
                elif plan.action == "refit":
                    refit_learner(ctx, name, source=plan.source)
                else:
                    train_learner(ctx, name)
            except Exception as exc:  # noqa: BLE001 - one learner failing must not stop the others
                record_failure(run_id, f"learner {name}", exc)
    except Exception as exc:  # noqa: BLE001 - recorded on the run
        record_failure(run_id, "preparation", exc)
    except (SystemExit, KeyboardInterrupt):
        # The process is being stopped (a worker's shutdown: Celery's pool raises SystemExit on
        # SIGTERM). The interrupted learner is not broken, so the run is not closed as failed: it
        # stays running with its main part pending, and the redelivered task (or the reaper, once
        # this process is gone) restarts it.
        stopping = True
        raise
    finally:
        add_cpu(run_id, cpu_seconds_now() - cpu0 - excluded)
        if not stopping and part_done(run_id, "main"):
            _finalize(run_id)


def _delivered_twice(run: TrainingRun) -> bool:
    """Whether a delivery of the task of ``run``, which is running, is a copy to drop (a broker
    delivers at least once): another process trains it and is alive (``runs.trainer_alive``: its
    heartbeat, on another machine), or its main part is done and only Prophet's chunks, which close
    the run, are pending. Otherwise its process was lost and the run restarts."""
    owner = str((run.options or {}).get("worker", ""))
    now = timezone.now()
    if owner != worker_id() and trainer_alive(run, now=now):
        beat = f"{(now - run.heartbeat_at).total_seconds():.0f}s ago" if run.heartbeat_at else "never"
        logger.warning("training run %s is running in %s (last heartbeat %s): this delivery of its task is a "
                       "duplicate; it stops", run.pk, owner, beat)
        return True
    if run.parts_pending and "main" not in run.parts_pending:
        logger.warning("training run %s: its main part is done and %s still run; this delivery of its task is a "
                       "duplicate; it stops", run.pk, ", ".join(run.parts_pending))
        return True
    return False


def _trainer_lost(run: TrainingRun, *, now: datetime) -> bool:
    """Whether ``run``'s main part is being trained by a process that is lost (``runs.trainer_alive``);
    a run without a heartbeat (begun before there was one) never is."""
    return (run.status == TrainingRun.Status.RUNNING and "main" in (run.parts_pending or [])
            and run.heartbeat_at is not None and not trainer_alive(run, now=now))


def _close_failed(run: TrainingRun, *, text: str, now: datetime) -> None:
    """Close ``run`` (already locked by the caller) as failed, ``text`` added to its error."""
    run.status, run.finished_at = TrainingRun.Status.FAILED, now
    run.error = (run.error + "\n" + text).strip()
    run.save(update_fields=["status", "finished_at", "error"])


def training_run_resend_if_lost(*, run: TrainingRun) -> bool:
    """Send the task of a running run again when the process training its main part is lost: gone
    from this machine, or silent on another past ``ML_PIPELINE_HEARTBEAT_TIMEOUT_SECONDS`` (a lost
    machine's message stays unacknowledged until the broker's visibility timeout, 26 h on Redis).
    The delivery restarts the run (``execute_run``, up to ``ML_TRAINING_MAX_ATTEMPTS``). At most once
    per heartbeat timeout; a run without a heartbeat (begun before there was one) is left to
    ``training.max_training_hours``. True when sent. ``run`` is as the caller last read it; the
    decision is checked again under the row's lock."""
    now = timezone.now()

    def lost(run: TrainingRun) -> bool:
        resent = (run.options or {}).get("resent_at")
        return _trainer_lost(run, now=now) and not (
            resent and (now - datetime.fromisoformat(resent)).total_seconds() < heartbeat_timeout_seconds())

    if not lost(run):  # the common case, without another read or a lock
        return False
    with transaction.atomic():  # two polls at once send it once
        locked = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if not lost(locked):
            return False
        options = locked.options or {}
        locked.options = {**options, "resent_at": now.isoformat()}
        locked.save(update_fields=["options"])
    append_log(run.pk, f"its process {options.get('worker', '?')} is lost (last heartbeat "
                       f"{(now - locked.heartbeat_at).total_seconds():.0f}s ago): its task is sent again")
    dispatch.retrain_send(run_id=run.pk)
    return True


def training_run_recover_if_lost(*, run: TrainingRun) -> str:
    """For a running run whose trainer may be lost and that no pipeline polls (``manage.py retrain``,
    a run queued by hand): a queued run has its task sent again (``training_run_resend_if_lost``),
    a run trained in its caller's process (``--sync``) whose process is gone is failed, as nothing
    would deliver it again. ``"resent"``, ``"failed"`` or ``""`` (alive, or nothing to do)."""
    if not (run.options or {}).get("sync"):
        return "resent" if training_run_resend_if_lost(run=run) else ""
    now = timezone.now()
    if not _trainer_lost(run, now=now):
        return ""
    with transaction.atomic():
        locked = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if not _trainer_lost(locked, now=now):
            return ""
        worker = (locked.options or {}).get("worker", "?")
        text = (f"ERROR: Training run {locked.pk} failed: the process {worker} training it in place (--sync) is "
                f"lost (last heartbeat {(now - locked.heartbeat_at).total_seconds():.0f}s ago; killed, out of "
                "memory?). Try: run it again (python manage.py retrain --sync), or on Celery without --sync.")
        _close_failed(locked, text=text, now=now)
    append_log(run.pk, text)
    logger.error("%s", text)
    return "failed"


def execute_run(*, run_id: int, distributed: bool = False) -> TrainingRun:
    """Run a queued training run (in-process; with ``distributed`` Prophet fans out on Celery)."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        if run.status in (TrainingRun.Status.SUCCEEDED, TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED):
            return run
        restarted = run.status == TrainingRun.Status.RUNNING
        if restarted and _delivered_twice(run):
            return run
        attempt = int((run.options or {}).get("attempt", 0)) + 1
        limit = settings.ML_TRAINING_MAX_ATTEMPTS
        if restarted and attempt > limit:
            # the worker holding it was lost each time (acks_late redelivers the task): most often the
            # out-of-memory killer, which would kill every further attempt the same way
            text = training_failure_message(run_id=run_id, where=f"attempt {attempt} (the worker was lost {attempt - 1} "
                                                        f"times, limit ML_TRAINING_MAX_ATTEMPTS={limit})",
                                   exc=MemoryError())
            _close_failed(run, text=text, now=timezone.now())
            append_log(run_id, text.splitlines()[0])
            return run
        run.options = {**(run.options or {}), "attempt": attempt, "worker": worker_id()}
        run.status = TrainingRun.Status.RUNNING
        run.started_at = run.heartbeat_at = timezone.now()
        run.parts_pending = ["main"]
        if restarted:
            run.stages, run.error, run.cpu_seconds = [], "", 0
        run.save()
    if restarted:
        append_log(run_id, f"restarting (the previous attempt was interrupted): attempt {attempt} of {limit}")
    with training_heartbeat(run_id):
        _run_main_part(run, distributed=distributed)
    return TrainingRun.objects.get(pk=run_id)


def _finalize(run_id: int) -> None:
    """Stack the ensemble (if asked), then cost, CostRecord and the final status."""
    cpu0 = cpu_seconds_now()
    run = TrainingRun.objects.get(pk=run_id)
    if run.status in STOPPED:  # stopped by the orchestrator: no ensemble, and its status stays
        append_log(run_id, f"run {run.status} before its parts finished; nothing more registered")
        return
    if ENSEMBLE in run.model_names and run.options.get("folds"):
        try:
            train_ensemble(run)
        except Exception as exc:  # noqa: BLE001 - recorded on the run
            record_failure(run_id, "learner ensemble", exc)
    add_cpu(run_id, cpu_seconds_now() - cpu0)
    with stage(run_id, "finish") as rec:
        run.refresh_from_db()
        rate = float(run.options.get("cpu_hour_usd", cpu_hour_usd()))
        cost = Decimal(str(round(run.cpu_seconds / 3600.0 * rate, 6)))
        failed = bool(run.error.strip()) or any(s.get("status") == "failed" for s in run.stages or [])
        ledger.record_cost(day=timezone.localdate(), category="compute", source="training",
                           detail=f"training run {run_id}: {', '.join(run.model_names)}",
                           units=round(run.cpu_seconds, 3), unit="cpu_second", cost_usd=cost)
        run.cost_usd = cost
        run.status = TrainingRun.Status.FAILED if failed else TrainingRun.Status.SUCCEEDED
        run.finished_at = timezone.now()
        run.save(update_fields=["cost_usd", "status", "finished_at"])
        registered = [f"{v.model.name}@{v.version} ({v.status})" for v in run.model_versions.select_related("model")]
        rec.counts.update(cpu_seconds=round(run.cpu_seconds, 1), cost_usd=float(cost), status=run.status,
                          versions=registered)
    append_log(run_id, f"run {run.status}: {run.cpu_seconds:.1f} CPU s, ${cost} at ${rate}/CPU-hour; "
                       f"versions: {', '.join(registered) or 'none'}")


def run_prophet_chunk(*, run_id: int, chunk: int, tickers: list[str]) -> dict[str, Any]:
    """Celery chunk task body: fit one chunk, leave its learner and table in scratch files. A chunk
    of a run stopped meanwhile is not fitted."""
    run = TrainingRun.objects.get(pk=run_id)
    if run.status in STOPPED:
        logger.info("training run %s is %s: prophet chunk %s not fitted", run_id, run.status, chunk)
        return {"chunk": chunk, "tickers": len(tickers), "skipped": run.status}
    with stage(run_id, f"chunk:prophet_forecaster[{chunk}]", tickers=len(tickers)) as rec:
        ctx = context_from_options(run, tickers=tickers)
        previous = previous_prophet()
        result = fit_prophet_chunk(frame=ctx.frame, splits=ctx.splits, horizon=ctx.horizon, warm_start=previous,
                                   evaluate=ctx.evaluation_tickers)
        rec.counts.update(oof_rows=int(len(result.table)), warm_started=previous is not None)
    root = settings.ML_MODELS_PATH
    model = artifacts.write_atomic(root=root, relpath=scratch_path(run_id, chunk, ".bin"), data=result.learner.to_bytes())
    table = artifacts.write_atomic(root=root, relpath=scratch_path(run_id, chunk, ".oof.npz"),
                                   data=artifacts.oof_to_bytes(result.table))
    return {
        "chunk": chunk, "tickers": len(tickers), "model_sha256": model.sha256, "model_bytes": model.size,
        "table_sha256": table.sha256, "table_bytes": table.size,
        "fold_stats": {str(k): v for k, v in result.fold_stats.items()}, "cpu_seconds": result.cpu_seconds,
    }


def merge_prophet_chunks(*, run_id: int, results: Sequence[dict[str, Any]]) -> None:
    """Chord callback body: merge the chunks, register and gate Prophet, close the run if last."""
    cpu0 = cpu_seconds_now()
    root = settings.ML_MODELS_PATH
    try:
        run = TrainingRun.objects.get(pk=run_id)
        add_cpu(run_id, sum(float(r.get("cpu_seconds", 0.0)) for r in results))
        if run.status in STOPPED:  # never register (or promote) a model of a stopped run
            append_log(run_id, f"prophet_forecaster not registered: the run was {run.status} meanwhile")
            return
        chunks = []
        for r in sorted(results, key=lambda r: r["chunk"]):
            label = f"prophet chunk {r['chunk']} of training run {run_id}"
            model = artifacts.read_verified(root=root, relpath=scratch_path(run_id, r["chunk"], ".bin"),
                                            sha256=r["model_sha256"], size=r["model_bytes"], label=label)
            table = artifacts.read_verified(root=root, relpath=scratch_path(run_id, r["chunk"], ".oof.npz"),
                                            sha256=r["table_sha256"], size=r["table_bytes"], label=label)
            chunks.append(ProphetChunk(
                learner=ProphetLearner.from_bytes(model), table=artifacts.oof_from_bytes(table),
                fold_stats={int(k): v for k, v in r["fold_stats"].items()}, cpu_seconds=float(r["cpu_seconds"]),
            ))
        ctx = context_from_options(run, tickers=None)
        wall = time.time() - float(run.options.get("prophet_started", time.time()))
        combine_prophet(ctx, chunks, wall=wall)
    except Exception as exc:  # noqa: BLE001 - recorded on the run
        record_failure(run_id, "learner prophet_forecaster (merge)", exc)
    finally:
        for r in results:
            for suffix in (".bin", ".oof.npz"):
                artifacts.remove(root=root, relpath=scratch_path(run_id, r["chunk"], suffix))
        artifacts.remove_empty_folder(root=root, relpath=f"_runs/{int(run_id)}")
        add_cpu(run_id, cpu_seconds_now() - cpu0)
        if part_done(run_id, "prophet"):
            _finalize(run_id)


def fail_prophet_part(*, run_id: int, error: str) -> None:
    """Chord error callback body: record the failure; close the run if the main part is done."""
    record_failure(run_id, "learner prophet_forecaster (chunks)", RuntimeError(error))
    if part_done(run_id, "prophet"):
        _finalize(run_id)
