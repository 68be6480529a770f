"""The work of the stages other than ``train``: market data, features, and the two stages the apps
above training provide (``register_stage_hook``). Each takes the run and returns its counts; a smoke
run (``noop_seconds``) only waits."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.db.models import F

from features.services.feature_store import DEFAULT_CHUNK_SIZE, build_features
from features.services.market_updates import update_market_data
from features.services.social import update_social_if_configured
from features.services.store_errors import FeatureStoreError
from training.models import PipelineRun
from training.orchestrator.errors import PermanentStageError, StageError, TransientStageError, is_transient

Progress = Callable[[str], None]


def noop(run: PipelineRun, stage: str) -> dict[str, Any] | None:
    """A smoke run's stage: wait ``noop_seconds`` and return its counts; None for a real run."""
    seconds = run.options.get("noop_seconds")
    if seconds is None:
        return None
    time.sleep(float(seconds))
    return {"noop": True, "seconds": float(seconds)}


def stage_update_market_data(*, run: PipelineRun, progress: Progress | None = None) -> dict[str, Any]:
    smoke = noop(run, "update_market_data")
    if smoke is not None:
        return smoke
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
                       "rows_added", "rows_updated", "rows_rejected", "calls", "rate_limit_wait_seconds", "cost_usd",
                       "warning", "ingestion_run")}
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
    smoke = noop(run, "build_features")
    if smoke is not None:
        return smoke
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


def stage_hook(stage: str) -> Callable[[], dict[str, Any]]:
    """The registered work of ``stage``; a permanent stage error naming the app when none is."""
    try:
        return STAGE_HOOKS[stage]
    except KeyError:
        app = _HOOK_OWNERS[stage]
        raise PermanentStageError(f"no {stage} stage is registered: the {app} app provides it",
                                  hints=[f"Add '{app}' to INSTALLED_APPS"]) from None


def stage_batch_predict(*, run: PipelineRun, progress: Progress | None = None) -> dict[str, Any]:
    smoke = noop(run, "batch_predict")
    if smoke is not None:
        return smoke
    # Always the whole universe: ranks and recommendations are cross-sectional, and a day's rows of
    # a model version are replaced as a whole (a ticker-scoped run retrains, it does not narrow them).
    result = stage_hook("batch_predict")()
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
    smoke = noop(run, "check_drift")
    if smoke is not None:
        return smoke
    return stage_hook("check_drift")()


STAGE_WORK: dict[str, Callable[..., dict[str, Any]]] = {
    "update_market_data": stage_update_market_data,
    "build_features": stage_build_features,
    "batch_predict": stage_batch_predict,
    "check_drift": stage_check_drift,
}
