"""One learner's training in a run: the context the run's stages share (the training frame, its
hash, the walk-forward folds, the drift reference), the walk-forward evaluation of a frame-based
learner (XGBoost, LSTM), its final fit on every labelled row, and the registration and promotion
gate every learner's new version goes through.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from django.db import transaction

from features.common import jsonable
from features.profile import profile_build
from registry import services as registry_services
from registry.models import ModelVersion
from registry.selectors import version_label
from training import selectors
from training.config import cpu_hour_usd, horizon_days, model_config, target_for
from training.evaluation import Split, evaluate_walk_forward
from training.learners import Learner, build_learner
from training.learners.base import with_cross_sectional_targets
from training.learners.sampling import SampledFit
from training.models import TrainingRun
from training.runs import append_log, cpu_seconds_now, rounded, stage
from training.walk_forward import (
    WalkForward,
    describe_folds,
    frame_hash,
    iso_date,
    label_table,
    oof_table,
    summarize_oof,
)

PIPELINE_ACTOR = "training pipeline"


@dataclass
class RunContext:
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
    evaluation_tickers: frozenset[str] | None = None  # the walk-forward's sample (None: every ticker)

    def evaluation_frame(self) -> pd.DataFrame:
        """The rows the walk-forward evaluates on (the final fit uses every row)."""
        frame = self.frame
        if self.evaluation_tickers is None or frame is None:
            return frame
        return frame.loc[frame["ticker"].isin(self.evaluation_tickers)].reset_index(drop=True)


def prepare(run: TrainingRun) -> RunContext:
    """The ``load_frame`` and ``prepare`` stages: the run's frame, folds, labels and drift reference,
    also recorded in ``run.options`` for the parts that run elsewhere."""
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
        drift.update(start=iso_date(dates[0]), end=iso_date(dates[-1]))
        labels = label_table(frame, horizon=horizon)
        sample = wf.evaluation_tickers(frame["ticker"].unique())
        rec.counts.update(data_hash=data_hash[:12], folds=len(splits), gap_days=wf.gap_days,
                          labelled_rows=int(len(labelled)),
                          evaluation_tickers=int(frame["ticker"].nunique()) if sample is None else len(sample))
    fsv = data.feature_set_version if getattr(data.feature_set_version, "pk", None) else None
    ctx = RunContext(
        run=run, horizon=horizon, wf=wf, frame=frame, feature_columns=list(data.feature_columns),
        feature_set_version=fsv, n_tickers=int(frame["ticker"].nunique()), labels=labels, splits=splits,
        folds=folds, data_hash=data_hash, drift=drift,
        train_start=pd.Timestamp(labelled.min()).date() if len(labelled) else None,
        train_end=pd.Timestamp(labelled.max()).date() if len(labelled) else None,
        data_sources=[{"feature_store": str(fsv) if fsv is not None else "training frame",
                       "tickers": int(frame["ticker"].nunique()), "rows": int(len(frame))}],
        evaluation_tickers=sample,
    )
    options = dict(run.options)
    options.update(
        window={"start": iso_date(dates[0]), "end": iso_date(dates[-1])},
        train_window={"start": str(ctx.train_start), "end": str(ctx.train_end)},
        folds=folds, data_hash=data_hash, feature_columns=ctx.feature_columns,
        feature_set_version=getattr(fsv, "pk", None), n_tickers=ctx.n_tickers, data_sources=ctx.data_sources,
        prophet_drift=drift_for(ctx, []),
        evaluation_tickers=None if sample is None else sorted(sample),
    )
    run.options = jsonable(options)
    TrainingRun.objects.filter(pk=run.pk).update(options=run.options, feature_set_version=fsv)
    return ctx


def feature_columns_for(name: str, learner: Learner, columns: list[str]) -> list[str]:
    """The feature columns ``learner`` reads of the run's ``columns``."""
    if name == "lstm_predictor":
        return columns[: int(getattr(learner, "params", {}).get("features", len(columns)))]
    if name == "prophet_forecaster":
        return []
    return list(columns)


def drift_for(ctx: RunContext, columns: list[str]) -> dict[str, Any]:
    """The run's drift reference for ``columns`` (Prophet, without columns: the log return)."""
    wanted = columns or ["log_return_1"]
    return {**{k: v for k, v in ctx.drift.items() if k != "features"},
            "features": {c: ctx.drift["features"][c] for c in wanted if c in ctx.drift["features"]}}


def make_learner(name: str, *, max_rows: int) -> Callable[[], Any]:
    """A factory of fresh ``name`` learners; the LSTM fits on a sample of ``max_rows`` (0: all)."""
    config = model_config(name)

    def make() -> Any:
        learner = build_learner(name, config)
        if name == "lstm_predictor" and max_rows > 0:
            return SampledFit(learner, max_rows=max_rows, seed=int(config.get("seed", 42)))
        return learner

    return make


def train_learner(ctx: RunContext, name: str) -> ModelVersion:
    """Evaluate, fit, register and gate one of the frame-based learners (XGBoost, LSTM)."""
    run_id, horizon = ctx.run.pk, ctx.horizon
    columns = ctx.feature_columns
    make = make_learner(name, max_rows=int(ctx.run.options.get("lstm_max_train_rows", 0)))
    cpu0, wall0 = cpu_seconds_now(), time.perf_counter()
    with stage(run_id, f"evaluate:{name}") as rec:
        result = evaluate_walk_forward(make, ctx.evaluation_frame(), feature_columns=columns, horizon=horizon,
                                       splits=ctx.splits, baselines=False)
        table = oof_table(result.oof, ctx.labels)
        fold_stats = {f.split["fold"]: {"n_train_rows": f.n_train_rows, "fit_seconds": round(f.fit_seconds, 3)}
                      for f in result.folds}
        folds = [{**f, **fold_stats.get(f["fold"], {})} for f in ctx.folds]
        summary = summarize_oof(table, horizon=horizon, folds=folds)
        rec.counts.update(folds=len(result.folds), oof_rows=int(len(table)),
                          rank_ic=rounded(summary["metrics"]["rank_ic"]))
    learner, report = final_fit(ctx, name, make)
    return register_and_gate(ctx, name, learner=learner, table=table, summary=summary,
                             columns=feature_columns_for(name, learner, columns),
                             cpu=cpu_seconds_now() - cpu0, wall=time.perf_counter() - wall0,
                             extra=report.extra)


def final_fit(ctx: RunContext, name: str, make: Callable[[], Any], **counts: Any) -> tuple[Learner, Any]:
    """The model on every labelled row of the window (the ``fit:<learner>`` stage)."""
    with stage(ctx.run.pk, f"fit:{name}", **counts) as rec:
        learner = make()
        report = learner.fit(ctx.frame, feature_columns=ctx.feature_columns, horizon=ctx.horizon)
        rec.counts.update(n_samples=report.n_samples, **{k: v for k, v in report.extra.items()
                                                         if k in ("epochs_run", "best_epoch", "sampled_rows",
                                                                  "calibration", "n_validation")})
    return getattr(learner, "inner", learner), report


def register_and_gate(ctx: RunContext, name: str, *, learner: Learner, table: pd.DataFrame, summary: dict[str, Any],
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
                "evaluated_tickers": int(table["ticker"].nunique()),
                **carried,
            },
            tickers=ctx.n_tickers,
            data_sources=ctx.data_sources,
            drift_reference=drift if drift is not None else drift_for(ctx, columns),
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
        append_log(run_id, decision.reason)
    return version


def _set_run_metrics(run_id: int, name: str, metrics: dict[str, Any]) -> None:
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        run.metrics = {**(run.metrics or {}), name: jsonable(metrics)}
        run.save(update_fields=["metrics"])
