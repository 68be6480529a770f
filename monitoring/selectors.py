"""Reads of the monitoring tables and of what monitoring watches (features, runs, system metrics).

Nothing here writes. The dashboard, the commands and ``monitoring.services`` read through these.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
from django.conf import settings
from django.core.cache import cache
from django.db.models import QuerySet, Sum
from django.utils import timezone

from features import storage
from features.feature_sets import FEATURE_GROUPS, MODEL_FEATURE_COLUMNS
from features.models import FeatureMaterialization, IngestionRun
from features.profile import profile_build
from features.providers.base import budget_message, monthly_limit_message
from features.selectors import feature_store_for, resolve_feature_set_version
from investml.ledger import CostBreach
from monitoring import budget, config, request_metrics
from monitoring.drift import DriftReport as DriftResult
from monitoring.drift import compare_to_profile
from monitoring.models import Alert, CostRecord, DriftReport, PerformanceRecord
from registry.models import ModelVersion
from registry.selectors import versions
from training.models import PipelineRun, TrainingRun

ZERO = Decimal("0")
MODEL_LOAD_FAILURES_KEY = "monitoring:model_load_failures"
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}

# ---------------------------------------------------------------------------------------------
# costs


def cost_for_day(*, day: date) -> Decimal:
    """Total tracked cost of ``day`` in USD, all categories (what the daily limit is checked against)."""
    total = CostRecord.objects.filter(day=day).aggregate(total=Sum("cost_usd"))["total"]
    return total if total is not None else ZERO


def costs_by_category(*, day: date) -> dict[str, Decimal]:
    """``{category: total USD}`` of ``day``; every category is present (0 when nothing was recorded)."""
    totals = {category: ZERO for category in CostRecord.Category.values}
    for row in CostRecord.objects.filter(day=day).values("category").annotate(total=Sum("cost_usd")):
        totals[row["category"]] = row["total"] or ZERO
    return totals


def api_calls_for_day(*, day: date, source: str) -> int:
    """How many requests were made to data provider ``source`` on ``day`` (its ``data_api`` call records)."""
    total = (
        CostRecord.objects.filter(day=day, category=CostRecord.Category.DATA_API, source=source, unit="call")
        .aggregate(total=Sum("units"))["total"]
    )
    return int(total or 0)


def cost_series(*, days: int = 30, end: date | None = None) -> list[dict[str, Any]]:
    """One row per day of the last ``days`` days up to ``end`` (today): ``{day, <category>: usd, total}``.

    Days without records are present with zeros, so a chart shows the gaps.
    """
    end = end or timezone.localdate()
    start = end - timedelta(days=days - 1)
    rows = {start + timedelta(days=i): {c: 0.0 for c in CostRecord.Category.values} for i in range(days)}
    totals = (
        CostRecord.objects.filter(day__gte=start, day__lte=end)
        .values("day", "category")
        .annotate(total=Sum("cost_usd"))
    )
    for row in totals:
        rows[row["day"]][row["category"]] = float(row["total"] or 0)
    return [{"day": d, **cats, "total": sum(cats.values())} for d, cats in sorted(rows.items())]


def cost_by_source(*, day: date) -> list[dict[str, Any]]:
    """``[{category, source, units, unit, usd}]`` of ``day``, most expensive first."""
    rows = (
        CostRecord.objects.filter(day=day)
        .values("category", "source", "unit")
        .annotate(units=Sum("units"), usd=Sum("cost_usd"))
        .order_by("-usd", "category", "source")
    )
    return [{**row, "usd": float(row["usd"] or 0)} for row in rows]


def daily_cost_limit() -> float:
    return float(getattr(settings, "ML_DAILY_COST_LIMIT_USD", 10.0))


def monthly_cost_limit() -> float:
    return config.monthly_cost_limit()


def cost_between(*, start: date, end: date) -> Decimal:
    """Total tracked cost of the days ``start``..``end`` (both included), all categories."""
    total = CostRecord.objects.filter(day__gte=start, day__lte=end).aggregate(total=Sum("cost_usd"))["total"]
    return total if total is not None else ZERO


def cost_for_month(*, day: date) -> Decimal:
    """Month-to-date: the tracked cost of ``day``'s month through ``day`` (what the monthly limit is
    checked against)."""
    return cost_between(start=budget.month_start(day), end=day)


def month_projection(*, day: date | None = None) -> budget.MonthProjection:
    """Month-to-date and the projected month-end cost on ``day`` (today), against
    ``ML_MONTHLY_COST_LIMIT_USD`` (method: ``monitoring.budget``)."""
    day = day or timezone.localdate()
    first = CostRecord.objects.filter(day__lte=day).order_by("day").values_list("day", flat=True).first()
    window = budget.rate_window(day, first_recorded=first)
    recent: list[float] = []
    if window is not None:
        start, end = window
        by_day = dict(CostRecord.objects.filter(day__gte=start, day__lte=end).values("day")
                      .annotate(total=Sum("cost_usd")).values_list("day", "total"))
        recent = [float(by_day.get(start + timedelta(days=i)) or 0) for i in range((end - start).days + 1)]
    return budget.project_month_end(
        day=day, month_to_date_usd=float(cost_for_month(day=day)), today_usd=float(cost_for_day(day=day)),
        recent_daily_usd=recent, limit_usd=monthly_cost_limit(),
    )


def cost_limit_breach(*, day: date | None = None, daily_limit: float | None = None) -> CostBreach | None:
    """The limit that stops paid work now, if any: today's cost over ``ML_DAILY_COST_LIMIT_USD``
    (checked first, the spec's message), else the month-to-date over ``ML_MONTHLY_COST_LIMIT_USD``."""
    day = day or timezone.localdate()
    daily_limit = daily_cost_limit() if daily_limit is None else float(daily_limit)
    spent = float(cost_for_day(day=day))
    if spent > daily_limit:
        return CostBreach("daily", day.isoformat(), spent, daily_limit, budget_message(spent, daily_limit))
    monthly_limit = monthly_cost_limit()
    month = float(cost_for_month(day=day))
    if month > monthly_limit:
        return CostBreach("monthly", budget.month_key(day), month, monthly_limit,
                          monthly_limit_message(month, monthly_limit))
    return None


def directory_bytes(path: Path | str) -> int:
    """Total size of the regular files under ``path`` (0 when it does not exist); links not followed."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                stat = os.lstat(os.path.join(root, name))
            except OSError:  # removed while walking
                continue
            if not os.path.islink(os.path.join(root, name)):
                total += stat.st_size
    return total


def storage_bytes(root: Path | str) -> int:
    """Total size stored under a storage root: a local folder, or every object under an
    ``s3://bucket/prefix`` (one listing)."""
    if storage.is_remote(root):
        return storage.location(root).total_bytes()
    return directory_bytes(root)


# ---------------------------------------------------------------------------------------------
# alerts


def alerts(*, kind: str | None = None, severity: str | None = None, state: str | None = None) -> QuerySet[Alert]:
    """Alerts filtered by kind, severity and state (``open``, ``unacknowledged``, ``acknowledged``,
    ``resolved``; anything else = all), open ones first, most recent first."""
    qs = Alert.objects.all()
    if kind:
        qs = qs.filter(kind=kind)
    if severity:
        qs = qs.filter(severity=severity)
    if state == "open":
        qs = qs.filter(resolved=False)
    elif state == "unacknowledged":
        qs = qs.filter(resolved=False, acknowledged=False)
    elif state == "acknowledged":
        qs = qs.filter(resolved=False, acknowledged=True)
    elif state == "resolved":
        qs = qs.filter(resolved=True)
    return qs.order_by("resolved", "-last_seen", "-id")


def open_alerts() -> QuerySet[Alert]:
    return alerts(state="open")


def open_alert_counts() -> dict[str, int]:
    """``{severity: open alerts}``, every severity present."""
    counts = dict.fromkeys(Alert.Severity.values, 0)
    for severity in Alert.objects.filter(resolved=False).values_list("severity", flat=True):
        counts[severity] = counts.get(severity, 0) + 1
    return counts


def alert_kinds() -> list[str]:
    return sorted(set(Alert.objects.values_list("kind", flat=True).distinct()))


# ---------------------------------------------------------------------------------------------
# models, performance and drift


def active_versions(*, model_name: str | None = None) -> list[Any]:
    return list(versions(model_name=model_name, statuses=[ModelVersion.Status.ACTIVE]))


def latest_performance(*, version: Any, window_days: int | None = None) -> PerformanceRecord | None:
    qs = PerformanceRecord.objects.filter(model_version=version)
    if window_days:
        qs = qs.filter(window_days=window_days)
    return qs.order_by("-day", "-id").first()


def performance_history(*, model_name: str | None = None, version: Any = None,
                        limit: int = 365) -> list[PerformanceRecord]:
    """Performance records, oldest first (for charts), of a version or of every version of a model."""
    qs = PerformanceRecord.objects.select_related("model_version", "model_version__model")
    if version is not None:
        qs = qs.filter(model_version=version)
    elif model_name:
        qs = qs.filter(model_version__model__name=model_name)
    return list(reversed(qs.order_by("-day", "-id")[:limit]))


def latest_drift_report(*, version: Any) -> DriftReport | None:
    return DriftReport.objects.filter(model_version=version).order_by("-created_at", "-id").first()


def drift_reports(*, model_name: str | None = None, limit: int = 60) -> list[DriftReport]:
    """Drift reports, newest first."""
    qs = DriftReport.objects.select_related("model_version", "model_version__model")
    if model_name:
        qs = qs.filter(model_version__model__name=model_name)
    return list(qs.order_by("-created_at", "-id")[:limit])


def drift_matrix(*, model_name: str, limit: int = 30) -> dict[str, Any]:
    """Per-feature PSI over the last ``limit`` reports of a model, oldest first, for a heat map.

    ``{"labels": [window end (version)], "features": [...], "psi": [[feature x report]],
    "drifted": [[bool]], "shares": [...]}``.
    """
    reports = list(reversed(drift_reports(model_name=model_name, limit=limit)))
    features = sorted({name for r in reports for name in (r.features or {})})
    return {
        "labels": [f"{r.window_end.isoformat()} (v{r.model_version.version})" for r in reports],
        "features": features,
        "psi": [[_round((r.features or {}).get(f, {}).get("psi")) for r in reports] for f in features],
        "drifted": [[bool((r.features or {}).get(f, {}).get("drifted")) for r in reports] for f in features],
        "shares": [r.drift_share for r in reports],
    }


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)


def drift_columns(*, profile: dict[str, Any]) -> list[str]:
    """The features of a profile that drift is checked on (calendar features excluded)."""
    calendar = set(FEATURE_GROUPS.get("calendar", []))
    return [name for name in (profile.get("features") or {}) if name not in calendar]


# ---------------------------------------------------------------------------------------------
# feature windows


@dataclass(frozen=True)
class FeatureWindow:
    frame: pd.DataFrame
    start: date | None
    end: date | None
    feature_set_version: Any


def _store(feature_set_version: Any):
    version = resolve_feature_set_version(version=feature_set_version)
    return version, feature_store_for(version=version)


def recent_feature_window(*, days: int, end: date | None = None, feature_set_version: Any = None,
                          columns: list[str] | None = None) -> FeatureWindow:
    """The stored features of the ``days`` most recent trading dates on or before ``end`` (default:
    the store's last date), all tickers."""
    version, store = _store(feature_set_version)
    if end is None:
        last = store.last_dates()
        if not last:
            return FeatureWindow(pd.DataFrame(columns=["ticker", "date", *(columns or [])]), None, None, version)
        end = max(last.values())
    start_guess = end - timedelta(days=int(days * 7 / 5) + 15)
    frame = store.read("features", columns=columns, start=start_guess, end=end)
    if frame.empty:
        return FeatureWindow(frame, None, None, version)
    dates = pd.Series(frame["date"].unique()).sort_values().iloc[-days:]
    frame = frame[frame["date"].isin(set(dates))]
    return FeatureWindow(frame.reset_index(drop=True), dates.iloc[0].date(), dates.iloc[-1].date(), version)


def feature_period(*, start: date, end: date, feature_set_version: Any = None,
                   columns: list[str] | None = None) -> FeatureWindow:
    version, store = _store(feature_set_version)
    frame = store.read("features", columns=columns, start=start, end=end)
    if frame.empty:
        return FeatureWindow(frame, None, None, version)
    return FeatureWindow(frame, frame["date"].min().date(), frame["date"].max().date(), version)


def compare_feature_periods(*, reference_start: date, reference_end: date, start: date, end: date,
                            feature_set_version: Any = None, columns: list[str] | None = None,
                            share_threshold: float | None = None, psi_threshold: float | None = None,
                            ks_threshold: float | None = None) -> tuple[DriftResult, FeatureWindow, FeatureWindow]:
    """Drift of the stored features of [start, end] against those of [reference_start, reference_end]
    (no model needed, nothing stored)."""
    cfg = config.load()
    reference = feature_period(start=reference_start, end=reference_end, feature_set_version=feature_set_version)
    current = feature_period(start=start, end=end, feature_set_version=reference.feature_set_version)
    if columns is None:
        names = set(reference.feature_set_version.feature_names)
        calendar = set(FEATURE_GROUPS.get("calendar", []))
        columns = [c for c in MODEL_FEATURE_COLUMNS if c in names and c not in calendar]
    profile = profile_build(reference.frame, columns)
    result = compare_to_profile(
        profile, current.frame, columns=[c for c in columns if c in profile["features"]],
        share_threshold=cfg.thresholds.drift_share if share_threshold is None else share_threshold,
        psi_threshold=cfg.drift_psi_threshold if psi_threshold is None else psi_threshold,
        ks_threshold=cfg.drift_ks_threshold if ks_threshold is None else ks_threshold,
    )
    return result, reference, current


def version_profile(*, version: Any) -> dict[str, Any]:
    """The version's drift reference (``features.profile`` format; empty when it has none)."""
    return dict(version.drift_reference or {})


# ---------------------------------------------------------------------------------------------
# runs, system, model loading


def recent_pipeline_runs(*, limit: int = 20) -> list[Any]:
    """The orchestrator's runs (data, features, train, predict, drift), newest first."""
    return list(PipelineRun.objects.select_related("training_run").order_by("-created_at", "-id")[:limit])


def recent_training_runs(*, limit: int = 20) -> list[Any]:
    return list(TrainingRun.objects.order_by("-created_at", "-id")[:limit])


def failed_runs_since(*, since: datetime) -> dict[str, str]:
    """``{label: error}`` of pipeline runs, training runs, feature builds and ingestions that failed
    since ``since``."""
    out: dict[str, str] = {}
    for pipe in PipelineRun.objects.filter(status=PipelineRun.Status.FAILED, created_at__gte=since).order_by("id"):
        error = _first_line(pipe.error) or _first_line(pipe.status_reason) or "failed"
        out[f"pipeline run {pipe.pk}"] = f"stage {pipe.current_stage}: {error}" if pipe.current_stage else error
    for run in TrainingRun.objects.filter(status=TrainingRun.Status.FAILED, created_at__gte=since).order_by("id"):
        out[f"training run {run.pk}"] = _first_line(run.error) or "failed"
    for mat in FeatureMaterialization.objects.filter(
        status=FeatureMaterialization.Status.FAILED, created_at__gte=since
    ).order_by("id"):
        out[f"feature build {mat.pk}"] = _first_line(mat.error) or "failed"
    for ing in IngestionRun.objects.filter(status=IngestionRun.Status.FAILED, started_at__gte=since).order_by("id"):
        out[f"ingestion run {ing.pk} ({ing.source})"] = _first_line(ing.error) or "failed"
    return out


def _first_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def model_load_failures() -> dict[str, dict[str, Any]]:
    """``{model: {"error", "at"}}`` as recorded by ``monitoring.services.record_model_load_failure``."""
    raw = cache.get(MODEL_LOAD_FAILURES_KEY)
    return dict(raw or {})


def system_utilization() -> tuple[float | None, float | None]:
    """Machine CPU and memory utilization as fractions (psutil; None where unavailable)."""
    try:
        cpu = psutil.cpu_percent(interval=0.2) / 100.0
    except Exception:  # noqa: BLE001 - a missing /proc must not break the other checks
        cpu = None
    try:
        memory = psutil.virtual_memory().percent / 100.0
    except Exception:  # noqa: BLE001
        memory = None
    return cpu, memory


def disk_usage() -> dict[str, tuple[float, float]]:
    """(used fraction, free bytes) of each distinct local volume holding ``ML_MODELS_PATH`` or
    ``ML_FEATURES_PATH``, keyed by the first of those paths on it."""
    out: dict[str, tuple[float, float]] = {}
    seen: set[int] = set()
    for path in (settings.ML_MODELS_PATH, settings.ML_FEATURES_PATH):
        if storage.is_remote(path):
            continue  # an object store has no volume to fill
        try:
            device = os.stat(path).st_dev
            usage = shutil.disk_usage(path)
        except OSError:  # not created yet: nothing stored there to fill
            continue
        if device in seen or not usage.total:
            continue
        seen.add(device)
        out[str(path)] = (usage.used / usage.total, float(usage.free))
    return out


def request_window(*, minutes: int = 5) -> dict[str, request_metrics.EndpointWindow]:
    return {k: v for k, v in request_metrics.window(minutes=minutes).items() if v.requests}
