"""The ensemble in a training run: stacked on its members' out-of-fold predictions only, evaluated
walk-forward over their dates (``training.walk_forward.evaluate_ensemble``), fitted, registered
and gated; in the daily plan kept, or re-registered over its members' refits.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pandas as pd

from features.profile import profile_build
from registry import services as registry_services
from registry.models import ModelVersion
from registry.selectors import (
    active_version,
    evaluation_source_id,
    latest_version,
    load_oof,
    load_version,
    version_label,
)
from training.config import BASE_LEARNERS, ENSEMBLE, model_config
from training.daily_plan import LearnerPlan, carried_summary, record_plan
from training.fitting import RunContext, register_and_gate
from training.learners.ensemble import EnsembleLearner
from training.models import TrainingRun
from training.runs import append_log, cpu_seconds_now, rounded, stage
from training.walk_forward import WalkForward, evaluate_ensemble, frame_hash


def _member_versions(run: TrainingRun, names: Sequence[str]) -> list[ModelVersion]:
    """Each member's version from this run, else its active one, else its newest one."""
    found = []
    from_run = {v.model.name: v for v in run.model_versions.select_related("model")}
    for name in names:
        version = from_run.get(name) or active_version(model_name=name) or latest_version(model_name=name)
        if version is not None and version.oof_path:
            found.append(version)
    return found


def train_ensemble(run: TrainingRun) -> ModelVersion | None:
    """Stack, register and gate the run's ensemble; None when it is skipped (fewer than two members
    with out-of-sample predictions) or kept (the daily plan)."""
    run_id = run.pk
    horizon = int(run.options["horizon"])
    config = model_config(ENSEMBLE)
    wanted = [m for m in (config.get("members") or BASE_LEARNERS) if m in BASE_LEARNERS]
    members = _member_versions(run, wanted)
    if len(members) < 2:
        append_log(run_id, f"ensemble skipped: needs two members with out-of-sample predictions, found "
                           f"{', '.join(version_label(m) for m in members) or 'none'}")
        return None
    if run.options.get("evaluation") == "auto":
        plan = record_plan(run_id, ENSEMBLE, _plan_ensemble(members, config=config))
        if plan.action == "keep":
            return None
        if plan.action == "refit":
            return _restack_ensemble(run, members=members, source=plan.source)
    cpu0, wall0 = cpu_seconds_now(), time.perf_counter()
    with stage(run_id, "evaluate:ensemble", members=", ".join(version_label(m) for m in members)) as rec:
        tables = {m.model.name: load_oof(version=m) for m in members}
        ev = evaluate_ensemble(tables, horizon=horizon, wf_members=WalkForward(**run.options["walk_forward"]),
                               config=config)
        rec.counts.update(stacked_rows=int(len(ev.stacked)), folds=len(ev.splits),
                          rank_ic=rounded(ev.summary["metrics"]["rank_ic"]))
    with stage(run_id, "fit:ensemble") as rec:
        learner = EnsembleLearner.from_config({**config, "members": ev.names})
        report = learner.fit(ev.stacked, feature_columns=ev.names, horizon=horizon)
        rec.counts.update(n_samples=report.n_samples, weights=report.extra.get("weights"))
    data_hash = frame_hash(ev.stacked, ["ticker", "date", *ev.names, f"fwd_ret_{horizon}"])
    dates = ev.stacked["date"]
    ctx = RunContext(
        run=run, horizon=horizon, wf=ev.wf, frame=ev.stacked, feature_columns=ev.names,
        feature_set_version=members[0].feature_set_version, n_tickers=int(ev.stacked["ticker"].nunique()),
        labels=ev.labels, splits=ev.splits, folds=ev.folds, data_hash=data_hash, drift={},
        train_start=pd.Timestamp(dates.min()).date(), train_end=pd.Timestamp(dates.max()).date(),
        data_sources=[{"out_of_fold_predictions": [version_label(m) for m in members]}],
    )
    drift = {**profile_build(ev.stacked, ev.names), "start": str(ctx.train_start), "end": str(ctx.train_end)}
    return register_and_gate(ctx, ENSEMBLE, learner=learner, table=ev.table, summary=ev.summary,
                             columns=ev.names, cpu=cpu_seconds_now() - cpu0, wall=time.perf_counter() - wall0,
                             extra={"weights": report.extra.get("weights")}, members=members,
                             data_hash=data_hash, drift=drift, wf=ev.wf)


def _plan_ensemble(members: Sequence[ModelVersion], *, config: dict[str, Any]) -> LearnerPlan:
    """The stack is fitted on its members' out-of-fold tables only: while every member carries the
    evaluation the active stack was fitted on, restacking would reproduce it, so the active stack is
    re-registered over the members' refits (or kept, when no member changed)."""
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
        learner = load_version(version=source)
    ctx = RunContext(
        run=run, horizon=source.horizon_days, wf=WalkForward(**source.evaluation["walk_forward"]), frame=None,
        feature_columns=list(source.feature_columns), feature_set_version=members[0].feature_set_version,
        n_tickers=source.tickers, labels=None, splits=[], folds=[], data_hash=source.training_data_hash, drift={},
        train_start=source.train_start, train_end=source.train_end, data_sources=list(source.data_sources or []),
    )
    return register_and_gate(ctx, ENSEMBLE, learner=learner, table=load_oof(version=source),
                             summary=carried_summary(source), columns=ctx.feature_columns,
                             cpu=cpu_seconds_now() - cpu0, wall=time.perf_counter() - wall0,
                             extra={"weights": (source.evaluation.get("final_fit") or {}).get("weights")},
                             members=members, drift=dict(source.drift_reference or {}), carried_from=source)
