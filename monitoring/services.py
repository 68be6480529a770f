"""Writes to the monitoring tables: costs, alerts (with notifications), drift reports, performance.

Public API (keyword-only): ``record_cost``, ``record_api_calls``, ``record_storage_cost``;
``raise_alert``, ``resolve_cleared``, ``acknowledge_alert``, ``resolve_alert``,
``apply_conditions``, ``evaluate_alerts``; ``record_model_load_failure``,
``clear_model_load_failure``; ``track_performance``; ``check_drift``. Retrain requests go through
``_request_retrain`` only; notifications are ``monitoring.notifications``'.

Every metered cost is one ``CostRecord`` row: an HTTP request to a data provider (category
``data_api``, one row per request, retries included), compute seconds of a run, storage. The daily
budget (``ML_DAILY_COST_LIMIT_USD``) is checked against their total for the day
(``monitoring.selectors.cost_for_day``), the monthly one (``ML_MONTHLY_COST_LIMIT_USD``) against the
month-to-date (``cost_for_month``); ``evaluate_alerts`` also warns (``cost_projection``, one per
month) when the projected month-end cost (``monitoring.budget``) passes the monthly limit.
"""

from __future__ import annotations

import calendar
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone

from features.common import jsonable
from features.models import PriceBar
from inference.models import DailyPrediction, PredictionLog
from monitoring import config, performance, selectors
from monitoring.alert_rules import (
    AlertCondition,
    daily_cost_conditions,
    disk_conditions,
    drift_share_conditions,
    error_rate_conditions,
    failed_run_conditions,
    latency_conditions,
    model_loading_conditions,
    monthly_cost_conditions,
    performance_conditions,
    resource_conditions,
)
from monitoring.drift import compare_to_profile
from monitoring.models import Alert, CostRecord, DriftReport, PerformanceRecord
from monitoring.notifications import notify_alert
from registry.models import ModelVersion
from training.orchestrator import triggers

if TYPE_CHECKING:
    from features.providers.base import CallRecord

BATCH_SIZE = 1_000
_COST_QUANTUM = Decimal("0.000001")  # CostRecord.cost_usd has 6 decimal places


def _usd(value: float | Decimal | str | int) -> Decimal:
    # Through str() so 0.01 stays 0.01 instead of 0.01000000000000000020816681711721685...
    return Decimal(str(value)).quantize(_COST_QUANTUM)


def record_cost(
    *,
    day: date,
    category: str,
    source: str,
    detail: str = "",
    units: float = 0.0,
    unit: str = "call",
    bytes: int = 0,  # noqa: A002 - the model's field name
    cost_usd: float | Decimal = 0,
) -> CostRecord:
    """Write one cost record."""
    if category not in CostRecord.Category.values:
        raise ValueError(f"unknown cost category {category!r} (known: {', '.join(CostRecord.Category.values)})")
    return CostRecord.objects.create(
        day=day, category=category, source=source[:100], detail=detail[:200], units=float(units), unit=unit[:20],
        bytes=max(0, int(bytes)), cost_usd=_usd(cost_usd),
    )


def record_api_calls(*, records: Iterable[CallRecord], day: date | None = None) -> int:
    """One ``data_api`` cost record per HTTP request (source = provider, detail = endpoint, 1 call).

    Written in batches; returns how many rows were written. ``day`` defaults to today (the
    ``TIME_ZONE`` date, UTC), the day the budget check totals. URLs and API keys are not stored.
    """
    day = day or timezone.localdate()
    rows = [
        CostRecord(
            day=day,
            category=CostRecord.Category.DATA_API,
            source=record.provider[:100],
            detail=record.endpoint[:200],
            units=1.0,
            unit="call",
            bytes=max(0, int(record.bytes)),
            cost_usd=_usd(record.cost_usd),
        )
        for record in records
    ]
    if rows:
        CostRecord.objects.bulk_create(rows, batch_size=BATCH_SIZE)
    return len(rows)


# =============================================================================================
# Alerts: one open row per (kind, key), notifications without storms
# =============================================================================================

logger = logging.getLogger("monitoring")
SEVERITY_RANK = selectors.SEVERITY_RANK
# Alert kinds whose first occurrence requests a retrain: kind -> (orchestrator trigger, spec log reason)
RETRAIN_ON = {"data_drift": ("drift", "data_drift"), "low_accuracy": ("performance", "performance_degradation")}
MODEL_LOAD_FAILURE_TTL = 7 * 24 * 3600


@dataclass(frozen=True)
class RaisedAlert:
    alert: Alert
    created: bool


def raise_alert(*, condition: AlertCondition, now: datetime | None = None) -> RaisedAlert:
    """Fold ``condition`` into its open alert (count + 1, last seen, message, details and severity
    updated), or open a new one. Race-safe: the partial unique constraint lets only one open row
    exist per (kind, key); a concurrent creator that loses gets IntegrityError and updates instead.
    """
    now = now or timezone.now()
    kind, key = condition.kind[:40], condition.key[:200]
    details = jsonable(dict(condition.details), default=str)
    for attempt in range(3):
        try:
            with transaction.atomic():
                alert = Alert.objects.select_for_update().filter(kind=kind, key=key, resolved=False).first()
                if alert is None:
                    alert = Alert.objects.create(
                        kind=kind, key=key, severity=condition.severity, message=condition.message, details=details,
                        first_seen=now, last_seen=now, count=1,
                    )
                    return RaisedAlert(alert, True)
                Alert.objects.filter(pk=alert.pk).update(
                    count=F("count") + 1, last_seen=now, message=condition.message, details=details,
                    severity=condition.severity,
                )
                alert.refresh_from_db()
                return RaisedAlert(alert, False)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def resolve_cleared(*, kind: str, current_keys: Iterable[str], now: datetime | None = None) -> int:
    """Resolve the open alerts of ``kind`` whose condition no longer holds; returns how many."""
    keep = {k[:200] for k in current_keys}
    qs = Alert.objects.filter(kind=kind, resolved=False).exclude(key__in=keep)
    return qs.update(resolved=True, resolved_at=now or timezone.now())


def acknowledge_alert(*, alert_id: int, user: str) -> Alert:
    """Mark an open alert as seen: it stays open, repeats still count, but notifies again only when
    its severity rises."""
    Alert.objects.filter(pk=alert_id, acknowledged=False).update(
        acknowledged=True, acknowledged_by=user[:150], acknowledged_at=timezone.now()
    )
    return Alert.objects.get(pk=alert_id)


def resolve_alert(*, alert_id: int, user: str) -> Alert:
    """Close an alert by hand; if its condition still holds, the next evaluation opens a new one."""
    alert = Alert.objects.get(pk=alert_id)
    if not alert.resolved:
        details = {**(alert.details or {}), "resolved_by": user[:150]}
        Alert.objects.filter(pk=alert_id, resolved=False).update(
            resolved=True, resolved_at=timezone.now(), details=details
        )
        alert.refresh_from_db()
    return alert


def _request_retrain(*, trigger: str, reason: str, tickers: list[str] | None = None) -> Any:
    """The one place monitoring asks for a retrain (``trigger``: "drift" or "performance").

    Through the orchestrator (``training.orchestrator.triggers.request_retrain``). Never raises: a failed
    request is logged.
    """
    label = "data_drift" if trigger == "drift" else "performance_degradation"
    if not config.load().auto_retrain:
        logger.info("Retraining trigger suppressed (ENABLE_AUTO_RETRAINING is off): %s threshold exceeded", label)
        return None
    logger.info("Retraining trigger activated: %s threshold exceeded", label)
    try:
        return triggers.request_retrain(trigger=trigger, reason=reason, requested_by="monitoring", tickers=tickers)
    except Exception:  # noqa: BLE001 - monitoring keeps running when the trigger fails
        logger.exception("retrain request (%s) failed: %s", trigger, reason)
        return None


def apply_conditions(*, kind: str, conditions: Iterable[AlertCondition], notify: bool = True,
                     resolve: bool = True, scope_keys: Iterable[str] | None = None,
                     now: datetime | None = None) -> list[RaisedAlert]:
    """Raise every condition of ``kind``, resolve the open ones of ``kind`` that no longer hold, notify.

    ``scope_keys``: when given, only open alerts with these keys may be resolved (a check that
    looked at one model must not resolve another model's alert). A newly opened ``data_drift`` or
    ``low_accuracy`` alert requests a retrain, once per opening.
    """
    now = now or timezone.now()
    conditions = [c for c in conditions if c.kind == kind]
    raised = [raise_alert(condition=c, now=now) for c in conditions]
    if resolve:
        current = {c.key for c in conditions}
        if scope_keys is None:
            resolve_cleared(kind=kind, current_keys=current, now=now)
        else:
            for key in set(scope_keys) - current:
                Alert.objects.filter(kind=kind, key=key[:200], resolved=False).update(resolved=True, resolved_at=now)
    for item in raised:
        if item.created and kind in RETRAIN_ON:
            trigger, _label = RETRAIN_ON[kind]
            _request_retrain(trigger=trigger, reason=item.alert.message)
        if notify:
            notify_alert(alert=item.alert, now=now)
    return raised


# =============================================================================================
# Model loading failures (called by inference)
# =============================================================================================


def record_model_load_failure(*, model: str, error: str) -> Alert:
    """Record that ``model`` failed to load (inference calls this; the spec's "Failed to load model
    X: error"). Opens or repeats the ``model_load_failed`` alert at once and keeps the failure in the
    cache so ``evaluate_alerts`` keeps it open until ``clear_model_load_failure`` is called."""
    error = str(error)
    prefix = f"Failed to load model {model}"
    if error.startswith(prefix):  # inference's own message: "Failed to load model name@1.0.0: ..."
        error = error[len(prefix):].lstrip("@0123456789.").lstrip(": ") or error
    failures = selectors.model_load_failures()
    failures[model] = {"error": error[:500], "at": timezone.now().isoformat()}
    cache.set(selectors.MODEL_LOAD_FAILURES_KEY, failures, MODEL_LOAD_FAILURE_TTL)
    logger.error("Failed to load model %s: %s", model, error)
    (condition,) = model_loading_conditions({model: error[:500]})
    return raise_alert(condition=condition).alert


def clear_model_load_failure(*, model: str) -> None:
    """``model`` loaded fine: forget its failure and resolve its alert."""
    failures = selectors.model_load_failures()
    if failures.pop(model, None) is not None:
        cache.set(selectors.MODEL_LOAD_FAILURES_KEY, failures, MODEL_LOAD_FAILURE_TTL)
    Alert.objects.filter(kind="model_load_failed", key=model, resolved=False).update(
        resolved=True, resolved_at=timezone.now()
    )


# =============================================================================================
# Storage cost
# =============================================================================================


def record_storage_cost(*, day: date | None = None) -> list[CostRecord]:
    """Today's storage cost of the model artifacts (``ML_MODELS_PATH``) and the feature store
    (``ML_FEATURES_PATH``): size in GB times ``ML_STORAGE_USD_PER_GB_MONTH`` / days of the month.

    Idempotent per day: the day's storage records of these sources are replaced.
    """
    day = day or timezone.localdate()
    rate = config.load().storage_usd_per_gb_month
    days_in_month = calendar.monthrange(day.year, day.month)[1]
    paths = {
        "ml_models": getattr(settings, "ML_MODELS_PATH", ""),
        "features": getattr(settings, "ML_FEATURES_PATH", ""),
    }
    records = []
    with transaction.atomic():
        CostRecord.objects.filter(day=day, category=CostRecord.Category.STORAGE, source__in=list(paths)).delete()
        for source, path in paths.items():
            size = selectors.storage_bytes(path) if str(path) else 0
            gb = size / 1e9
            records.append(record_cost(
                day=day, category=CostRecord.Category.STORAGE, source=source, detail=str(path)[-200:],
                units=gb, unit="GB-day", bytes=size, cost_usd=gb * rate / days_in_month,
            ))
    return records


# =============================================================================================
# Performance tracking
# =============================================================================================


def _prediction_rows(*, version_ids: list[int] | None, since: date, until: date) -> pd.DataFrame:
    """Stored and logged predictions with dates in [since, until]: one row per (version, ticker, date);
    a daily batch prediction wins over a logged one, the latest log wins among logs."""
    daily = DailyPrediction.objects.filter(date__gte=since, date__lte=until)
    logs = PredictionLog.objects.filter(
        feature_date__gte=since, feature_date__lte=until, model_version__isnull=False
    ).exclude(ticker="")
    if version_ids is not None:
        daily = daily.filter(model_version_id__in=version_ids)
        logs = logs.filter(model_version_id__in=version_ids)
    columns = ["version_id", "ticker", "date", "horizon", "expected_return", "prob_up", "source", "order"]
    rows = [
        (v, t, d, h, er, p, 0, 0)
        for v, t, d, h, er, p in daily.values_list(
            "model_version_id", "ticker__symbol", "date", "horizon_days", "expected_return", "prob_up"
        )
    ]
    horizons = dict(ModelVersion.objects.values_list("pk", "horizon_days"))
    # ``prediction`` may be a price (inference logs ``price * (1 + er)`` when it knows the price):
    # only the expected return is scored.
    for v, t, d, er, created in logs.exclude(expected_return__isnull=True).values_list(
        "model_version_id", "ticker", "feature_date", "expected_return", "created_at"
    ):
        rows.append((v, t.upper(), d, horizons.get(v, 5), er, np.nan, 1, -created.timestamp()))
    frame = pd.DataFrame(rows, columns=columns)
    if frame.empty:
        return frame
    frame["date"] = pd.to_datetime(frame["date"])
    frame = frame.astype({"expected_return": "float64", "prob_up": "float64"})
    frame = frame.sort_values(["version_id", "ticker", "date", "source", "order"], kind="stable")
    return frame.drop_duplicates(["version_id", "ticker", "date"], keep="first").reset_index(drop=True)


def _bars(*, tickers: list[str], since: date, until: date) -> pd.DataFrame:
    rows = PriceBar.objects.filter(ticker__symbol__in=tickers, date__gte=since, date__lte=until).values_list(
        "ticker__symbol", "date", "adj_close"
    )
    frame = pd.DataFrame(list(rows), columns=["ticker", "date", "adj_close"])
    if not frame.empty:
        frame["date"] = pd.to_datetime(frame["date"])
    return frame


def _latest_bar_day() -> date | None:
    return PriceBar.objects.aggregate(last=Max("date"))["last"]


def track_performance(*, day: date | None = None, window_days: int | None = None,
                      alert: bool = True) -> list[PerformanceRecord]:
    """Score the predictions whose horizon has passed by ``day`` and store, per model version, one
    ``PerformanceRecord`` over the last ``window_days`` scored prediction dates (upserted on
    version, day, window). ``day`` defaults to the last stored price bar date.

    Then every active version's record is checked against its floor (``monitoring.config``): one
    under it opens ``low_accuracy`` (and, on opening, a retrain request); one back over it resolves.
    """
    cfg = config.load()
    window = int(window_days or cfg.performance_window_days)
    day = day or _latest_bar_day() or timezone.localdate()
    horizons = [h for h in ModelVersion.objects.values_list("horizon_days", flat=True).distinct() if h]
    lookback = timedelta(days=int((window + max(horizons or [5])) * 7 / 5) + 20)
    preds = _prediction_rows(version_ids=None, since=day - lookback, until=day)
    records: list[PerformanceRecord] = []
    if not preds.empty:
        bars = _bars(tickers=sorted(preds["ticker"].unique()), since=day - lookback - timedelta(days=10), until=day)
        scored = performance.realized_returns(preds, bars, as_of=day)
        scored = scored[np.isfinite(scored["realized"].to_numpy(dtype=np.float64))]
        for version_id, rows in scored.groupby("version_id", sort=True):
            rows = performance.last_dates(rows, window)
            metrics = performance.window_metrics(rows)
            record, _ = PerformanceRecord.objects.update_or_create(
                model_version_id=int(version_id), day=day, window_days=window,
                defaults={"samples": int(len(rows)), **metrics},
            )
            records.append(record)
    if alert:
        _check_performance_alerts(cfg=cfg, window=window)
    return records


def _check_performance_alerts(*, cfg: config.MonitoringConfig, window: int | None = None) -> list[RaisedAlert]:
    metric = cfg.performance_metric
    values: dict[str, float | None] = {}
    floors: dict[str, float | None] = {}
    scope = []
    for version in selectors.active_versions():
        name = version.model.name
        scope.append(name)
        record = selectors.latest_performance(version=version, window_days=window)
        if record is None or record.samples < cfg.min_performance_samples:
            continue
        validated = (version.metrics or {}).get(metric)
        values[name] = getattr(record, metric)
        floors[name] = config.performance_floor(cfg=cfg, validated=float(validated) if validated is not None else None)
    conditions = performance_conditions(values, floors, metric=metric, lower_is_better=metric in config.LOWER_IS_BETTER)
    return apply_conditions(kind="low_accuracy", conditions=conditions, scope_keys=None)


# =============================================================================================
# Drift
# =============================================================================================


def check_drift(*, model_name: str | None = None, window_days: int | None = None, as_of: date | None = None,
                alert: bool = True) -> list[DriftReport]:
    """Compare the most recent ``window_days`` trading days of stored features (ending ``as_of``,
    default the store's last date) with each active version's training profile
    (``ModelVersion.drift_reference``), store one ``DriftReport`` per version, and when its drift
    share exceeds ``DATA_DRIFT_THRESHOLD`` open the ``data_drift`` alert (on opening: the spec's
    "Retraining trigger activated: data_drift threshold exceeded" and a retrain request). A version
    whose drift cleared has its alert resolved. Versions without a reference are skipped (logged).
    """
    cfg = config.load()
    days = int(window_days or cfg.drift_window_days)
    versions = selectors.active_versions(model_name=model_name)
    reports: list[DriftReport] = []
    conditions: list[AlertCondition] = []
    checked: list[str] = []
    windows: dict[Any, selectors.FeatureWindow] = {}
    for version in versions:
        label = f"{version.model.name}@{version.version}"
        profile = selectors.version_profile(version=version)
        columns = selectors.drift_columns(profile=profile)
        if not columns:
            logger.info("drift check skipped for %s: it has no drift reference", label)
            continue
        fsv_key = version.feature_set_version_id
        if fsv_key not in windows:
            windows[fsv_key] = selectors.recent_feature_window(
                days=days, end=as_of, feature_set_version=version.feature_set_version
            )
        win = windows[fsv_key]
        if win.frame.empty:
            logger.warning("drift check skipped for %s: no stored features", label)
            continue
        result = compare_to_profile(
            profile, win.frame, columns=columns, share_threshold=cfg.thresholds.drift_share,
            psi_threshold=cfg.drift_psi_threshold, ks_threshold=cfg.drift_ks_threshold,
        )
        report = DriftReport.objects.create(
            model_version=version, window_start=win.start, window_end=win.end,
            drift_detected=result.drift_detected, drift_share=result.drift_share, threshold=result.threshold,
            features=jsonable({**{n: asdict(f) for n, f in result.features.items()}}, default=str),
        )
        reports.append(report)
        checked.append(version.model.name)
        logger.info("drift %s %s..%s: %.0f%% of %d features drifted (%s)", label, win.start, win.end,
                    100 * result.drift_share, len(result.features), ", ".join(result.drifted_features) or "none")
        conditions += _drift_conditions(report=report, cfg=cfg)
    if alert and checked:
        apply_conditions(kind="data_drift", conditions=conditions, scope_keys=checked)
    return reports


def _drift_conditions(*, report: DriftReport, cfg: config.MonitoringConfig) -> list[AlertCondition]:
    name = report.model_version.model.name
    drifted = sorted(n for n, f in (report.features or {}).items() if f.get("drifted"))
    out = []
    for condition in drift_share_conditions({name: report.drift_share}, cfg.thresholds):
        details = {**condition.details, "version": report.model_version.version, "report": report.pk,
                   "window": [report.window_start.isoformat(), report.window_end.isoformat()],
                   "drifted_features": drifted}
        out.append(AlertCondition(condition.kind, condition.key, condition.severity,
                                  condition.message + (f" ({', '.join(drifted[:6])})" if drifted else ""), details))
    return out


# =============================================================================================
# Evaluation of every rule
# =============================================================================================


@dataclass
class Evaluation:
    raised: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"raised": self.raised, "errors": self.errors}


def evaluate_alerts(*, now: datetime | None = None) -> Evaluation:
    """Run every rule of ``monitoring.alert_rules`` on current numbers, fold the conditions into
    alerts, resolve the cleared ones and send the due notifications. One failing rule is logged and
    reported; the others still run."""
    now = now or timezone.now()
    cfg = config.load()
    t = cfg.thresholds
    result = Evaluation()

    def latency() -> list[AlertCondition]:
        win = selectors.request_window(minutes=cfg.metrics_window_minutes)
        return latency_conditions({e: w.avg_ms for e, w in win.items() if w.requests >= cfg.min_latency_requests}, t)

    def errors() -> list[AlertCondition]:
        win = selectors.request_window(minutes=cfg.metrics_window_minutes)
        return error_rate_conditions({e: (w.errors, w.requests) for e, w in win.items()}, t)

    def resources() -> list[AlertCondition]:
        cpu, memory = selectors.system_utilization()
        return resource_conditions(cpu=cpu, memory=memory, t=t)

    def disk() -> list[AlertCondition]:
        return disk_conditions(selectors.disk_usage(), t)

    projection: list[Any] = []  # computed once, by whichever of the two cost rules runs first

    def month() -> Any:
        if not projection:
            projection.append(selectors.month_projection(day=timezone.localdate(now)))
        return projection[0]

    def cost() -> list[AlertCondition]:
        today = timezone.localdate(now)
        spent = float(selectors.cost_for_day(day=today))
        found = daily_cost_conditions(day=today.isoformat(), spent_usd=spent, t=t)
        found += [c for c in monthly_cost_conditions(month()) if c.kind == "cost_limit_exceeded"]
        for condition in found:
            logger.warning(condition.message)
        return found

    def cost_projection() -> list[AlertCondition]:
        found = [c for c in monthly_cost_conditions(month()) if c.kind == "cost_projection"]
        for condition in found:
            logger.warning(condition.message)
        return found

    def drift() -> list[AlertCondition]:
        out = []
        for version in selectors.active_versions():
            report = selectors.latest_drift_report(version=version)
            if report is not None:
                out += _drift_conditions(report=report, cfg=cfg)
        return out

    def runs() -> list[AlertCondition]:
        since = now - timedelta(hours=cfg.failed_run_lookback_hours)
        return failed_run_conditions(selectors.failed_runs_since(since=since))

    def loading() -> list[AlertCondition]:
        return model_loading_conditions({m: str(v.get("error", "")) for m, v in selectors.model_load_failures().items()})

    rules = [("high_latency", latency), ("high_error_rate", errors), ("high_resource_usage", resources),
             ("disk_space", disk),
             ("cost_limit_exceeded", cost), ("cost_projection", cost_projection), ("data_drift", drift),
             ("run_failed", runs), ("model_load_failed", loading)]
    for kind, rule in rules:
        try:
            raised = apply_conditions(kind=kind, conditions=rule(), now=now)
            result.raised[kind] = [r.alert.key for r in raised]
        except Exception as exc:  # noqa: BLE001 - one broken rule must not silence the others
            logger.exception("alert rule %s failed", kind)
            result.errors[kind] = f"{exc.__class__.__name__}: {exc}"
    try:
        raised = _check_performance_alerts(cfg=cfg)
        result.raised["low_accuracy"] = [r.alert.key for r in raised]
    except Exception as exc:  # noqa: BLE001
        logger.exception("alert rule low_accuracy failed")
        result.errors["low_accuracy"] = f"{exc.__class__.__name__}: {exc}"
    return result
