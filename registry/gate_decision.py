"""The promotion gate's decision for a version (reads only; ``registry.services.promote`` acts on it).

The gate (``force=True`` on ``promote`` skips it and records that it was forced):

1. **Threshold.** ``MODEL_PERFORMANCE_THRESHOLD`` (0.75) applies to a score in [0, 1] computed from
   the configured metric (``training.promotion_metric``, default ``rank_ic``) on the version's own
   walk-forward out-of-sample predictions. By default (``ML_PROMOTION_SCORE=confidence``) the score
   is the one-sided confidence that the metric shows skill: ``Phi(t / sqrt(h))`` with ``t`` the
   t-statistic of the daily series behind the metric (daily rank IC for ``rank_ic``), divided by
   ``sqrt(h)`` for overlapping ``h``-day labels. 0.75 means "the mean daily rank IC is about 0.67
   overlap-adjusted standard errors above zero". With ``ML_PROMOTION_SCORE=value`` the metric's
   value itself is compared with the threshold (for metrics already in [0, 1] such as accuracy or
   hit_rate; lower-is-better metrics must be at most the threshold).
2. **Beat the active version on the same out-of-sample window.** Each version stores its
   walk-forward out-of-sample predictions with their labels (``<id>.oof.npz``). The metric is
   computed for both versions on the rows (ticker, date) that both scored out of sample; the new
   version must be better by more than ``ML_PROMOTION_MIN_IMPROVEMENT`` (default 0). When fewer
   than ``ML_PROMOTION_MIN_COMMON_DATES`` (default 20) dates are shared, the active version is
   replayed instead: its artifact predicts the new version's out-of-sample rows dated more than
   ``h`` trading days after its own training window ended (rows it has never seen).

The statistics are ``registry.gate``'s (framework-free).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings

from features.common import jsonable
from registry import loaders
from registry.artifacts import ArtifactIntegrityError
from registry.gate import (
    LOWER_IS_BETTER,
    check_metric,
    common_window,
    daily_skill,
    is_better,
    metric_on_rows,
    skill_confidence,
    window_summary,
)
from registry.models import ModelVersion
from registry.selectors import active_version, load_oof, predict_version, version_label

logger = logging.getLogger("registry.services")


@dataclass
class GateDecision:
    passed: bool
    reason: str
    metric: str
    threshold: float
    score_kind: str
    score: float | None = None
    new_value: float | None = None
    active_value: float | None = None
    active_version: str | None = None
    window: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    forced: bool = False

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))


def gate_settings() -> dict[str, Any]:
    """The gate's knobs, read at each call (the pipeline config, ``MODEL_PERFORMANCE_THRESHOLD`` and the
    ``ML_PROMOTION_*`` settings)."""
    return {
        "metric": check_metric(settings.PIPELINE_CONFIG.training.promotion_metric),
        "threshold": float(settings.MODEL_PERFORMANCE_THRESHOLD),
        "score_kind": settings.ML_PROMOTION_SCORE,
        "min_improvement": settings.ML_PROMOTION_MIN_IMPROVEMENT,
        "min_common_dates": settings.ML_PROMOTION_MIN_COMMON_DATES,
    }


def _fmt(value: float | None) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.4g}"


def evaluate_gate(*, version: ModelVersion, active: ModelVersion | None = None) -> GateDecision:
    """Run the gate for ``version`` against ``active`` (the current active version when None)."""
    knobs = gate_settings()
    metric, threshold, kind = knobs["metric"], knobs["threshold"], knobs["score_kind"]
    label = version_label(version)
    if active is None:
        active = active_version(model_name=version.model.name)
    if active is not None and active.pk == version.pk:
        active = None
    decision = GateDecision(passed=False, reason="", metric=metric, threshold=threshold, score_kind=kind)
    try:
        oof = load_oof(version=version)
    except ArtifactIntegrityError as exc:
        decision.reason = f"{label} stays staging: its out-of-sample predictions cannot be trusted: {exc}"
        return decision
    if oof is None or oof.empty:
        decision.reason = (
            f"{label} stays staging: it has no stored out-of-sample predictions, so the gate cannot "
            "score it (retrain it, or promote with --force)"
        )
        return decision
    horizon = version.horizon_days
    own = metric_on_rows(oof, horizon=horizon)
    decision.details["own_metric"] = own[metric]
    if kind == "confidence":
        series, overlap = daily_skill(oof, metric=metric, horizon=horizon)
        stats = skill_confidence(series, overlap=overlap)
        decision.score = stats["confidence"]
        decision.details["skill"] = {**stats, "overlap": overlap}
        meets = decision.score >= threshold
        score_text = (
            f"{metric} skill confidence {_fmt(decision.score)} (mean daily value {_fmt(stats['mean'])} over "
            f"{int(stats['n_days'])} out-of-sample days, t={_fmt(stats['t'])} after the overlap adjustment)"
        )
    else:
        decision.score = own[metric]
        meets = (decision.score <= threshold) if metric in LOWER_IS_BETTER else (decision.score >= threshold)
        meets = meets and math.isfinite(decision.score)
        score_text = f"{metric} {_fmt(decision.score)} out of sample"
    if not meets:
        comparison = ">" if (kind == "value" and metric in LOWER_IS_BETTER) else "<"
        decision.reason = (
            f"{label} stays staging: {score_text} {comparison} MODEL_PERFORMANCE_THRESHOLD {threshold:g}"
        )
        return decision
    if active is None:
        decision.passed = True
        decision.new_value = own[metric]
        decision.window = window_summary(oof)
        decision.reason = f"{label} passed the gate: {score_text} >= {threshold:g}; no active version to beat"
        return decision

    active_label = version_label(active)
    decision.active_version = active_label
    rows, method = _comparison_rows(new_oof=oof, active=active, horizon=horizon,
                                    min_dates=knobs["min_common_dates"])
    if rows is None:
        decision.reason = (
            f"{label} stays staging: no common out-of-sample window with the active {active_label} "
            f"(fewer than {knobs['min_common_dates']} shared dates, and the active version could not be "
            "replayed on the new window); promote with --force after checking by hand"
        )
        decision.window = {"method": method}
        return decision
    new_value = metric_on_rows(rows, horizon=horizon)[metric]
    old_value = metric_on_rows(rows, horizon=horizon, prediction="old_expected_return",
                               probability="old_prob_up")[metric]
    decision.new_value, decision.active_value = new_value, old_value
    decision.window = {"method": method, **window_summary(rows)}
    where = (
        f"on the same out-of-sample window {decision.window['start']}..{decision.window['end']} "
        f"({decision.window['rows']:,} rows, {decision.window['dates']} dates, {method.replace('_', ' ')})"
    )
    if is_better(new_value, old_value, metric=metric, margin=knobs["min_improvement"]):
        decision.passed = True
        decision.reason = (
            f"{label} passed the gate: {metric} {_fmt(new_value)} vs {_fmt(old_value)} for the active "
            f"{active_label} {where}; {score_text} >= {threshold:g}"
        )
    else:
        margin = f" by more than {knobs['min_improvement']:g}" if knobs["min_improvement"] else ""
        decision.reason = (
            f"{label} stays staging: {metric} {_fmt(new_value)} does not beat {_fmt(old_value)}{margin} "
            f"for the active {active_label} {where}"
        )
    return decision


def _comparison_rows(*, new_oof: pd.DataFrame, active: ModelVersion, horizon: int,
                     min_dates: int) -> tuple[pd.DataFrame | None, str]:
    try:
        old_oof = load_oof(version=active)
    except ArtifactIntegrityError as exc:
        logger.warning("%s; replaying the active version instead", exc)
        old_oof = None
    if old_oof is not None:
        rows = common_window(new_oof, old_oof)
        if rows["date"].nunique() >= min_dates:
            return rows, "common_oof"
    try:
        rows = _replay(new_oof=new_oof, active=active, horizon=horizon)
    except Exception as exc:  # noqa: BLE001 - reported in the gate's reason
        logger.warning("could not replay %s on the new window: %s", version_label(active), exc)
        return None, f"replay failed: {exc}"
    if rows is None or rows["date"].nunique() < min_dates:
        return None, "no_common_window"
    return rows, "replay_active"


def _replay(*, new_oof: pd.DataFrame, active: ModelVersion, horizon: int) -> pd.DataFrame | None:
    """The new version's out-of-sample rows the active version never saw, scored by the active one."""
    if active.train_end is None:
        return None
    cutoff = np.busday_offset(np.datetime64(active.train_end, "D"), horizon, roll="forward")
    dates = pd.to_datetime(new_oof["date"]).to_numpy().astype("datetime64[D]")
    rows = new_oof.loc[dates > cutoff]
    if rows.empty:
        return None
    start = pd.Timestamp(rows["date"].min()) - pd.Timedelta(days=150)  # sequence and momentum context
    data = loaders.installed().load_training_frame(
        tickers=sorted(rows["ticker"].unique()), start=start.date(), end=pd.Timestamp(rows["date"].max()).date(),
        horizon=horizon, feature_set_version=active.feature_set_version,
    )
    frame = data.frame.reset_index(drop=True)
    preds = predict_version(version=active, frame=frame)
    scored = pd.DataFrame({
        "ticker": frame["ticker"].astype(str).to_numpy(),
        "date": pd.to_datetime(frame["date"]).to_numpy(),
        "expected_return": preds.expected_return,
        "prob_up": preds.prob_up,
    })
    return common_window(rows, scored)
