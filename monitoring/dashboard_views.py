"""The monitoring dashboard: server-rendered pages over ``monitoring.selectors`` (reads) and a few
POST actions over services (acknowledge and resolve alerts; promote and roll back), each for staff
holding its model permission (``investml.permissions``)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse, reverse_lazy
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from investml import permissions
from investml.permissions import permission_required
from monitoring import charts, config, selectors, services
from monitoring.models import Alert, CostRecord
from registry.models import ModelVersion, RegisteredModel
from registry.selectors import (
    deployment_history,
    feature_importance,
    registered_models,
    rollback_target,
    versions,
)
from registry.services import RegistryError
from registry.services import promote as promote_version
from registry.services import rollback as rollback_model
from training.models import TrainingRun

LOGIN_URL = reverse_lazy("dashboard:login")


def dashboard_view(func):
    """Login required (the dashboard's own login page, open to every active user)."""
    return login_required(login_url=LOGIN_URL)(func)


def operator_view(perm: str):
    """Login required, then staff status and the model permission ``perm`` (``investml.permissions``),
    read from the database: 403 without them."""

    def decorator(func):
        return dashboard_view(permission_required(perm)(func))

    return decorator


class LoginView(auth_views.LoginView):
    template_name = "dashboard/login.html"
    redirect_authenticated_user = True

    def get_default_redirect_url(self):
        return reverse("dashboard:overview")


def _render(request: HttpRequest, template: str, section: str, context: dict[str, Any]) -> HttpResponse:
    counts = selectors.open_alert_counts()
    return render(request, template, {
        "section": section,
        "nav_alerts": sum(counts.values()),
        "nav_alert_level": "critical" if counts.get("critical") else ("warning" if counts.get("warning") else ""),
        "now": timezone.now(),
        **context,
    })


def _back(request: HttpRequest, default: str) -> HttpResponse:
    target = request.POST.get("next") or default
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = default
    return redirect(target)


def _cost_categories() -> list[tuple[str, str]]:
    return list(CostRecord.Category.choices)


def _model_rows(versions: list[Any], cfg: config.MonitoringConfig) -> list[dict[str, Any]]:
    rows = []
    for version in versions:
        perf = selectors.latest_performance(version=version)
        validated = (version.metrics or {}).get(cfg.performance_metric)
        rows.append({
            "version": version,
            "metrics": version.metrics or {},
            "perf": perf,
            "live": getattr(perf, cfg.performance_metric) if perf else None,
            "floor": config.performance_floor(cfg=cfg, validated=validated),
            "drift": selectors.latest_drift_report(version=version),
            "open_alerts": Alert.objects.filter(resolved=False, key=version.model.name).count(),
        })
    return rows


# ---------------------------------------------------------------------------------------------
# pages


@dashboard_view
def overview(request):
    cfg = config.load()
    today = timezone.localdate()
    spent = float(selectors.cost_for_day(day=today))
    limit = selectors.daily_cost_limit()
    runs = selectors.recent_training_runs(limit=6)
    series = selectors.cost_series(days=14)
    return _render(request, "dashboard/overview.html", "overview", {
        "cfg": cfg,
        "runs": runs,
        "last_run": runs[0] if runs else None,
        "models": _model_rows(selectors.active_versions(), cfg),
        "alerts": list(selectors.open_alerts()[:8]),
        "alert_counts": selectors.open_alert_counts(),
        "spent": spent,
        "limit": limit,
        "spent_pct": min(100.0, 100.0 * spent / limit) if limit > 0 else 100.0,
        "by_category": {k: float(v) for k, v in selectors.costs_by_category(day=today).items()},
        "cost_chart": charts.cost_chart(series, limit=limit, categories=_cost_categories())
        if any(row["total"] for row in series) else None,
        "load_failures": selectors.model_load_failures(),
    })


@dashboard_view
def alerts(request):
    kind = request.GET.get("kind") or ""
    severity = request.GET.get("severity") or ""
    state = request.GET.get("state") or "open"
    rows = list(selectors.alerts(kind=kind or None, severity=severity or None, state=state)[:200])
    return _render(request, "dashboard/alerts.html", "alerts", {
        "alerts": rows,
        "kinds": selectors.alert_kinds(),
        "severities": Alert.Severity.choices,
        "states": [("open", "Open"), ("unacknowledged", "Unacknowledged"), ("acknowledged", "Acknowledged"),
                   ("resolved", "Resolved"), ("all", "All")],
        "filters": {"kind": kind, "severity": severity, "state": state},
        "alert_counts": selectors.open_alert_counts(),
    })


@require_POST
@operator_view(permissions.ACKNOWLEDGE_ALERTS)
def acknowledge(request, alert_id: int):
    get_object_or_404(Alert, pk=alert_id)
    alert = services.acknowledge_alert(alert_id=alert_id, user=request.user.get_username())
    messages.success(request, f"Acknowledged {alert.kind} {alert.key}.")
    return _back(request, reverse("dashboard:alerts"))


@require_POST
@operator_view(permissions.ACKNOWLEDGE_ALERTS)
def resolve(request, alert_id: int):
    get_object_or_404(Alert, pk=alert_id)
    alert = services.resolve_alert(alert_id=alert_id, user=request.user.get_username())
    messages.success(request, f"Resolved {alert.kind} {alert.key}.")
    return _back(request, reverse("dashboard:alerts"))


@dashboard_view
def costs(request):
    days = 30
    series = selectors.cost_series(days=days)
    limit = selectors.daily_cost_limit()
    today = timezone.localdate()
    total = sum(row["total"] for row in series)
    projection = selectors.month_projection(day=today)
    return _render(request, "dashboard/costs.html", "costs", {
        "limit": limit,
        "series": list(reversed(series)),
        "categories": _cost_categories(),
        "chart": charts.cost_chart(series, limit=limit, categories=_cost_categories()) if total else None,
        "total": total,
        "average": total / days,
        "month_to_date": projection.month_to_date_usd,
        "projection": projection,
        "monthly_limit": projection.limit_usd,
        "days_over": sum(1 for row in series if row["total"] > limit),
        "today": today,
        "today_total": float(selectors.cost_for_day(day=today)),
        "sources": selectors.cost_by_source(day=today),
    })


@dashboard_view
def models(request):
    cfg = config.load()
    rows = []
    for registered in registered_models():
        all_versions = list(versions(model_name=registered.name))
        active = next((v for v in all_versions if v.status == "active"), None)
        rows.append({"model": registered, "active": active, "versions": len(all_versions),
                     "latest": all_versions[0] if all_versions else None,
                     "row": _model_rows([active], cfg)[0] if active else None})
    return _render(request, "dashboard/models.html", "models", {"models": rows, "cfg": cfg})


@dashboard_view
def model_detail(request, name: str):
    registered = get_object_or_404(RegisteredModel, name=name)
    cfg = config.load()
    all_versions = list(versions(model_name=name).prefetch_related("members", "members__model"))
    active = next((v for v in all_versions if v.status == "active"), None)
    history = selectors.performance_history(model_name=name)
    by_version: dict[str, list[Any]] = {}
    for record in history:
        by_version.setdefault(f"v{record.model_version.version}", []).append(record)
    floors = {f"v{v.version}": config.performance_floor(cfg=cfg, validated=(v.metrics or {}).get(cfg.performance_metric))
              for v in all_versions}
    lineage = []
    node, seen = active or (all_versions[0] if all_versions else None), set()
    while node is not None and node.pk not in seen and len(lineage) < 20:
        lineage.append(node)
        seen.add(node.pk)
        node = node.parent
    return _render(request, "dashboard/model_detail.html", "models", {
        "model": registered,
        "versions": all_versions,
        "active": active,
        "rollback_to": rollback_target(active=active) if active else None,
        "lineage": lineage,
        "events": deployment_history(model_name=name, limit=15),
        "cfg": cfg,
        "performance_chart": charts.performance_chart(by_version, metric=cfg.performance_metric, floors=floors)
        if history else None,
        "rank_ic_chart": charts.performance_chart(by_version, metric="rank_ic") if history else None,
        "validated_chart": charts.validated_metrics_chart(list(reversed(all_versions)))
        if any(v.metrics for v in all_versions) else None,
        "rows": _model_rows([active], cfg) if active else [],
        "importance": feature_importance(version=active) if active else [],
    })


@require_POST
@operator_view(permissions.PROMOTE)
def promote(request, name: str, version_id: int):
    version = get_object_or_404(ModelVersion, pk=version_id, model__name=name)
    force = request.POST.get("force") == "1"
    try:
        decision = promote_version(version=version, actor=request.user.get_username(),
                                   reason="dashboard" + (" (forced)" if force else ""), force=force)
    except RegistryError as exc:
        messages.error(request, str(exc))
    else:
        if decision.passed:
            messages.success(request, f"{name}@{version.version} is now active. {decision.reason}")
        else:
            messages.warning(request, f"The promotion gate kept {name}@{version.version} in staging: {decision.reason}")
    return redirect("dashboard:model", name=name)


@require_POST
@operator_view(permissions.PROMOTE)
def rollback(request, name: str):
    try:
        target = rollback_model(model_name=name, actor=request.user.get_username(), reason="dashboard")
    except RegistryError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Rolled back {name} to v{target.version}.")
    return redirect("dashboard:model", name=name)


@dashboard_view
def drift(request):
    cfg = config.load()
    names = sorted({r.model_version.model.name for r in selectors.drift_reports(limit=500)})
    chosen = request.GET.get("model") or (names[0] if names else "")
    if chosen and chosen not in names:
        raise Http404(f"no drift reports for model {chosen!r}")
    matrix = selectors.drift_matrix(model_name=chosen, limit=30) if chosen else None
    latest = selectors.drift_reports(model_name=chosen, limit=1) if chosen else []
    report = latest[0] if latest else None
    features = sorted((report.features or {}).items(), key=lambda item: -float(item[1].get("psi") or 0)) if report else []
    return _render(request, "dashboard/drift.html", "drift", {
        "models": names,
        "chosen": chosen,
        "report": report,
        "features": features,
        "cfg": cfg,
        "heatmap": charts.drift_heatmap(matrix, psi_threshold=cfg.drift_psi_threshold)
        if matrix and matrix["features"] else None,
        "share_chart": charts.drift_share_chart(matrix, threshold=cfg.thresholds.drift_share) if matrix else None,
        "reports": selectors.drift_reports(model_name=chosen, limit=15) if chosen else [],
    })


@dashboard_view
def runs(request):
    return _render(request, "dashboard/runs.html", "runs", {
        "pipeline_runs": selectors.recent_pipeline_runs(limit=50),
        "runs": selectors.recent_training_runs(limit=50),
    })


@dashboard_view
def run_detail(request, run_id: int):
    run = get_object_or_404(TrainingRun, pk=run_id)
    stages = list(run.stages or [])
    return _render(request, "dashboard/run_detail.html", "runs", {
        "run": run,
        "stages": stages,
        "stage_chart": charts.stage_chart(stages) if stages else None,
        "versions": list(run.model_versions.select_related("model").all()),
        "log_tail": "\n".join((run.log or "").splitlines()[-200:]),
    })
