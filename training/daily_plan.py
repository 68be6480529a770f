"""The daily plan: evaluate weekly, refit daily.

The walk-forward evaluation (3 folds: 3 fits per learner, plus Prophet's per-ticker fits) is most
of a run's cost, and one more day of data does not change what it measures: the skill of a
procedure (learner, hyperparameters, features, target). So with ``evaluation="auto"`` a learner is
re-evaluated when its last evaluation is ``training.reevaluate_every_trading_days`` old or its
procedure changed; in between, the procedure the gate accepted is refit on the newest data and
the refit carries the evaluation (``registry.promote_refit``); a procedure the gate rejected is
not refit until its next evaluation; Prophet (which forecasts ahead from its fit) is kept.
The ensemble's side of the plan is ``training.stacking``'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from django.conf import settings

from registry import services as registry_services
from registry.artifacts import ArtifactIntegrityError
from registry.models import ModelVersion
from registry.selectors import (
    active_version,
    evaluation_source_id,
    latest_evaluated_version,
    load_oof,
    load_version,
    version_label,
)
from training.config import model_config, reevaluate_every_trading_days, target_for
from training.fitting import RunContext, feature_columns_for, final_fit, make_learner, register_and_gate
from training.learners import build_learner
from training.runs import append_log, cpu_seconds_now, stage


@dataclass(frozen=True)
class LearnerPlan:
    action: str  # "evaluate" | "refit" | "keep"
    reason: str
    source: ModelVersion | None = None  # the evaluated version a refit carries the evaluation of


def plan_learner(ctx: RunContext, name: str) -> LearnerPlan:
    """Evaluate, refit or keep ``name`` in this run (recorded as a ``plan:<learner>`` stage in
    ``auto`` runs)."""
    if ctx.run.options.get("evaluation", "full") != "auto":
        return LearnerPlan("evaluate", "full evaluation requested")
    return record_plan(ctx.run.pk, name, _plan_auto(ctx, name))


def record_plan(run_id: int, name: str, plan: LearnerPlan) -> LearnerPlan:
    """``plan`` as the run's ``plan:<learner>`` stage and log line."""
    with stage(run_id, f"plan:{name}", action=plan.action, reason=plan.reason):
        pass
    append_log(run_id, f"{name}: {plan.action} ({plan.reason})")
    return plan


def _plan_auto(ctx: RunContext, name: str) -> LearnerPlan:
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


def _procedure_change(ctx: RunContext, name: str, source: ModelVersion) -> str:
    """What differs between ``source``'s evaluated procedure and this run's, or ''."""
    learner = build_learner(name, model_config(name))
    if source.horizon_days != ctx.horizon or source.target != target_for(name, ctx.horizon):
        return "the target"
    if source.feature_set_version_id != getattr(ctx.feature_set_version, "pk", None):
        return "the feature set version"
    if not registry_services.same_hyperparameters(source.hyperparameters, getattr(learner, "params", {})):
        return "the hyperparameters"
    if list(source.feature_columns or []) != feature_columns_for(name, learner, ctx.feature_columns):
        return "the feature columns"
    if (source.evaluation or {}).get("walk_forward") != asdict(ctx.wf):
        return "the walk-forward settings"
    return ""


def refit_learner(ctx: RunContext, name: str, *, source: ModelVersion) -> ModelVersion:
    """Fit ``source``'s procedure on this run's data and register it with ``source``'s evaluation."""
    cpu0, wall0 = cpu_seconds_now(), time.perf_counter()
    make = make_learner(name, max_rows=int(ctx.run.options.get("lstm_max_train_rows", 0)))
    counts = {"refit_of": version_label(source)}
    epochs = settings.PIPELINE_CONFIG.training.refit_warm_start_epochs
    active = active_version(model_name=name)
    if name == "lstm_predictor" and epochs > 0 and active is not None:
        warm = _warm_started(ctx, make, previous=active, epochs=epochs)
        if warm is not None:
            make, counts["warm_start_from"] = warm, version_label(active)
    learner, report = final_fit(ctx, name, make, **counts)
    return register_and_gate(ctx, name, learner=learner, table=load_oof(version=source),
                             summary=carried_summary(source), columns=list(source.feature_columns or []),
                             cpu=cpu_seconds_now() - cpu0, wall=time.perf_counter() - wall0,
                             extra=report.extra, carried_from=source)


def _warm_started(ctx: RunContext, make: Callable[[], Any], *, previous: ModelVersion,
                  epochs: int) -> Callable[[], Any] | None:
    """``make`` with each learner warm-started from ``previous``'s network (the active refit of the
    same procedure: same architecture and columns); None when that network cannot be loaded."""
    try:
        network = load_version(version=previous)
    except ArtifactIntegrityError as exc:  # the refit still runs, from scratch
        append_log(ctx.run.pk, f"lstm_predictor: no warm start ({exc}); fitting from scratch")
        return None
    append_log(ctx.run.pk, f"lstm_predictor: warm start from {version_label(previous)}, at most {epochs} epoch(s)")

    def warm() -> Any:
        learner = make()
        getattr(learner, "inner", learner).warm_start_from(network, epochs=epochs)
        return learner

    return warm


def carried_summary(source: ModelVersion) -> dict[str, Any]:
    """``source``'s evaluation in ``summarize_oof``'s shape, for a refit that carries it."""
    evaluation = source.evaluation or {}
    return {"metrics": dict(source.metrics or {}), "baselines": dict(source.baselines or {}),
            "folds": list(evaluation.get("folds") or []),
            "window": evaluation.get("window") or {"start": source.evaluation_start, "end": source.evaluation_end}}
