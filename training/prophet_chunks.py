"""Prophet in a training run, per chunk of tickers: fitted one chunk after the other in-process,
or dispatched as a Celery chord (``training.tasks``) whose chunks rebuild their context from what
the run recorded; the chunks' models and out-of-fold tables are combined into one version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from django.db import transaction

from features.common import chunked
from registry.models import ModelVersion
from registry.selectors import active_version, latest_version, load_version, version_label
from training import dispatch, selectors
from training.config import model_config
from training.evaluation import Split, evaluate_walk_forward
from training.fitting import RunContext, register_and_gate
from training.learners import build_learner
from training.models import TrainingRun
from training.runs import cpu_seconds_now, part_done, rounded, stage
from training.walk_forward import OOF_COLUMNS, WalkForward, label_table, oof_table, summarize_oof

logger = logging.getLogger(__name__)


@dataclass
class ProphetChunk:
    learner: Any  # ProphetLearner
    table: pd.DataFrame
    fold_stats: dict[int, dict[str, Any]]
    cpu_seconds: float


def previous_prophet() -> Any:
    """The newest Prophet version's learner, to warm-start from (None when there is none or it fails)."""
    version = active_version(model_name="prophet_forecaster") or latest_version(model_name="prophet_forecaster")
    if version is None:
        return None
    try:
        previous = load_version(version=version)
    except Exception as exc:  # noqa: BLE001 - a cold start is fine
        logger.warning("prophet warm start unavailable (%s): %s", version_label(version), exc)
        return None
    return previous if previous.params == build_learner("prophet_forecaster", model_config("prophet_forecaster")).params \
        else None


def fit_prophet_chunk(*, frame: pd.DataFrame, splits: Sequence[Split], horizon: int, warm_start: Any = None,
                      final_fit: bool = True, evaluate: frozenset[str] | None = None) -> ProphetChunk:
    """Walk-forward evaluation of Prophet for the tickers in ``frame`` (those in ``evaluate`` when
    given: the run's evaluation sample) and its final fit on all of them."""
    cpu0 = cpu_seconds_now()
    config = model_config("prophet_forecaster")
    fold_learners: list[Any] = []

    def make() -> Any:
        fold_learners.append(build_learner("prophet_forecaster", config))
        return fold_learners[-1]

    evaluated = frame if evaluate is None else frame.loc[frame["ticker"].isin(evaluate)]
    if evaluated.empty:  # none of this chunk's tickers is in the sample
        oof, folds = pd.DataFrame(columns=list(OOF_COLUMNS)), []
    else:
        result = evaluate_walk_forward(make, evaluated, feature_columns=[], horizon=horizon, splits=splits,
                                       warm_start=True, baselines=False)
        oof, folds = result.oof, result.folds
    table = oof_table(oof, label_table(evaluated, horizon=horizon))
    learner = build_learner("prophet_forecaster", config)
    if final_fit:
        # Warm start (initial values only; the fit still converges on all the data): the previous
        # registered version, else the last fold's model.
        learner.fit(frame, horizon=horizon, warm_start=warm_start or (fold_learners[-1] if fold_learners else None))
    stats = {f.split["fold"]: {"n_train_rows": f.n_train_rows, "fit_seconds": f.fit_seconds} for f in folds}
    return ProphetChunk(learner=learner, table=table, fold_stats=stats, cpu_seconds=cpu_seconds_now() - cpu0)


def combine_prophet(ctx: RunContext, chunks: Sequence[ProphetChunk], *, wall: float) -> ModelVersion:
    """Merge the chunks' models and out-of-fold tables into one version, registered and gated."""
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
                          rank_ic=rounded(summary["metrics"]["rank_ic"]))
    cpu = float(sum(c.cpu_seconds for c in chunks))
    return register_and_gate(ctx, name, learner=learner, table=table, summary=summary, columns=[], cpu=cpu,
                             wall=wall, extra={"chunks": len(chunks), "tickers": len(learner.tickers)})


def train_prophet_inprocess(ctx: RunContext) -> ModelVersion:
    """Every chunk one after the other in this process, then the combined version."""
    frame = ctx.frame
    tickers = sorted(frame["ticker"].unique())
    size = int(ctx.run.options.get("prophet_chunk_tickers", 50))
    wall0 = time.perf_counter()
    previous = previous_prophet()
    chunks = []
    for i, part in enumerate(chunked(tickers, size)):
        with stage(ctx.run.pk, f"chunk:prophet_forecaster[{i}]", tickers=len(part)) as rec:
            sub = frame.loc[frame["ticker"].isin(part)]
            chunk = fit_prophet_chunk(frame=sub, splits=ctx.splits, horizon=ctx.horizon, warm_start=previous,
                                      evaluate=ctx.evaluation_tickers)
            rec.counts.update(oof_rows=int(len(chunk.table)), warm_started=previous is not None)
            chunks.append(chunk)
    return combine_prophet(ctx, chunks, wall=time.perf_counter() - wall0)


def scratch_path(run_id: int, chunk: int, suffix: str) -> str:
    """Where a chunk task leaves its model or table for the merge, under ``ML_MODELS_PATH``."""
    return f"_runs/{int(run_id)}/prophet_{int(chunk)}{suffix}"


def dispatch_prophet(ctx: RunContext) -> None:
    """Start the chunks' chord; the run waits for its ``prophet`` part."""
    tickers = sorted(ctx.frame["ticker"].unique())
    parts = chunked(tickers, int(ctx.run.options.get("prophet_chunk_tickers", 50)))
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=ctx.run.pk)
        run.parts_pending = [*run.parts_pending, "prophet"]
        run.options = {**run.options, "prophet_started": time.time()}
        run.save(update_fields=["parts_pending", "options"])
    try:
        with stage(ctx.run.pk, "dispatch:prophet_forecaster", chunks=len(parts), tickers=len(tickers)) as rec:
            rec.counts["chord"] = dispatch.prophet_chunks_send(run_id=ctx.run.pk, chunks=parts)
    except Exception:
        part_done(ctx.run.pk, "prophet")  # nothing will report back
        raise


def context_from_options(run: TrainingRun, *, tickers: list[str] | None) -> RunContext:
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
    return RunContext(
        run=run, horizon=horizon, wf=WalkForward(**run.options["walk_forward"]), frame=frame,
        feature_columns=list(run.options.get("feature_columns", [])), feature_set_version=fsv,
        n_tickers=int(run.options.get("n_tickers", 0)), labels=None, splits=splits, folds=run.options["folds"],
        data_hash=run.options["data_hash"], drift=run.options.get("prophet_drift", {}),
        train_start=pd.Timestamp(train["start"]).date() if train.get("start") not in (None, "None") else None,
        train_end=pd.Timestamp(train["end"]).date() if train.get("end") not in (None, "None") else None,
        data_sources=run.options.get("data_sources", []),
        evaluation_tickers=(None if run.options.get("evaluation_tickers") is None
                            else frozenset(run.options["evaluation_tickers"])),
    )


def _dates_between(frame: pd.DataFrame, start: str, end: str) -> np.ndarray:
    dates = np.unique(frame["date"].to_numpy())
    return dates[(dates >= np.datetime64(start)) & (dates <= np.datetime64(end))]
