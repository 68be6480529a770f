"""Alert rules with the spec's thresholds. Framework-free: numbers in, conditions out.

Each rule returns the conditions that hold now. A condition's (kind, key) identifies it, so the
integration layer can fold repeats into one alert and resolve alerts whose condition has cleared.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from features.providers.base import budget_message, monthly_limit_message
from monitoring.budget import MonthProjection, projection_message


@dataclass(frozen=True)
class Thresholds:
    latency_ms: float = 500.0  # "High Latency: >500ms average response time"
    error_rate: float = 0.05  # "High Error Rate: >5% failed requests"
    resource_usage: float = 0.85  # ">85% CPU or memory utilization"
    accuracy: float = 0.80  # "Low Accuracy: <80% prediction accuracy"
    daily_cost_usd: float = 10.0
    monthly_cost_usd: float = 50.0  # the spec's "operational costs under $50/month"
    drift_share: float = 0.3
    min_requests: int = 20  # an error rate over 3 requests is noise, not an outage
    disk_usage: float = 0.90  # a full volume stops artifact and feature-store commits


@dataclass(frozen=True)
class AlertCondition:
    kind: str
    key: str
    severity: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def latency_conditions(avg_ms_by_endpoint: Mapping[str, float], t: Thresholds) -> list[AlertCondition]:
    return [
        AlertCondition(
            "high_latency", endpoint, "critical" if avg > 2 * t.latency_ms else "warning",
            f"Prediction latency exceeded {t.latency_ms:.0f}ms: {endpoint} averages {avg:.0f}ms",
            {"avg_ms": avg, "threshold_ms": t.latency_ms},
        )
        for endpoint, avg in sorted(avg_ms_by_endpoint.items())
        if avg > t.latency_ms
    ]


def error_rate_conditions(counts_by_endpoint: Mapping[str, tuple[int, int]], t: Thresholds) -> list[AlertCondition]:
    """``counts_by_endpoint``: endpoint -> (failed requests, all requests)."""
    out = []
    for endpoint, (errors, total) in sorted(counts_by_endpoint.items()):
        if total >= t.min_requests and errors / total > t.error_rate:
            out.append(AlertCondition(
                "high_error_rate", endpoint, "critical",
                f"Error rate {errors / total:.1%} > {t.error_rate:.0%} on {endpoint} ({errors} of {total} requests)",
                {"errors": errors, "requests": total, "threshold": t.error_rate},
            ))
    return out


def resource_conditions(*, cpu: float | None, memory: float | None, t: Thresholds) -> list[AlertCondition]:
    """``cpu`` and ``memory``: utilization fractions in [0, 1]."""
    out = []
    for name, value in (("cpu", cpu), ("memory", memory)):
        if value is not None and value > t.resource_usage:
            out.append(AlertCondition(
                "high_resource_usage", name, "warning",
                f"{name.upper()} utilization {value:.0%} > {t.resource_usage:.0%}",
                {"utilization": value, "threshold": t.resource_usage},
            ))
    return out


def disk_conditions(usage_by_volume: Mapping[str, tuple[float, float]], t: Thresholds) -> list[AlertCondition]:
    """``usage_by_volume``: path -> (used fraction in [0, 1], free bytes) of the volumes holding the
    model artifacts and the feature store."""
    out = []
    for path, (used, free) in sorted(usage_by_volume.items()):
        if used > t.disk_usage:
            severity = "critical" if used > (1.0 + t.disk_usage) / 2 else "warning"
            out.append(AlertCondition(
                "disk_space", path, severity,
                f"Disk {used:.0%} full at {path} ({free / 1e9:.1f} GB free) > {t.disk_usage:.0%}",
                {"used": used, "free_bytes": free, "threshold": t.disk_usage},
            ))
    return out


def accuracy_conditions(accuracy_by_model: Mapping[str, float | None], t: Thresholds) -> list[AlertCondition]:
    return [
        AlertCondition(
            "low_accuracy", model, "warning",
            f"Model {model} accuracy {acc:.1%} < {t.accuracy:.0%}",
            {"accuracy": acc, "threshold": t.accuracy},
        )
        for model, acc in sorted(accuracy_by_model.items())
        if acc is not None and acc < t.accuracy
    ]


def daily_cost_conditions(*, day: str, spent_usd: float, t: Thresholds) -> list[AlertCondition]:
    if spent_usd <= t.daily_cost_usd:
        return []
    return [AlertCondition("cost_limit_exceeded", day, "critical", budget_message(spent_usd, t.daily_cost_usd),
                           {"spent_usd": spent_usd, "limit_usd": t.daily_cost_usd})]


def monthly_cost_conditions(projection: MonthProjection) -> list[AlertCondition]:
    """The month's cost against ``ML_MONTHLY_COST_LIMIT_USD``: ``cost_limit_exceeded`` (key: the month,
    critical) once the month-to-date passes the limit, else ``cost_projection`` (warning) while the
    projected month-end cost does. Keyed by month: one open alert per month."""
    details = projection.to_dict()
    if projection.month_to_date_over_limit:
        return [AlertCondition("cost_limit_exceeded", projection.month, "critical",
                               monthly_limit_message(projection.month_to_date_usd, projection.limit_usd),
                               {**details, "spent_usd": projection.month_to_date_usd})]
    if projection.over_limit:
        return [AlertCondition("cost_projection", projection.month, "warning", projection_message(projection),
                               details)]
    return []


def drift_share_conditions(drift_share_by_model: Mapping[str, float], t: Thresholds) -> list[AlertCondition]:
    return [
        AlertCondition(
            "data_drift", model, "warning",
            f"Data drift on {model}: {share:.0%} of features drifted > {t.drift_share:.0%}",
            {"drift_share": share, "threshold": t.drift_share},
        )
        for model, share in sorted(drift_share_by_model.items())
        if share > t.drift_share
    ]


def failed_run_conditions(failed: Mapping[str, str]) -> list[AlertCondition]:
    """``failed``: run label (e.g. "training run 12") -> error text."""
    return [
        AlertCondition("run_failed", label, "critical", f"{label} failed: {error}", {"error": error})
        for label, error in sorted(failed.items())
    ]


def model_loading_conditions(failures: Mapping[str, str]) -> list[AlertCondition]:
    """``failures``: model name -> error, e.g. a missing artifact or a checksum mismatch."""
    return [
        AlertCondition("model_load_failed", model, "critical", f"Failed to load model {model}: {error}",
                       {"error": error})
        for model, error in sorted(failures.items())
    ]


def performance_conditions(
    values_by_model: Mapping[str, float | None],
    floors_by_model: Mapping[str, float | None],
    *,
    metric: str = "accuracy",
    lower_is_better: bool = False,
) -> list[AlertCondition]:
    """Realized performance against a per-model floor (kind ``low_accuracy``, whatever the metric).

    ``floors_by_model``: the floor of each model (relative to its validated value, or absolute); a
    model without a floor or a value is not judged. For a lower-is-better metric (MAE) the floor is
    a ceiling.
    """
    out = []
    for model, current in sorted(values_by_model.items()):
        floor = floors_by_model.get(model)
        if current is None or floor is None or current != current:
            continue
        breached = current > floor if lower_is_better else current < floor
        if not breached:
            continue
        if metric == "accuracy":
            text = f"Model {model} accuracy {current:.1%} < {floor:.1%}"
        else:
            text = f"Model {model} {metric} {current:.4f} {'>' if lower_is_better else '<'} {floor:.4f}"
        out.append(AlertCondition("low_accuracy", model, "warning", text,
                                  {"metric": metric, "value": current, "threshold": floor}))
    return out
