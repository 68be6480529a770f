"""Training runs: load the training frame, evaluate every learner walk-forward, fit it on all data,
register it, gate it, stack the ensemble on out-of-fold predictions, and account for the cost.

``retrain`` creates a ``TrainingRun`` and runs it in-process (``sync=True``) or queues
``training.tasks.retrain_task``. A run goes through these stages, each recorded in
``TrainingRun.stages`` with its wall and CPU seconds and counts:

``load_frame``          the feature store's training frame (``training_frame``) for the window;
``prepare``             training-data hash, walk-forward folds, drift reference profile;
``evaluate:<learner>``  walk-forward out of sample: a fresh learner per fold, fitted on the dates
                        before the fold minus a purge gap of at least the horizon, scored on the fold;
``fit:<learner>``       the final model on every labelled row up to the end of the window;
``register:<learner>``  a new registry version (semver, artifact, out-of-sample table, lineage);
``gate:<learner>``      the promotion gate (``registry.services.promote``);
``*:ensemble``          the ensemble, fitted on its members' out-of-fold predictions only;
``finish``              CPU seconds -> cost (a ``CostRecord``), status.

Prophet is fitted per chunk of tickers: in-process one chunk after the other with ``sync=True``;
otherwise the chunks run in parallel as a Celery chord (``training.tasks``) while the worker that
holds the run trains the other learners, and whichever part finishes last stacks the ensemble and
closes the run.

Knobs read from the environment (defaults in brackets): ``ML_WALK_FORWARD_FOLDS`` [3],
``ML_WALK_FORWARD_TEST_DAYS`` [63], ``ML_WALK_FORWARD_MIN_TRAIN_DAYS`` [252],
``ML_WALK_FORWARD_GAP_DAYS`` [the horizon; never less], ``ML_LSTM_MAX_TRAIN_ROWS`` [50000: the
LSTM fits on a seeded random sample of that many labelled rows, the others still feed its
sequences; 0 = all], ``ML_PROPHET_CHUNK_TICKERS`` [50], ``ML_COMPUTE_USD_PER_CPU_HOUR`` [0.05].
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import resource
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from features.common import chunked, env_number, jsonable
from features.profile import profile_build
from investml import ledger
from registry import services as registry_services
from registry.gate import metric_on_rows, window_summary
from registry.models import ModelVersion
from registry.selectors import (
    active_version,
    evaluation_source_id,
    latest_evaluated_version,
    latest_version,
    version_label,
)
from training import selectors
from training.evaluation import (
    Split,
    baseline_predictions,
    evaluate_walk_forward,
    walk_forward_splits,
    yearly_splits,
)
from training.learners import LEARNERS, Learner, build_learner
from training.learners.base import cs_label_columns, with_cross_sectional_targets
from training.learners.sampling import SampledFit
from training.models import TrainingRun
from training.report import DEFAULT_COST_BPS, report_row

logger = logging.getLogger(__name__)

# A run has one of these before its parts finished only when the orchestrator stopped it (cancelled,
# over max_training_hours): its late parts must not register or promote anything.
STOPPED = (TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED)

# OpenMP threads (XGBoost, torch) spin while they wait by default; on a machine shared with other
# processes that burns the cores the other threads need (measured here: LSTM training 1.8x and
# XGBoost 1.5x slower under load). Passive waiting costs almost nothing when the machine is idle.
# Only effective when set before XGBoost/torch load, which training imports lazily.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

BASE_LEARNERS = ("xgboost_classifier", "lstm_predictor", "prophet_forecaster")
ENSEMBLE = "ensemble"
ALL_LEARNERS = (*BASE_LEARNERS, ENSEMBLE)
BASELINE_NAMES = ("zero", "momentum_20", "reversal_5")
# Sampling for the LSTM (the spec's "data sampling for large datasets"): at the config's 128 units x 60
# days it trains ~3,500 rows/s on 2 cores, and early stopping runs at least 1 + patience epochs.
LSTM_MAX_TRAIN_ROWS = 50_000
PIPELINE_ACTOR = "training pipeline"
EVALUATION_MODES = ("full", "auto")


class RetrainError(ValueError):
    """Bad retrain arguments (unknown learner, empty selection)."""


# --------------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class WalkForward:
    n_folds: int
    test_days: int
    min_train_days: int
    gap_days: int

    @classmethod
    def from_env(cls, *, horizon: int) -> WalkForward:
        gap = _env_int("ML_WALK_FORWARD_GAP_DAYS", horizon)
        if gap < horizon:
            raise RetrainError(
                f"ML_WALK_FORWARD_GAP_DAYS={gap} is shorter than the horizon {horizon}: training labels "
                "would overlap the test window"
            )
        return cls(
            n_folds=_env_int("ML_WALK_FORWARD_FOLDS", 3),
            test_days=_env_int("ML_WALK_FORWARD_TEST_DAYS", 63),
            min_train_days=_env_int("ML_WALK_FORWARD_MIN_TRAIN_DAYS", 252),
            gap_days=gap,
        )

    def splits(self, dates: Any, *, horizon: int) -> list[Split]:
        return walk_forward_splits(
            dates, n_folds=self.n_folds, test_days=self.test_days, gap_days=self.gap_days,
            min_train_days=self.min_train_days, horizon=horizon,
        )


def _env_int(name: str, default: int) -> int:
    return env_number(name, default, cast=int, error=RetrainError)


def _env_float(name: str, default: float) -> float:
    return env_number(name, default, cast=float, error=RetrainError)


def cpu_hour_usd() -> float:
    return _env_float("ML_COMPUTE_USD_PER_CPU_HOUR", 0.05)


def horizon_days() -> int:
    return int(settings.PIPELINE_CONFIG["training"].get("horizon_days", 5))


def model_config(name: str) -> dict[str, Any]:
    return dict(settings.PIPELINE_CONFIG["models"].get(name, {}))


def target_for(name: str, horizon: int) -> str:
    """The label a learner fits (``training.learners.base.cs_label_columns``): a change of target
    is a major version. Prophet forecasts each ticker's own series, so it keeps the raw return."""
    rank_col, up_col, excess_col = cs_label_columns(horizon)
    return {"xgboost_classifier": up_col, "lstm_predictor": rank_col, ENSEMBLE: excess_col}.get(
        name, f"fwd_ret_{horizon}")


# --------------------------------------------------------------------------------------------------
# numeric helpers (no Django)


def cpu_seconds_now() -> float:
    """CPU seconds of this process (all threads) plus its finished children (Stan fits)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def frame_hash(frame: pd.DataFrame, columns: Sequence[str]) -> str:
    """sha256 of the rows and columns a model trains on (order-sensitive, so the frame is sorted)."""
    digest = hashlib.sha256()
    digest.update("\x1f".join(columns).encode("utf-8"))
    hashed = pd.util.hash_pandas_object(frame[list(columns)], index=False)
    digest.update(hashed.to_numpy().tobytes())
    return digest.hexdigest()


def label_table(frame: pd.DataFrame, *, horizon: int) -> pd.DataFrame:
    """Per (ticker, date): adj_close, realized ``fwd_ret_h``, ``fwd_ret_1`` and the baselines."""
    base = baseline_predictions(frame, horizon=horizon)
    ret_col = f"fwd_ret_{horizon}"
    return pd.DataFrame({
        "ticker": frame["ticker"].astype(str).to_numpy(),
        "date": pd.to_datetime(frame["date"]).to_numpy(),
        "adj_close": frame["adj_close"].to_numpy(dtype=np.float64),
        "realized": frame[ret_col].to_numpy(dtype=np.float64),
        "next_return": frame["fwd_ret_1"].to_numpy(dtype=np.float64) if "fwd_ret_1" in frame
        else frame[ret_col].to_numpy(dtype=np.float64) / horizon,
        "momentum_20": base["momentum_20"]["expected_return"].to_numpy(dtype=np.float64),
        "reversal_5": base["reversal_5"]["expected_return"].to_numpy(dtype=np.float64),
    })


def oof_table(oof: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The walk-forward predictions joined to their labels and baseline signals."""
    preds = oof[["ticker", "date", "expected_return", "prob_up", "confidence", "fold"]].assign(
        ticker=oof["ticker"].astype(str).to_numpy(), date=pd.to_datetime(oof["date"]).to_numpy()
    )
    table = preds.merge(labels, on=["ticker", "date"], how="left", validate="one_to_one")
    return table.sort_values(["date", "ticker"], kind="stable").reset_index(drop=True)


def baseline_view(table: pd.DataFrame, name: str) -> pd.DataFrame:
    """``table`` with a baseline's forecast in ``expected_return``/``prob_up``."""
    if name == "zero":
        expected = np.zeros(len(table))
    else:
        expected = table[name].to_numpy(dtype=np.float64)
    prob = np.where(expected > 0, 1.0, np.where(expected < 0, 0.0, 0.5))
    prob = np.where(np.isfinite(expected), prob, np.nan)
    return table.assign(expected_return=expected, prob_up=prob)


def summarize_oof(table: pd.DataFrame, *, horizon: int, folds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Overall and per-fold metrics of a model and of the baselines on the same rows."""
    summary: dict[str, Any] = {
        "metrics": metric_on_rows(table, horizon=horizon),
        "baselines": {b: metric_on_rows(baseline_view(table, b), horizon=horizon) for b in BASELINE_NAMES},
        "window": window_summary(table),
        "folds": [],
    }
    for fold in folds:
        rows = table.loc[table["fold"].to_numpy() == fold["fold"]]
        summary["folds"].append({
            **fold,
            "n_test_rows": int(len(rows)),
            "metrics": metric_on_rows(rows, horizon=horizon),
            "baselines": {b: metric_on_rows(baseline_view(rows, b), horizon=horizon) for b in BASELINE_NAMES},
        })
    return jsonable(summary)


def _rounded(value: float | None, digits: int = 5) -> float | None:
    """A metric for a stage's counts; None (no finite value, e.g. too few tickers to rank) stays None."""
    return None if value is None else round(value, digits)


def describe_folds(splits: Sequence[Split], dates: np.ndarray, *, horizon: int) -> list[dict[str, Any]]:
    """Each fold's window, with the purge checked against the actual trading dates."""
    dates = np.unique(pd.to_datetime(pd.Series(dates)).to_numpy())
    out = []
    for split in splits:
        last_train = np.searchsorted(dates, split.train_dates[-1])
        first_test = np.searchsorted(dates, split.test_dates[0])
        between = int(first_test - last_train - 1)
        if between < horizon:
            raise AssertionError(f"fold {split.fold}: only {between} dates between train and test (< {horizon})")
        out.append({**split.describe(), "horizon": horizon, "dates_between_train_and_test": between})
    return out


def ensemble_walk_forward(n_dates: int, wf: WalkForward) -> WalkForward:
    """Folds for the ensemble over its members' out-of-fold dates: one fold fewer than the members
    (the first member fold only trains the stack), the same test length and gap."""
    folds = max(1, wf.n_folds - 1)
    test_days = min(wf.test_days, max(1, (n_dates - wf.gap_days - 20) // folds))
    min_train = max(1, n_dates - wf.gap_days - folds * test_days)
    return WalkForward(n_folds=folds, test_days=test_days, min_train_days=min_train, gap_days=wf.gap_days)


# --------------------------------------------------------------------------------------------------
# run bookkeeping


@dataclass
class StageRecord:
    name: str
    status: str = "running"
    started_at: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    counts: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def _append_log(run_id: int, line: str) -> None:
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
        _append_log(run_id, f"{name} {record.status} in {record.seconds:.1f}s" + (f" ({detail})" if detail else "")
                    + (f": {record.error}" if record.error else ""))


def _add_cpu(run_id: int, seconds: float) -> None:
    TrainingRun.objects.filter(pk=run_id).update(cpu_seconds=F("cpu_seconds") + float(seconds))


def _record_failure(run_id: int, where: str, exc: BaseException) -> str:
    text = failure_message(run_id=run_id, where=where, exc=exc)
    TrainingRun.objects.filter(pk=run_id).update(error=Concat(F("error"), Value(text + "\n")))
    _append_log(run_id, text.splitlines()[0])
    logger.error("%s\n%s", text, "".join(traceback.format_exception(exc)))
    return text


def failure_message(*, run_id: int, where: str, exc: BaseException) -> str:
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


# --------------------------------------------------------------------------------------------------
# entry points


def resolve_models(models: Sequence[str] | None) -> list[str]:
    if not models:
        chosen = [name for name in ALL_LEARNERS if model_config(name).get("enabled", True)]
    else:
        unknown = [m for m in models if m not in LEARNERS]
        if unknown:
            raise RetrainError(f"unknown model(s) {', '.join(unknown)} (known: {', '.join(ALL_LEARNERS)})")
        chosen = [name for name in ALL_LEARNERS if name in set(models)]
    if not chosen:
        raise RetrainError("no models selected (all disabled in the pipeline config?)")
    return chosen


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
    or its procedure changed, and otherwise refits it or keeps it (see ``plan_learner``)."""
    if evaluation not in EVALUATION_MODES:
        raise RetrainError(f"evaluation must be one of {', '.join(EVALUATION_MODES)}, not {evaluation!r}")
    names = resolve_models(models)
    symbols = sorted({t.strip().upper() for t in (tickers or []) if t and t.strip()})
    horizon = horizon_days()
    wf = WalkForward.from_env(horizon=horizon)
    run = TrainingRun.objects.create(
        status=TrainingRun.Status.QUEUED,
        trigger=trigger[:30],
        requested_by=requested_by[:150],
        model_names=names,
        tickers=symbols,
        options=jsonable({
            "horizon": horizon,
            "train_years": settings.PIPELINE_CONFIG["training"].get("train_years", 5),
            "walk_forward": asdict(wf),
            "lstm_max_train_rows": _env_int("ML_LSTM_MAX_TRAIN_ROWS", LSTM_MAX_TRAIN_ROWS),
            "prophet_chunk_tickers": _env_int("ML_PROPHET_CHUNK_TICKERS", 50),
            "cpu_hour_usd": cpu_hour_usd(),
            "sync": bool(sync),
            "evaluation": evaluation,
            "reevaluate_every_trading_days": reevaluate_every_trading_days(),
        }),
    )
    scope = ", ".join(symbols[:10]) + (f" ... ({len(symbols)} tickers)" if len(symbols) > 10 else "")
    _append_log(run.pk, f"queued by {requested_by or trigger}: models {', '.join(names)}; tickers {scope or 'all'}")
    if sync:
        return execute_run(run_id=run.pk, distributed=False)
    from training.tasks import retrain_task

    try:
        result = retrain_task.delay(run.pk)
    except Exception as exc:  # broker down: the run must not stay queued forever
        _record_failure(run.pk, "queueing", exc)
        TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.FAILED, finished_at=timezone.now())
        raise RetrainError(
            f"could not queue training run {run.pk} on Celery ({type(exc).__name__}: {exc}); check the broker "
            "(REDIS_URL) and the worker, or run in this process with --sync"
        ) from exc
    TrainingRun.objects.filter(pk=run.pk, celery_task_id="").update(celery_task_id=result.id or "")
    run.refresh_from_db()
    return run


@dataclass
class _Context:
    """What the stages of one run share. ``frame`` is None where a part works from stored tables."""

    run: TrainingRun
    horizon: int
    wf: WalkForward
    frame: pd.DataFrame | None
    feature_columns: list[str]
    feature_set_version: Any
    n_tickers: int
    labels: pd.DataFrame | None
    splits: list[Split]
    folds: list[dict[str, Any]]
    data_hash: str
    drift: dict[str, Any]
    train_start: Any
    train_end: Any
    data_sources: list[Any]


def execute_run(*, run_id: int, distributed: bool = False) -> TrainingRun:
    """Run a queued training run (in-process; with ``distributed`` Prophet fans out on Celery)."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        if run.status in (TrainingRun.Status.SUCCEEDED, TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED):
            return run
        restarted = run.status == TrainingRun.Status.RUNNING
        attempt = int((run.options or {}).get("attempt", 0)) + 1
        limit = max(1, _env_int("ML_TRAINING_MAX_ATTEMPTS", 3))
        if restarted and attempt > limit:
            # the worker holding it was lost each time (acks_late redelivers the task): most often the
            # out-of-memory killer, which would kill every further attempt the same way
            text = failure_message(run_id=run_id, where=f"attempt {attempt} (the worker was lost {attempt - 1} "
                                                        f"times, limit ML_TRAINING_MAX_ATTEMPTS={limit})",
                                   exc=MemoryError())
            run.status, run.finished_at = TrainingRun.Status.FAILED, timezone.now()
            run.error = (run.error + "\n" + text).strip()
            run.save(update_fields=["status", "finished_at", "error"])
            _append_log(run_id, text.splitlines()[0])
            return run
        run.options = {**(run.options or {}), "attempt": attempt}
        run.status = TrainingRun.Status.RUNNING
        run.started_at = timezone.now()
        run.parts_pending = ["main"]
        if restarted:
            run.stages, run.error, run.cpu_seconds = [], "", 0
        run.save()
    if restarted:
        _append_log(run_id, f"restarting (the previous attempt was interrupted): attempt {attempt} of {limit}")
    max_seconds = float(settings.PIPELINE_CONFIG["training"].get("max_training_hours", 24.0)) * 3600
    cpu0, wall0, excluded = cpu_seconds_now(), time.perf_counter(), 0.0
    try:
        ctx = _prepare(run)
        names = list(run.model_names)
        plans = {name: plan_learner(ctx, name) for name in names if name != ENSEMBLE}
        if "prophet_forecaster" in plans and plans["prophet_forecaster"].action == "evaluate" and distributed:
            started = cpu_seconds_now()
            _dispatch_prophet(ctx)
            excluded += cpu_seconds_now() - started  # eager mode runs the chunks right here
        for name in names:
            if name == ENSEMBLE:
                continue
            plan = plans[name]
            if plan.action == "keep" or (name == "prophet_forecaster" and distributed):
                continue
            if time.perf_counter() - wall0 > max_seconds:
                _record_failure(run_id, f"learner {name}", TimeoutError(
                    f"the run exceeded training.max_training_hours ({max_seconds / 3600:g} h); "
                    f"{name} and the learners after it were not trained"
                ))
                break
            try:
                if name == "prophet_forecaster":
                    _train_prophet_inprocess(ctx)
                elif plan.action == "refit":
                    _refit_learner(ctx, name, source=plan.source)
                else:
                    _train_learner(ctx, name)
            except Exception as exc:  # noqa: BLE001 - one learner failing must not stop the others
                _record_failure(run_id, f"learner {name}", exc)
    except Exception as exc:  # noqa: BLE001 - recorded on the run
        _record_failure(run_id, "preparation", exc)
    finally:
        _add_cpu(run_id, cpu_seconds_now() - cpu0 - excluded)
        if _part_done(run_id, "main"):
            _finalize(run_id)
    return TrainingRun.objects.get(pk=run_id)


def _part_done(run_id: int, part: str) -> bool:
    """Mark ``part`` finished; True when it was the last one (the caller closes the run)."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        pending = [p for p in (run.parts_pending or []) if p != part]
        run.parts_pending = pending
        run.save(update_fields=["parts_pending"])
    return not pending


def _prepare(run: TrainingRun) -> _Context:
    horizon = int(run.options.get("horizon", horizon_days()))
    wf = WalkForward(**run.options["walk_forward"])
    with stage(run.pk, "load_frame") as rec:
        data = selectors.load_training_frame(
            tickers=list(run.tickers) or None, horizon=horizon, train_years=run.options.get("train_years"),
        )
        # cross-sectional targets ranked over the whole universe of each date, once
        frame = with_cross_sectional_targets(data.frame, horizon) if not data.frame.empty else data.frame
        if frame.empty:
            raise selectors.NoTrainingData(
                f"the feature store returned no rows for tickers {', '.join(run.tickers) or 'all'}"
            )
        rec.counts.update(rows=int(len(frame)), tickers=int(frame["ticker"].nunique()),
                          dates=int(frame["date"].nunique()), features=len(data.feature_columns))
    with stage(run.pk, "prepare") as rec:
        ret_col = f"fwd_ret_{horizon}"
        columns = ["ticker", "date", "adj_close", *data.feature_columns,
                   *[c for c in ("fwd_ret_1", ret_col) if c in frame]]
        data_hash = frame_hash(frame, columns)
        dates = np.unique(frame["date"].to_numpy())
        splits = wf.splits(dates, horizon=horizon)
        folds = describe_folds(splits, dates, horizon=horizon)
        labelled = frame.loc[np.isfinite(frame[ret_col].to_numpy(dtype=np.float64)), "date"]
        drift = profile_build(frame, data.feature_columns)
        log_returns = pd.DataFrame({"log_return_1": np.log(frame["adj_close"]).groupby(frame["ticker"]).diff()})
        drift["features"].update(profile_build(log_returns, ["log_return_1"])["features"])
        drift.update(start=_iso(dates[0]), end=_iso(dates[-1]))
        labels = label_table(frame, horizon=horizon)
        rec.counts.update(data_hash=data_hash[:12], folds=len(splits), gap_days=wf.gap_days,
                          labelled_rows=int(len(labelled)))
    fsv = data.feature_set_version if getattr(data.feature_set_version, "pk", None) else None
    ctx = _Context(
        run=run, horizon=horizon, wf=wf, frame=frame, feature_columns=list(data.feature_columns),
        feature_set_version=fsv, n_tickers=int(frame["ticker"].nunique()), labels=labels, splits=splits,
        folds=folds, data_hash=data_hash, drift=drift,
        train_start=pd.Timestamp(labelled.min()).date() if len(labelled) else None,
        train_end=pd.Timestamp(labelled.max()).date() if len(labelled) else None,
        data_sources=[{"feature_store": str(fsv) if fsv is not None else "training frame",
                       "tickers": int(frame["ticker"].nunique()), "rows": int(len(frame))}],
    )
    options = dict(run.options)
    options.update(
        window={"start": _iso(dates[0]), "end": _iso(dates[-1])},
        train_window={"start": str(ctx.train_start), "end": str(ctx.train_end)},
        folds=folds, data_hash=data_hash, feature_columns=ctx.feature_columns,
        feature_set_version=getattr(fsv, "pk", None), n_tickers=ctx.n_tickers, data_sources=ctx.data_sources,
        prophet_drift=_drift_for(ctx, []),
    )
    run.options = jsonable(options)
    TrainingRun.objects.filter(pk=run.pk).update(options=run.options, feature_set_version=fsv)
    return ctx


def _iso(value: Any) -> str:
    return pd.Timestamp(value).date().isoformat()


def _feature_columns_for(name: str, learner: Learner, columns: list[str]) -> list[str]:
    if name == "lstm_predictor":
        return columns[: int(getattr(learner, "params", {}).get("features", len(columns)))]
    if name == "prophet_forecaster":
        return []
    return list(columns)


def _drift_for(ctx: _Context, columns: list[str]) -> dict[str, Any]:
    wanted = columns or ["log_return_1"]
    return {**{k: v for k, v in ctx.drift.items() if k != "features"},
            "features": {c: ctx.drift["features"][c] for c in wanted if c in ctx.drift["features"]}}


def _make_learner(name: str, *, max_rows: int) -> Callable[[], Any]:
    config = model_config(name)

    def make() -> Any:
        learner = build_learner(name, config)
        if name == "lstm_predictor" and max_rows > 0:
            return SampledFit(learner, max_rows=max_rows, seed=int(config.get("seed", 42)))
        return learner

    return make


def _train_learner(ctx: _Context, name: str) -> ModelVersion:
    """Evaluate, fit, register and gate one of the frame-based learners (XGBoost, LSTM)."""
    run_id, horizon = ctx.run.pk, ctx.horizon
    frame, columns = ctx.frame, ctx.feature_columns
    make = _make_learner(name, max_rows=int(ctx.run.options.get("lstm_max_train_rows", 0)))
    cpu0, wall0 = cpu_seconds_now(), time.perf_counter()
    with stage(run_id, f"evaluate:{name}") as rec:
        result = evaluate_walk_forward(make, frame, feature_columns=columns, horizon=horizon, splits=ctx.splits,
                                       baselines=False)
        table = oof_table(result.oof, ctx.labels)
        fold_stats = {f.split["fold"]: {"n_train_rows": f.n_train_rows, "fit_seconds": round(f.fit_seconds, 3)}
                      for f in result.folds}
        folds = [{**f, **fold_stats.get(f["fold"], {})} for f in ctx.folds]
        summary = summarize_oof(table, horizon=horizon, folds=folds)
        rec.counts.update(folds=len(result.folds), oof_rows=int(len(table)),
                          rank_ic=_rounded(summary["metrics"]["rank_ic"]))
    learner, report = _final_fit(ctx, name, make)
    return _register_and_gate(ctx, name, learner=learner, table=table, summary=summary,
                              columns=_feature_columns_for(name, learner, columns),
                              cpu=cpu_seconds_now() - cpu0, wall=time.perf_counter() - wall0,
                              extra=report.extra)


def _final_fit(ctx: _Context, name: str, make: Callable[[], Any], **counts: Any) -> tuple[Learner, Any]:
    """The model on every labelled row of the window (the ``fit:<learner>`` stage)."""
    with stage(ctx.run.pk, f"fit:{name}", **counts) as rec:
        learner = make()
        report = learner.fit(ctx.frame, feature_columns=ctx.feature_columns, horizon=ctx.horizon)
        rec.counts.update(n_samples=report.n_samples, **{k: v for k, v in report.extra.items()
                                                         if k in ("epochs_run", "best_epoch", "sampled_rows",
                                                                  "calibration", "n_validation")})
    return getattr(learner, "inner", learner), report


# --------------------------------------------------------------------------------------------------
# the daily plan: evaluate weekly, refit daily
#
# The walk-forward evaluation (3 folds: 3 fits per learner, plus Prophet's per-ticker fits) is most
# of a run's cost, and one more day of data does not change what it measures: the skill of a
# procedure (learner, hyperparameters, features, target). So with ``evaluation="auto"`` a learner is
# re-evaluated when its last evaluation is ``training.reevaluate_every_trading_days`` old or its
# procedure changed; in between, the procedure the gate accepted is refit on the newest data and
# the refit carries the evaluation (``registry.promote_refit``); a procedure the gate rejected is
# not refit until its next evaluation; Prophet (which forecasts ahead from its fit) is kept.


@dataclass(frozen=True)
class LearnerPlan:
    action: str  # "evaluate" | "refit" | "keep"
    reason: str
    source: ModelVersion | None = None  # the evaluated version a refit carries the evaluation of


def reevaluate_every_trading_days() -> int:
    return int(settings.PIPELINE_CONFIG["training"].get("reevaluate_every_trading_days", 5))


def _procedure_change(ctx: _Context, name: str, source: ModelVersion) -> str:
    """What differs between ``source``'s evaluated procedure and this run's, or ''."""
    learner = build_learner(name, model_config(name))
    if source.horizon_days != ctx.horizon or source.target != target_for(name, ctx.horizon):
        return "the target"
    if source.feature_set_version_id != getattr(ctx.feature_set_version, "pk", None):
        return "the feature set version"
    if not registry_services.same_hyperparameters(source.hyperparameters, getattr(learner, "params", {})):
        return "the hyperparameters"
    if list(source.feature_columns or []) != _feature_columns_for(name, learner, ctx.feature_columns):
        return "the feature columns"
    if (source.evaluation or {}).get("walk_forward") != asdict(ctx.wf):
        return "the walk-forward settings"
    return ""


def plan_learner(ctx: _Context, name: str) -> LearnerPlan:
    """Evaluate, refit or keep ``name`` in this run (recorded as a ``plan:<learner>`` stage in
    ``auto`` runs)."""
    if ctx.run.options.get("evaluation", "full") != "auto":
        return LearnerPlan("evaluate", "full evaluation requested")
    return _recorded(ctx.run.pk, name, _plan_auto(ctx, name))


def _recorded(run_id: int, name: str, plan: LearnerPlan) -> LearnerPlan:
    """``plan`` as the run's ``plan:<learner>`` stage and log line."""
    with stage(run_id, f"plan:{name}", action=plan.action, reason=plan.reason):
        pass
    _append_log(run_id, f"{name}: {plan.action} ({plan.reason})")
    return plan


def _plan_auto(ctx: _Context, name: str) -> LearnerPlan:
    every = int(ctx.run.options.get("reevaluate_every_trading_days", reevaluate_every_trading_days()))
    if every <= 0:
        return LearnerPlan("evaluate", "training.reevaluate_every_trading_days is 0: every run evaluates")
    source = latest_evaluated_version(model_name=name)
    if source is None or source.train_end is None or ctx.train_end is None:
        return LearnerPlan("evaluate", "no evaluated version yet")
    label = version_label(source)
    changed = _procedure_change(ctx, name, source)
    if changed:
        return LearnerPlan("evaluate", f"{changed} changed since {label} was evaluated")
    age = int(np.busday_count(source.train_end, ctx.train_end))
    if not 0 <= age < every:
        return LearnerPlan("evaluate", f"{label}'s evaluation is {age} trading days old (every {every})")
    due = f"next evaluation in {every - age} trading day(s)"
    active = active_version(model_name=name)
    if active is None or evaluation_source_id(version=active) != source.pk:
        return LearnerPlan("keep", f"{label}'s procedure did not pass the gate; not refit before its next "
                                   f"evaluation ({due})")
    if name == "prophet_forecaster":
        return LearnerPlan("keep", f"{version_label(active)} kept: Prophet forecasts ahead from its fit ({due})")
    if active.training_data_hash == ctx.data_hash:
        return LearnerPlan("keep", f"the training data is unchanged since {version_label(active)} ({due})")
    return LearnerPlan("refit", f"refit of {label}'s procedure on data to {ctx.train_end} ({due})", source)


def _refit_learner(ctx: _Context, name: str, *, source: ModelVersion) -> ModelVersion:
    """Fit ``source``'s procedure on this run's data and register it with ``source``'s evaluation."""
    cpu0, wall0 = cpu_seconds_now(), time.perf_counter()
    make = _make_learner(name, max_rows=int(ctx.run.options.get("lstm_max_train_rows", 0)))
    learner, report = _final_fit(ctx, name, make, refit_of=version_label(source))
    return _register_and_gate(ctx, name, learner=learner, table=registry_services.load_oof(version=source),
                              summary=_carried_summary(source), columns=list(source.feature_columns or []),
                              cpu=cpu_seconds_now() - cpu0, wall=time.perf_counter() - wall0,
                              extra=report.extra, carried_from=source)


def _carried_summary(source: ModelVersion) -> dict[str, Any]:
    evaluation = source.evaluation or {}
    return {"metrics": dict(source.metrics or {}), "baselines": dict(source.baselines or {}),
            "folds": list(evaluation.get("folds") or []),
            "window": evaluation.get("window") or {"start": source.evaluation_start, "end": source.evaluation_end}}


def _register_and_gate(ctx: _Context, name: str, *, learner: Learner, table: pd.DataFrame, summary: dict[str, Any],
                       columns: list[str], cpu: float, wall: float, extra: dict[str, Any] | None = None,
                       members: Sequence[ModelVersion] = (), data_hash: str | None = None,
                       drift: dict[str, Any] | None = None, wf: WalkForward | None = None,
                       carried_from: ModelVersion | None = None) -> ModelVersion:
    """Register ``learner`` and gate it; ``carried_from``: a daily refit carrying that version's
    out-of-sample evaluation (``table``, ``summary``), activated by ``registry.promote_refit``."""
    run_id, horizon = ctx.run.pk, ctx.horizon
    carried = {} if carried_from is None else {"carried_from": {
        "id": carried_from.pk, "version": version_label(carried_from),
        "train_end": str(carried_from.train_end), "evaluated_at": carried_from.created_at.isoformat()}}
    rate = float(ctx.run.options.get("cpu_hour_usd", cpu_hour_usd()))
    with stage(run_id, f"register:{name}") as rec:
        window = summary["window"]
        version = registry_services.register_version(
            model_name=name,
            learner=learner,
            feature_set_version=ctx.feature_set_version,
            feature_columns=columns,
            target=target_for(name, horizon),
            horizon=horizon,
            metrics=summary["metrics"],
            baselines=summary["baselines"],
            hyperparameters=getattr(learner, "params", {}),
            train_start=ctx.train_start,
            train_end=ctx.train_end,
            evaluation_start=window["start"],
            evaluation_end=window["end"],
            training_data_hash=data_hash or ctx.data_hash,
            training_run=ctx.run,
            members=members,
            oof=table,
            evaluation={
                "walk_forward": asdict(wf or ctx.wf),
                "folds": summary["folds"],
                "window": window,
                "final_fit": jsonable(extra or {}),
                **carried,
            },
            tickers=ctx.n_tickers,
            data_sources=ctx.data_sources,
            drift_reference=drift if drift is not None else _drift_for(ctx, columns),
            training_seconds=wall,
            cost_usd=cpu / 3600.0 * rate,
            actor=f"{PIPELINE_ACTOR} (run {run_id})",
        )
        rec.counts.update(version=version.version, artifact_bytes=version.artifact_bytes, cpu_seconds=round(cpu, 1))
    _set_run_metrics(run_id, name, summary["metrics"])
    with stage(run_id, f"gate:{name}") as rec:
        actor = f"{PIPELINE_ACTOR} (run {run_id})"
        if carried_from is not None:
            decision = registry_services.promote_refit(version=version, source=carried_from, actor=actor)
        else:
            decision = registry_services.promote(version=version, actor=actor,
                                                 reason="automatic promotion after training")
        rec.counts.update(promoted=decision.passed, metric=decision.metric,
                          score=None if decision.score is None else round(decision.score, 4))
        _append_log(run_id, decision.reason)
    return version


def _set_run_metrics(run_id: int, name: str, metrics: dict[str, Any]) -> None:
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        run.metrics = {**(run.metrics or {}), name: jsonable(metrics)}
        run.save(update_fields=["metrics"])


# --------------------------------------------------------------------------------------------------
# Prophet: per ticker chunk, in-process or as a Celery chord


@dataclass
class ProphetChunk:
    learner: Any  # ProphetLearner
    table: pd.DataFrame
    fold_stats: dict[int, dict[str, Any]]
    cpu_seconds: float


def _previous_prophet() -> Any:
    """The newest Prophet version's learner, to warm-start from (None when there is none or it fails)."""
    version = active_version(model_name="prophet_forecaster") or latest_version(model_name="prophet_forecaster")
    if version is None:
        return None
    try:
        previous = registry_services.load_version(version=version)
    except Exception as exc:  # noqa: BLE001 - a cold start is fine
        logger.warning("prophet warm start unavailable (%s): %s", version_label(version), exc)
        return None
    return previous if previous.params == build_learner("prophet_forecaster", model_config("prophet_forecaster")).params \
        else None


def fit_prophet_chunk(*, frame: pd.DataFrame, splits: Sequence[Split], horizon: int,
                      warm_start: Any = None, final_fit: bool = True) -> ProphetChunk:
    """Walk-forward evaluation and final fit of Prophet for the tickers in ``frame``."""
    cpu0 = cpu_seconds_now()
    config = model_config("prophet_forecaster")
    fold_learners: list[Any] = []

    def make() -> Any:
        fold_learners.append(build_learner("prophet_forecaster", config))
        return fold_learners[-1]

    result = evaluate_walk_forward(make, frame, feature_columns=[], horizon=horizon, splits=splits,
                                   warm_start=True, baselines=False)
    table = oof_table(result.oof, label_table(frame, horizon=horizon))
    learner = build_learner("prophet_forecaster", config)
    if final_fit:
        # Warm start (initial values only; the fit still converges on all the data): the previous
        # registered version, else the last fold's model.
        learner.fit(frame, horizon=horizon, warm_start=warm_start or (fold_learners[-1] if fold_learners else None))
    stats = {f.split["fold"]: {"n_train_rows": f.n_train_rows, "fit_seconds": f.fit_seconds} for f in result.folds}
    return ProphetChunk(learner=learner, table=table, fold_stats=stats, cpu_seconds=cpu_seconds_now() - cpu0)


def _combine_prophet(ctx: _Context, chunks: Sequence[ProphetChunk], *, wall: float) -> ModelVersion:
    name = "prophet_forecaster"
    with stage(ctx.run.pk, f"combine:{name}") as rec:
        table = pd.concat([c.table for c in chunks], ignore_index=True)
        table = table.sort_values(["date", "ticker"], kind="stable").reset_index(drop=True)
        folds = []
        for fold in ctx.folds:
            parts = [c.fold_stats.get(fold["fold"], {}) for c in chunks]
            folds.append({**fold, "n_train_rows": int(sum(p.get("n_train_rows", 0) for p in parts)),
                          "fit_seconds": round(float(sum(p.get("fit_seconds", 0.0) for p in parts)), 3)})
        summary = summarize_oof(table, horizon=ctx.horizon, folds=folds)
        learner = chunks[0].learner.merge([c.learner for c in chunks[1:]])
        rec.counts.update(chunks=len(chunks), oof_rows=int(len(table)), tickers_fitted=len(learner.tickers),
                          rank_ic=_rounded(summary["metrics"]["rank_ic"]))
    cpu = float(sum(c.cpu_seconds for c in chunks))
    return _register_and_gate(ctx, name, learner=learner, table=table, summary=summary, columns=[], cpu=cpu,
                              wall=wall, extra={"chunks": len(chunks), "tickers": len(learner.tickers)})


def _train_prophet_inprocess(ctx: _Context) -> ModelVersion:
    frame = ctx.frame
    tickers = sorted(frame["ticker"].unique())
    size = int(ctx.run.options.get("prophet_chunk_tickers", 50))
    wall0 = time.perf_counter()
    previous = _previous_prophet()
    chunks = []
    for i, part in enumerate(chunked(tickers, size)):
        with stage(ctx.run.pk, f"chunk:prophet_forecaster[{i}]", tickers=len(part)) as rec:
            sub = frame.loc[frame["ticker"].isin(part)]
            chunk = fit_prophet_chunk(frame=sub, splits=ctx.splits, horizon=ctx.horizon, warm_start=previous)
            rec.counts.update(oof_rows=int(len(chunk.table)), warm_started=previous is not None)
            chunks.append(chunk)
    return _combine_prophet(ctx, chunks, wall=time.perf_counter() - wall0)


def _scratch(run_id: int, chunk: int, suffix: str) -> str:
    return f"_runs/{int(run_id)}/prophet_{int(chunk)}{suffix}"


def _dispatch_prophet(ctx: _Context) -> None:
    from training.tasks import dispatch_prophet_chunks

    tickers = sorted(ctx.frame["ticker"].unique())
    parts = chunked(tickers, int(ctx.run.options.get("prophet_chunk_tickers", 50)))
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=ctx.run.pk)
        run.parts_pending = [*run.parts_pending, "prophet"]
        run.options = {**run.options, "prophet_started": time.time()}
        run.save(update_fields=["parts_pending", "options"])
    try:
        with stage(ctx.run.pk, "dispatch:prophet_forecaster", chunks=len(parts), tickers=len(tickers)) as rec:
            rec.counts["chord"] = dispatch_prophet_chunks(run_id=ctx.run.pk, chunks=parts)
    except Exception:
        _part_done(ctx.run.pk, "prophet")  # nothing will report back
        raise


def _context_from_options(run: TrainingRun, *, tickers: list[str] | None) -> _Context:
    """A context rebuilt in a Celery worker from what the run recorded; with ``tickers`` it loads
    their frame (a chunk), without it works from stored tables only (the merge)."""
    horizon = int(run.options["horizon"])
    fsv = run.feature_set_version
    frame, splits = None, []
    if tickers is not None:
        data = selectors.load_training_frame(
            tickers=tickers, start=pd.Timestamp(run.options["window"]["start"]).date(),
            end=pd.Timestamp(run.options["window"]["end"]).date(), horizon=horizon, feature_set_version=fsv,
        )
        frame = data.frame
        splits = [
            Split(fold=f["fold"], train_dates=_dates_between(frame, f["train_start"], f["train_end"]),
                  test_dates=_dates_between(frame, f["test_start"], f["test_end"]), gap_days=f["gap_days"])
            for f in run.options["folds"]
        ]
    train = run.options.get("train_window", {})
    return _Context(
        run=run, horizon=horizon, wf=WalkForward(**run.options["walk_forward"]), frame=frame,
        feature_columns=list(run.options.get("feature_columns", [])), feature_set_version=fsv,
        n_tickers=int(run.options.get("n_tickers", 0)), labels=None, splits=splits, folds=run.options["folds"],
        data_hash=run.options["data_hash"], drift=run.options.get("prophet_drift", {}),
        train_start=pd.Timestamp(train["start"]).date() if train.get("start") not in (None, "None") else None,
        train_end=pd.Timestamp(train["end"]).date() if train.get("end") not in (None, "None") else None,
        data_sources=run.options.get("data_sources", []),
    )


def _dates_between(frame: pd.DataFrame, start: str, end: str) -> np.ndarray:
    dates = np.unique(frame["date"].to_numpy())
    return dates[(dates >= np.datetime64(start)) & (dates <= np.datetime64(end))]


def run_prophet_chunk(*, run_id: int, chunk: int, tickers: list[str]) -> dict[str, Any]:
    """Celery chunk task body: fit one chunk, leave its learner and table in scratch files. A chunk
    of a run stopped meanwhile is not fitted."""
    from registry import artifacts

    run = TrainingRun.objects.get(pk=run_id)
    if run.status in STOPPED:
        logger.info("training run %s is %s: prophet chunk %s not fitted", run_id, run.status, chunk)
        return {"chunk": chunk, "tickers": len(tickers), "skipped": run.status}
    with stage(run_id, f"chunk:prophet_forecaster[{chunk}]", tickers=len(tickers)) as rec:
        ctx = _context_from_options(run, tickers=tickers)
        previous = _previous_prophet()
        result = fit_prophet_chunk(frame=ctx.frame, splits=ctx.splits, horizon=ctx.horizon, warm_start=previous)
        rec.counts.update(oof_rows=int(len(result.table)), warm_started=previous is not None)
    root = settings.ML_MODELS_PATH
    model = artifacts.write_atomic(root=root, relpath=_scratch(run_id, chunk, ".bin"), data=result.learner.to_bytes())
    table = artifacts.write_atomic(root=root, relpath=_scratch(run_id, chunk, ".oof.npz"),
                                   data=artifacts.oof_to_bytes(result.table))
    return {
        "chunk": chunk, "tickers": len(tickers), "model_sha256": model.sha256, "model_bytes": model.size,
        "table_sha256": table.sha256, "table_bytes": table.size,
        "fold_stats": {str(k): v for k, v in result.fold_stats.items()}, "cpu_seconds": result.cpu_seconds,
    }


def merge_prophet_chunks(*, run_id: int, results: Sequence[dict[str, Any]]) -> None:
    """Chord callback body: merge the chunks, register and gate Prophet, close the run if last."""
    from registry import artifacts
    from training.learners.prophet_learner import ProphetLearner

    cpu0 = cpu_seconds_now()
    root = settings.ML_MODELS_PATH
    try:
        run = TrainingRun.objects.get(pk=run_id)
        _add_cpu(run_id, sum(float(r.get("cpu_seconds", 0.0)) for r in results))
        if run.status in STOPPED:  # never register (or promote) a model of a stopped run
            _append_log(run_id, f"prophet_forecaster not registered: the run was {run.status} meanwhile")
            return
        chunks = []
        for r in sorted(results, key=lambda r: r["chunk"]):
            label = f"prophet chunk {r['chunk']} of training run {run_id}"
            model = artifacts.read_verified(root=root, relpath=_scratch(run_id, r["chunk"], ".bin"),
                                            sha256=r["model_sha256"], size=r["model_bytes"], label=label)
            table = artifacts.read_verified(root=root, relpath=_scratch(run_id, r["chunk"], ".oof.npz"),
                                            sha256=r["table_sha256"], size=r["table_bytes"], label=label)
            chunks.append(ProphetChunk(
                learner=ProphetLearner.from_bytes(model), table=artifacts.oof_from_bytes(table),
                fold_stats={int(k): v for k, v in r["fold_stats"].items()}, cpu_seconds=float(r["cpu_seconds"]),
            ))
        ctx = _context_from_options(run, tickers=None)
        wall = time.time() - float(run.options.get("prophet_started", time.time()))
        _combine_prophet(ctx, chunks, wall=wall)
    except Exception as exc:  # noqa: BLE001 - recorded on the run
        _record_failure(run_id, "learner prophet_forecaster (merge)", exc)
    finally:
        for r in results:
            for suffix in (".bin", ".oof.npz"):
                artifacts.remove(root=root, relpath=_scratch(run_id, r["chunk"], suffix))
        artifacts.remove_empty_folder(root=root, relpath=f"_runs/{int(run_id)}")
        _add_cpu(run_id, cpu_seconds_now() - cpu0)
        if _part_done(run_id, "prophet"):
            _finalize(run_id)


def fail_prophet_part(*, run_id: int, error: str) -> None:
    """Chord error callback body: record the failure; close the run if the main part is done."""
    _record_failure(run_id, "learner prophet_forecaster (chunks)", RuntimeError(error))
    if _part_done(run_id, "prophet"):
        _finalize(run_id)


# --------------------------------------------------------------------------------------------------
# ensemble and the end of a run


def _member_versions(run: TrainingRun, names: Sequence[str]) -> list[ModelVersion]:
    """Each member's version from this run, else its active one, else its newest one."""
    found = []
    from_run = {v.model.name: v for v in run.model_versions.select_related("model")}
    for name in names:
        version = from_run.get(name) or active_version(model_name=name) or latest_version(model_name=name)
        if version is not None and version.oof_path:
            found.append(version)
    return found


@dataclass
class EnsembleEvaluation:
    names: list[str]
    stacked: pd.DataFrame
    labels: pd.DataFrame
    wf: WalkForward
    splits: list[Split]
    folds: list[dict[str, Any]]
    table: pd.DataFrame
    summary: dict[str, Any]


def evaluate_ensemble(tables: dict[str, pd.DataFrame], *, horizon: int, wf_members: WalkForward,
                      config: dict[str, Any]) -> EnsembleEvaluation:
    """Walk-forward evaluation of the stack on its members' out-of-fold predictions (only)."""
    from training.learners.ensemble import EnsembleLearner, stack_oof

    names = list(tables)
    labels = tables[names[0]].drop(columns=["expected_return", "prob_up", "confidence", "fold"])
    stacked = stack_oof(tables, labels=labels.rename(columns={"realized": f"fwd_ret_{horizon}",
                                                               "next_return": "fwd_ret_1"}))
    stacked = stacked.dropna(subset=names, how="any").reset_index(drop=True)
    dates = np.unique(stacked["date"].to_numpy())
    wf = ensemble_walk_forward(len(dates), wf_members)
    splits = wf.splits(dates, horizon=horizon)
    folds = describe_folds(splits, dates, horizon=horizon)
    result = evaluate_walk_forward(
        lambda: EnsembleLearner.from_config({**config, "members": names}), stacked, feature_columns=names,
        horizon=horizon, splits=splits, baselines=False,
    )
    table = oof_table(result.oof, labels)
    stats = {f.split["fold"]: {"n_train_rows": f.n_train_rows, "weights": f.fit_extra.get("weights")}
             for f in result.folds}
    summary = summarize_oof(table, horizon=horizon, folds=[{**f, **stats.get(f["fold"], {})} for f in folds])
    return EnsembleEvaluation(names=names, stacked=stacked, labels=labels, wf=wf, splits=splits, folds=folds,
                              table=table, summary=summary)


def _train_ensemble(run: TrainingRun) -> ModelVersion | None:
    from training.learners.ensemble import EnsembleLearner

    run_id = run.pk
    horizon = int(run.options["horizon"])
    config = model_config(ENSEMBLE)
    wanted = [m for m in (config.get("members") or BASE_LEARNERS) if m in BASE_LEARNERS]
    members = _member_versions(run, wanted)
    if len(members) < 2:
        _append_log(run_id, f"ensemble skipped: needs two members with out-of-sample predictions, found "
                            f"{', '.join(version_label(m) for m in members) or 'none'}")
        return None
    if run.options.get("evaluation") == "auto":
        plan = _recorded(run_id, ENSEMBLE, _plan_ensemble(members, config=config))
        if plan.action == "keep":
            return None
        if plan.action == "refit":
            return _restack_ensemble(run, members=members, source=plan.source)
    cpu0, wall0 = cpu_seconds_now(), time.perf_counter()
    with stage(run_id, "evaluate:ensemble", members=", ".join(version_label(m) for m in members)) as rec:
        tables = {m.model.name: registry_services.load_oof(version=m) for m in members}
        ev = evaluate_ensemble(tables, horizon=horizon, wf_members=WalkForward(**run.options["walk_forward"]),
                               config=config)
        rec.counts.update(stacked_rows=int(len(ev.stacked)), folds=len(ev.splits),
                          rank_ic=_rounded(ev.summary["metrics"]["rank_ic"]))
    with stage(run_id, "fit:ensemble") as rec:
        learner = EnsembleLearner.from_config({**config, "members": ev.names})
        report = learner.fit(ev.stacked, feature_columns=ev.names, horizon=horizon)
        rec.counts.update(n_samples=report.n_samples, weights=report.extra.get("weights"))
    data_hash = frame_hash(ev.stacked, ["ticker", "date", *ev.names, f"fwd_ret_{horizon}"])
    dates = ev.stacked["date"]
    ctx = _Context(
        run=run, horizon=horizon, wf=ev.wf, frame=ev.stacked, feature_columns=ev.names,
        feature_set_version=members[0].feature_set_version, n_tickers=int(ev.stacked["ticker"].nunique()),
        labels=ev.labels, splits=ev.splits, folds=ev.folds, data_hash=data_hash, drift={},
        train_start=pd.Timestamp(dates.min()).date(), train_end=pd.Timestamp(dates.max()).date(),
        data_sources=[{"out_of_fold_predictions": [version_label(m) for m in members]}],
    )
    drift = {**profile_build(ev.stacked, ev.names), "start": str(ctx.train_start), "end": str(ctx.train_end)}
    return _register_and_gate(ctx, ENSEMBLE, learner=learner, table=ev.table, summary=ev.summary,
                              columns=ev.names, cpu=cpu_seconds_now() - cpu0, wall=time.perf_counter() - wall0,
                              extra={"weights": report.extra.get("weights")}, members=members,
                              data_hash=data_hash, drift=drift, wf=ev.wf)


def _plan_ensemble(members: Sequence[ModelVersion], *, config: dict[str, Any]) -> LearnerPlan:
    """The stack is fitted on its members' out-of-fold tables only: while every member carries the
    evaluation the active stack was fitted on, restacking would reproduce it, so the active stack is
    re-registered over the members' refits (or kept, when no member changed)."""
    from training.learners.ensemble import EnsembleLearner

    active = active_version(model_name=ENSEMBLE)
    if active is None:
        return LearnerPlan("evaluate", "no active ensemble")
    source = ModelVersion.objects.select_related("model").get(pk=evaluation_source_id(version=active))
    label = version_label(source)
    params = EnsembleLearner.from_config({**config, "members": [m.model.name for m in members]}).params
    if not registry_services.same_hyperparameters(source.hyperparameters, params):
        return LearnerPlan("evaluate", f"the stack's configuration or members changed since {label}")
    evaluated = {m.model.name: evaluation_source_id(version=m) for m in source.members.select_related("model")}
    if {m.model.name: evaluation_source_id(version=m) for m in members} != evaluated:
        return LearnerPlan("evaluate", f"a member was re-evaluated since {label} was stacked")
    if {m.pk for m in members} == set(active.members.values_list("pk", flat=True)):
        return LearnerPlan("keep", f"{version_label(active)} kept: its members are unchanged")
    return LearnerPlan("refit", f"{label}'s stack over the members' refits", source)


def _restack_ensemble(run: TrainingRun, *, members: Sequence[ModelVersion], source: ModelVersion) -> ModelVersion:
    wall0, cpu0 = time.perf_counter(), cpu_seconds_now()
    with stage(run.pk, f"fit:{ENSEMBLE}", refit_of=version_label(source),
               members=", ".join(version_label(m) for m in members)):
        learner = registry_services.load_version(version=source)
    ctx = _Context(
        run=run, horizon=source.horizon_days, wf=WalkForward(**source.evaluation["walk_forward"]), frame=None,
        feature_columns=list(source.feature_columns), feature_set_version=members[0].feature_set_version,
        n_tickers=source.tickers, labels=None, splits=[], folds=[], data_hash=source.training_data_hash, drift={},
        train_start=source.train_start, train_end=source.train_end, data_sources=list(source.data_sources or []),
    )
    return _register_and_gate(ctx, ENSEMBLE, learner=learner, table=registry_services.load_oof(version=source),
                              summary=_carried_summary(source), columns=ctx.feature_columns,
                              cpu=cpu_seconds_now() - cpu0, wall=time.perf_counter() - wall0,
                              extra={"weights": (source.evaluation.get("final_fit") or {}).get("weights")},
                              members=members, drift=dict(source.drift_reference or {}), carried_from=source)


def _finalize(run_id: int) -> None:
    """Stack the ensemble (if asked), then cost, CostRecord and the final status."""
    cpu0 = cpu_seconds_now()
    run = TrainingRun.objects.get(pk=run_id)
    if run.status in STOPPED:  # stopped by the orchestrator: no ensemble, and its status stays
        _append_log(run_id, f"run {run.status} before its parts finished; nothing more registered")
        return
    if ENSEMBLE in run.model_names and run.options.get("folds"):
        try:
            _train_ensemble(run)
        except Exception as exc:  # noqa: BLE001 - recorded on the run
            _record_failure(run_id, "learner ensemble", exc)
    _add_cpu(run_id, cpu_seconds_now() - cpu0)
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
    _append_log(run_id, f"run {run.status}: {run.cpu_seconds:.1f} CPU s, ${cost} at ${rate}/CPU-hour; "
                        f"versions: {', '.join(registered) or 'none'}")


def run_summary(run: TrainingRun) -> dict[str, Any]:
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


# --------------------------------------------------------------------------------------------------
# evaluation report (nothing is registered)

# (key of ``training.report.report_row``, column label); ``{cost_bps:g}`` is the report's cost a side
REPORT_COLUMNS = (
    ("ic", "IC"),
    ("icir", "ICIR"),
    ("rank_ic", "Rank IC"),
    ("rank_icir", "Rank ICIR"),
    ("rank_ic_t", "Rank IC t"),
    ("annual_return", "Ann. return (net, {cost_bps:g} bps)"),
    ("information_ratio", "IR"),
    ("turnover", "Turnover"),
    ("max_drawdown", "Max DD"),
)


def evaluation_report(
    *,
    start: Any = None,
    end: Any = None,
    tickers: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    splits: Sequence[Split] | None = None,
    folds: int | None = None,
    test_days: int | None = None,
    min_train_days: int | None = None,
    yearly: bool = False,
    cost_bps: float | None = None,
    horizon: int | None = None,
    hold_days: int = 1,
    member_predictions: Mapping[str, pd.DataFrame] | None = None,
    on_predictions: Callable[[str, pd.DataFrame], None] | None = None,
) -> dict[str, Any]:
    """Walk-forward evaluation of every learner, the ensemble and the baselines on one frame.

    Every row of the table is scored on the same out-of-sample rows: those the ensemble scored
    (its first member fold only trains the stack), which all members and baselines scored too.

    The folds: ``splits`` when given (over the frame's dates); else with ``yearly=True`` one fold per
    calendar year, each refitted on all earlier dates (``training.evaluation.yearly_splits``); else
    ``folds`` folds of ``test_days`` dates. ``folds``, ``test_days`` and ``min_train_days`` override
    ``ML_WALK_FORWARD_FOLDS``/``_TEST_DAYS``/``_MIN_TRAIN_DAYS``; the purge gap is
    ``ML_WALK_FORWARD_GAP_DAYS`` (at least the horizon). ``cost_bps``: the long-short book's cost
    per side traded (``training.report.decile_book``, default 10). ``horizon``: the label's trading
    days (default ``training.horizon_days``). ``member_predictions``: a learner's out-of-sample
    predictions (``ticker, date, expected_return, prob_up, confidence, fold``) from an earlier report
    over the same folds, used instead of training it again (e.g. to re-stack the ensemble);
    ``on_predictions(name, table)`` receives each learner's and the ensemble's predictions.
    """
    if splits is not None and yearly:
        raise ValueError("pass either splits or yearly=True, not both")
    say = progress or (lambda _msg: None)
    names = [n for n in resolve_models(models) if n in BASE_LEARNERS]
    horizon = horizon_days() if horizon is None else int(horizon)
    env_wf = WalkForward.from_env(horizon=horizon)
    wf = WalkForward(
        n_folds=env_wf.n_folds if folds is None else int(folds),
        test_days=env_wf.test_days if test_days is None else int(test_days),
        min_train_days=env_wf.min_train_days if min_train_days is None else int(min_train_days),
        gap_days=env_wf.gap_days,
    )
    data = selectors.load_training_frame(tickers=list(tickers) if tickers else None, start=start, end=end,
                                         horizon=horizon)
    frame = data.frame
    if frame.empty:
        raise selectors.NoTrainingData("the feature store returned no rows for the report's window")
    frame = with_cross_sectional_targets(frame, horizon)
    dates = np.unique(frame["date"].to_numpy())
    if splits is not None:
        protocol, splits = "given", list(splits)
    elif yearly:
        protocol = "yearly"
        splits = yearly_splits(dates, horizon=horizon, gap_days=wf.gap_days, min_train_days=wf.min_train_days)
    else:
        protocol, splits = "folds", wf.splits(dates, horizon=horizon)
    fold_windows = describe_folds(splits, dates, horizon=horizon)
    wf_members = wf
    if protocol != "folds":
        # The ensemble stacks on its members' out-of-fold dates (ensemble_walk_forward): equal folds
        # over the members' later folds, so its first member fold (year) only trains the stack.
        lengths = [len(s.test_dates) for s in splits]
        per_fold = sum(lengths[1:]) // (len(splits) - 1) if len(splits) > 1 else lengths[0]
        wf_members = WalkForward(n_folds=len(splits), test_days=max(1, per_fold),
                                 min_train_days=len(splits[0].train_dates),
                                 gap_days=min(s.gap_days for s in splits))
    labels = label_table(frame, horizon=horizon)
    shape = (f"{len(splits)} yearly folds {fold_windows[0]['test_start'][:4]}..{fold_windows[-1]['test_end'][:4]}"
             if protocol == "yearly" else f"{len(splits)} folds of {wf.test_days} days" if protocol == "folds"
             else f"{len(splits)} given folds")
    say(f"{frame['ticker'].nunique()} tickers, {len(dates)} dates, {len(frame):,} rows; "
        f"{shape}, gap {wf.gap_days}")
    tables: dict[str, pd.DataFrame] = {}
    seconds: dict[str, float] = {}
    max_rows = _env_int("ML_LSTM_MAX_TRAIN_ROWS", LSTM_MAX_TRAIN_ROWS)
    test_dates = np.unique(np.concatenate([np.asarray(s.test_dates) for s in splits]))
    for name in names:
        started = time.perf_counter()
        if member_predictions and name in member_predictions:
            tables[name] = _reused_predictions(name, member_predictions[name], labels, test_dates)
            say(f"{name}: {len(tables[name]):,} out-of-sample predictions reused")
        elif name == "prophet_forecaster":
            parts = []
            chunks = chunked(sorted(frame["ticker"].unique()), _env_int("ML_PROPHET_CHUNK_TICKERS", 50))
            for i, part in enumerate(chunks, start=1):
                sub = frame.loc[frame["ticker"].isin(part)]
                parts.append(fit_prophet_chunk(frame=sub, splits=splits, horizon=horizon, final_fit=False).table)
                elapsed = time.perf_counter() - started
                say(f"{name} chunk {i}/{len(chunks)}: {len(part)} tickers x {len(splits)} folds, {elapsed:.0f}s so far "
                    f"({sum(len(c) for c in chunks[:i]) / max(elapsed, 1e-9):.2f} tickers/s)")
            tables[name] = pd.concat(parts, ignore_index=True)
        else:
            result = evaluate_walk_forward(_make_learner(name, max_rows=max_rows), frame,
                                           feature_columns=data.feature_columns, horizon=horizon, splits=splits,
                                           baselines=False, progress=say)
            tables[name] = oof_table(result.oof, labels)
        seconds[name] = time.perf_counter() - started
        say(f"{name}: evaluated in {seconds[name]:.1f}s")
        if on_predictions is not None:
            on_predictions(name, tables[name])
    rows: dict[str, pd.DataFrame] = dict(tables)
    if len(tables) >= 2 and (models is None or ENSEMBLE in models):
        started = time.perf_counter()
        ev = evaluate_ensemble(tables, horizon=horizon, wf_members=wf_members, config=model_config(ENSEMBLE))
        rows[ENSEMBLE] = ev.table
        seconds[ENSEMBLE] = time.perf_counter() - started
        say(f"ensemble: evaluated in {seconds[ENSEMBLE]:.1f}s")
        if on_predictions is not None:
            on_predictions(ENSEMBLE, ev.table)
    walk_forward = {**asdict(wf), "protocol": protocol, "n_folds": len(splits)}
    if protocol != "folds":
        walk_forward["test_days"] = None
    return report_from_tables(rows, horizon=horizon, cost_bps=cost_bps, hold_days=hold_days, extra={
        "tickers": int(frame["ticker"].nunique()), "rows": int(len(frame)), "seconds": seconds,
        "walk_forward": walk_forward, "folds": fold_windows,
        "data_start": _iso(dates[0]), "data_end": _iso(dates[-1]),
    })


PREDICTION_COLUMNS = ["ticker", "date", "expected_return", "prob_up", "confidence", "fold"]


def _reused_predictions(name: str, saved: pd.DataFrame, labels: pd.DataFrame, test_dates: np.ndarray) -> pd.DataFrame:
    """An earlier report's predictions of ``name`` joined to this report's labels; refused unless
    they cover exactly this report's test dates (other folds would mix protocols in one table)."""
    missing = [c for c in PREDICTION_COLUMNS if c not in saved.columns]
    if missing:
        raise ValueError(f"saved predictions of {name} lack columns {missing}")
    saved_dates = np.unique(pd.to_datetime(saved["date"]).to_numpy())
    if len(saved_dates) != len(test_dates) or not np.array_equal(saved_dates, test_dates.astype(saved_dates.dtype)):
        raise ValueError(f"saved predictions of {name} cover {len(saved_dates)} dates, this report's folds "
                         f"test {len(test_dates)}: run both with the same window, folds and horizon")
    return oof_table(saved, labels)


def report_from_tables(tables: dict[str, pd.DataFrame], *, horizon: int,
                       extra: dict[str, Any] | None = None, cost_bps: float | None = None,
                       hold_days: int = 1) -> dict[str, Any]:
    """Metrics of each model and of the baselines on the rows every table scored.

    ``models``/``baselines``: ``metric_on_rows`` of each (``METRIC_KEYS``); ``protocol``: the
    benchmark protocol's numbers of the same rows, ``{"models": {name: row}, "baselines": {name: row}}``
    with rows of ``training.report.report_row`` (the long-short book net of ``cost_bps`` a side,
    default 10, also returned as ``cost_bps``).
    """
    cost = DEFAULT_COST_BPS if cost_bps is None else float(cost_bps)
    keys = None
    for table in tables.values():
        scored = table.loc[np.isfinite(table["expected_return"].to_numpy(dtype=np.float64)), ["ticker", "date"]]
        keys = scored if keys is None else keys.merge(scored, on=["ticker", "date"], how="inner")
    assert keys is not None
    models: dict[str, Any] = {}
    protocol: dict[str, dict[str, Any]] = {"models": {}, "baselines": {}}
    common = None
    for name, table in tables.items():
        common = table.merge(keys, on=["ticker", "date"], how="inner")
        models[name] = metric_on_rows(common, horizon=horizon)
        protocol["models"][name] = report_row(common, horizon=horizon, cost_bps=cost, hold_days=hold_days)
    assert common is not None
    baselines = {}
    for b in BASELINE_NAMES:
        view = baseline_view(common, b)
        baselines[b] = metric_on_rows(view, horizon=horizon)
        protocol["baselines"][b] = report_row(view, horizon=horizon, cost_bps=cost, hold_days=hold_days)
    return jsonable({"horizon": horizon, "window": window_summary(common), "models": models,
                     "baselines": baselines, "protocol": protocol, "cost_bps": cost, "hold_days": int(hold_days),
                     **(extra or {})})


def format_report(report: dict[str, Any], *, markdown: bool = False) -> str:
    """The Qlib-style benchmark table (one row per learner, the ensemble and each baseline), then
    the mean daily rank IC of each calendar year."""
    cost = float(report.get("cost_bps", 10.0))
    protocol = report["protocol"]
    named_rows = [(name, row) for name, row in protocol["models"].items()] + [
        (f"baseline: {name}", row) for name, row in protocol["baselines"].items()
    ]

    def cell(key: str, value: Any) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "n/a"
        if key in ("annual_return", "max_drawdown"):
            return f"{value * 100:.2f}%"
        if key in ("ic", "rank_ic"):
            return f"{value:.4f}"
        return f"{value:.2f}" if key == "rank_ic_t" else f"{value:.3f}"

    def render(header: list[str], body: list[list[str]]) -> list[str]:
        if markdown:
            return ["| " + " | ".join(header) + " |",
                    "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |",
                    *["| " + " | ".join(row) + " |" for row in body]]
        widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
        return ["  ".join(v.ljust(widths[i]) if i == 0 else v.rjust(widths[i]) for i, v in enumerate(row))
                for row in [header, *body]]

    header = ["model", *[label.format(cost_bps=cost) for _, label in REPORT_COLUMNS]]
    body = [[name, *[cell(k, row.get(k)) for k, _ in REPORT_COLUMNS]] for name, row in named_rows]
    years = sorted({str(y) for _, row in named_rows for y in (row.get("per_year") or {})}, key=int)
    year_body = [[name, *[cell("rank_ic", (row.get("per_year") or {}).get(y)) for y in years]]
                 for name, row in named_rows]

    w = report["window"]
    title = (f"Walk-forward out of sample, {w['start']}..{w['end']} ({w['dates']} dates, {w['rows']:,} rows), "
             f"{report.get('tickers', '?')} tickers, horizon {report['horizon']} days")
    wf = report.get("walk_forward") or {}
    if wf.get("protocol") == "yearly":
        title += f"; one fold per calendar year, refitted on all earlier dates, gap {wf['gap_days']}"
    elif wf.get("protocol") == "folds":
        title += f"; {wf['n_folds']} folds of {wf['test_days']} days, gap {wf['gap_days']}"
    elif wf.get("protocol"):
        title += f"; {wf['n_folds']} given folds"
    hold = int(report.get("hold_days", 1))
    held = "daily, held one day" if hold == 1 else f"rebalanced every {hold} trading days"
    note = (f"Long-short book: top-minus-bottom decile, {held}, {cost:g} bps a side; Rank IC t adjusted for "
            "overlapping labels; turnover per day (1 = one leg replaced).")
    sep = [""] if markdown else []
    return "\n".join([title, *sep, *render(header, body), "", note, "", "Rank IC by year", *sep,
                      *render(["model", *years], year_body)])
