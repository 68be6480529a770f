"""A training run's bookkeeping on its ``TrainingRun`` row: the stages with their wall and CPU
seconds and counts, the log, failures in the troubleshooting tone, the CPU seconds the cost is
computed from, the parts still pending, and the summary ``retrain --status`` shows.
"""

from __future__ import annotations

import logging
import resource
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from features.common import jsonable
from training import selectors
from training.config import heartbeat_seconds, heartbeat_timeout_seconds
from training.models import TrainingRun
from training.processes import beating, owner_alive, worker_id

logger = logging.getLogger(__name__)


def cpu_seconds_now() -> float:
    """CPU seconds of this process (all threads) plus its finished children (Stan fits)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def rounded(value: float | None, digits: int = 5) -> float | None:
    """A metric for a stage's counts; None (no finite value, e.g. too few tickers to rank) stays None."""
    return None if value is None else round(value, digits)


@dataclass
class StageRecord:
    name: str
    status: str = "running"
    started_at: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    counts: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def append_log(run_id: int, line: str) -> None:
    stamp = timezone.now().strftime("%Y-%m-%d %H:%M:%S")
    text = f"{stamp} {line}\n"
    logger.info("training run %s: %s", run_id, line)
    TrainingRun.objects.filter(pk=run_id).update(log=Concat(F("log"), Value(text)))


def _save_stage(run_id: int, record: StageRecord) -> None:
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        stages = list(run.stages or [])
        stages.append(jsonable(asdict(record)))
        run.stages = stages
        run.save(update_fields=["stages"])


@contextmanager
def stage(run_id: int, name: str, **counts: Any) -> Iterator[StageRecord]:
    """Time a stage (wall and CPU), record it on the run, and log its outcome."""
    record = StageRecord(name=name, started_at=timezone.now().isoformat(), counts=dict(counts))
    wall, cpu = time.perf_counter(), cpu_seconds_now()
    try:
        yield record
    except BaseException as exc:
        record.status = "failed"
        record.error = f"{type(exc).__name__}: {exc}"
        raise
    else:
        if record.status == "running":
            record.status = "succeeded"
    finally:
        record.seconds = round(time.perf_counter() - wall, 3)
        record.cpu_seconds = round(cpu_seconds_now() - cpu, 3)
        _save_stage(run_id, record)
        detail = ", ".join(f"{k}={v}" for k, v in record.counts.items() if not isinstance(v, dict | list))
        append_log(run_id, f"{name} {record.status} in {record.seconds:.1f}s" + (f" ({detail})" if detail else "")
                   + (f": {record.error}" if record.error else ""))


def add_cpu(run_id: int, seconds: float) -> None:
    TrainingRun.objects.filter(pk=run_id).update(cpu_seconds=F("cpu_seconds") + float(seconds))


def record_failure(run_id: int, where: str, exc: BaseException) -> str:
    text = training_failure_message(run_id=run_id, where=where, exc=exc)
    TrainingRun.objects.filter(pk=run_id).update(error=Concat(F("error"), Value(text + "\n")))
    append_log(run_id, text.splitlines()[0])
    logger.error("%s\n%s", text, "".join(traceback.format_exception(exc)))
    return text


def training_failure_message(*, run_id: int, where: str, exc: BaseException) -> str:
    """An error in the spec's troubleshooting tone: what failed, then what to try."""
    name = type(exc).__name__
    message = str(exc) or name
    if isinstance(exc, MemoryError):
        message = "Out of memory"
        hints = [
            "Check available memory: free -h",
            "Reduce batch_size (or hidden_size / sequence_length) in config/pipeline.json",
            "Enable data sampling for large datasets: lower ML_LSTM_MAX_TRAIN_ROWS, or train fewer tickers "
            "(--tickers)",
            "Monitor resource usage: docker stats",
        ]
    elif isinstance(exc, selectors.NoTrainingData):
        hints = [
            "Ingest prices: python manage.py ingest_prices PATH (or load_sample)",
            "Build features: python manage.py build_features",
            "Check the --tickers you asked for exist",
        ]
    elif isinstance(exc, TimeoutError):
        hints = [
            "Raise training.max_training_hours in config/pipeline.json",
            "Train fewer models (--models) or tickers (--tickers), or lower ML_LSTM_MAX_TRAIN_ROWS",
        ]
    elif "too few for" in message:
        hints = [
            "Load more history, or shorten the walk-forward evaluation (ML_WALK_FORWARD_FOLDS, "
            "ML_WALK_FORWARD_TEST_DAYS, ML_WALK_FORWARD_MIN_TRAIN_DAYS)",
        ]
    else:
        hints = [
            "See the run's stages and log: python manage.py retrain --status",
            "Check the worker log (docker-compose logs -f worker)",
        ]
    lines = [f"ERROR: Pipeline training_run_{run_id} failed at {where}: {name}: {message}", "Solutions:"]
    lines += [f"{i}. {hint}" for i, hint in enumerate(hints, 1)]
    return "\n".join(lines)


def trainer_alive(run: TrainingRun, *, now: datetime) -> bool:
    """Whether the process that trains ``run`` (``options["worker"]``) may still be at it: on this
    machine its process exists, on another its heartbeat is fresh (``processes.owner_alive``)."""
    return owner_alive(worker=str((run.options or {}).get("worker", "")), heartbeat_at=run.heartbeat_at, now=now,
                       timeout=heartbeat_timeout_seconds())


def touch_training_run(run_id: int, worker: str) -> bool:
    """The heartbeat of a run ``worker`` trains; False once the run is no longer its (finished, or
    restarted by another process after the heartbeat went stale)."""
    return bool(TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.RUNNING, options__worker=worker)
                .update(heartbeat_at=timezone.now()))


@contextmanager
def database_heartbeat(beat: Callable[[], object], *, interval: float, name: str) -> Iterator[None]:
    """``processes.beating`` for a beat that writes rows (a pipeline run's, a training run's).
    Skipped inside an open transaction (tests), where another connection could not write anyway.
    The thread closes its own connection at the end (Django's are per thread; ``connection.close``
    itself would be bound to the caller's)."""
    if connection.in_atomic_block:
        yield
        return
    with beating(beat, interval=interval, name=name, finish=lambda: connection.close()):
        yield


@contextmanager
def training_heartbeat(run_id: int) -> Iterator[None]:
    """Keep the run's heartbeat fresh while this process trains it, so that a copy of its task
    delivered to another machine leaves it alone."""
    worker = worker_id()
    with database_heartbeat(lambda: touch_training_run(run_id, worker), interval=heartbeat_seconds(),
                            name=f"heartbeat of training run {run_id}"):
        yield


def part_done(run_id: int, part: str) -> bool:
    """Mark ``part`` finished; True when it was the last one (the caller closes the run)."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        pending = [p for p in (run.parts_pending or []) if p != part]
        run.parts_pending = pending
        run.save(update_fields=["parts_pending"])
    return not pending


def training_run_summary(run: TrainingRun) -> dict[str, Any]:
    """What ``retrain --status`` and the API show for a run."""
    return jsonable({
        "id": run.pk,
        "status": run.status,
        "trigger": run.trigger,
        "requested_by": run.requested_by,
        "models": run.model_names,
        "tickers": run.tickers or "all",
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration_seconds": run.duration_seconds,
        "cpu_seconds": run.cpu_seconds,
        "cost_usd": float(run.cost_usd or 0),
        "stages": run.stages,
        "versions": [
            {"model": v.model.name, "version": v.version, "status": v.status, "reason": v.status_reason}
            for v in run.model_versions.all()
        ],
        "error": run.error,
        "pending": run.parts_pending,
    })
