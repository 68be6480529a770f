"""Reads for the inference API: health, models, versions, recommendations, cache statistics."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from django.core.cache import cache
from django.db import DatabaseError, connection
from django.db.models import Max
from django.utils import timezone

from inference import cache as prediction_cache
from inference import conf, prediction_log
from inference.exceptions import NotFound
from inference.model_manager import get_manager
from inference.models import DailyPrediction
from investml.celery import app
from registry.selectors import registered_models, versions


def cache_stats() -> dict[str, Any]:
    """Prediction cache hits and misses: this process's and every worker's (shared counters, updated
    when the prediction log is flushed). For ``/health`` and the Prometheus collector."""
    local = prediction_cache.process_counters()
    shared = prediction_cache.shared_counters()

    def ratio(c: dict[str, int]) -> float:
        total = c["hits"] + c["misses"]
        return c["hits"] / total if total else 0.0

    return {
        "hits": local["hits"],
        "misses": local["misses"],
        "hit_ratio": ratio(local),
        "errors": local["errors"],
        "all_workers": {**shared, "hit_ratio": ratio(shared)},
    }


HEALTH_PROBE_KEY = "health:probe"


def cache_state() -> str:
    """``ok`` when the shared cache (Redis, or the disk cache) takes a write and reads it back."""
    token = uuid.uuid4().hex
    try:
        cache.set(HEALTH_PROBE_KEY, token, 60)
        if cache.get(HEALTH_PROBE_KEY) != token:
            return "error: the cache did not return what was written"
    except Exception as exc:  # noqa: BLE001 - the probe reports, it must not crash
        return f"error: {exc.__class__.__name__}"
    return "ok"


def broker_state() -> str:
    """``ok`` when the Celery broker accepts a connection (within 2 seconds)."""
    try:
        with app.connection_for_write(connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
    except Exception as exc:  # noqa: BLE001 - the probe reports, it must not crash
        return f"error: {exc.__class__.__name__}"
    return "ok"


def health() -> tuple[dict[str, Any], int]:
    """The ``/health`` body and HTTP status: ``unhealthy`` (503) when the database is down,
    ``degraded`` (200) when an active model cannot be served (failed, or not loaded in this worker),
    none is active, or the cache or the broker cannot be reached; else ``healthy``. ``checks`` has
    the state of each service. The body is for staff: ``/health`` shows anonymous callers the status only."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        database = "ok"
    except Exception as exc:  # noqa: BLE001 - the probe reports, it must not crash
        database = f"error: {exc.__class__.__name__}"
    checks = {"database": database, "cache": cache_state(), "broker": broker_state()}
    service_reasons = [f"{name} unreachable: {state[len('error: '):]}" for name, state in checks.items()
                       if name != "database" and state != "ok"]
    body: dict[str, Any] = {
        "timestamp": timezone.now(),
        "database": database,
        "checks": checks,
        "cache": cache_stats(),
        "prediction_log": prediction_log.stats(),
    }
    if database != "ok":
        body.update(status="unhealthy", models_loaded=0, models=[], reasons=["database unreachable", *service_reasons],
                    active_versions={}, unloaded=[], loaded_versions=[])
        return body, 503
    manager = get_manager()
    try:
        manager.ensure_started()
        state = manager.status()
    except DatabaseError as exc:  # e.g. the registry tables do not exist yet
        body.update(status="unhealthy", models_loaded=0, models=[], active_versions={}, unloaded=[],
                    loaded_versions=[], reasons=[f"cannot read the model registry: {exc} (run manage.py migrate)"])
        return body, 503
    reasons: list[str] = list(service_reasons)
    served_names, active_versions, unloaded = [], {}, []
    for name, info in state["models"].items():
        version = info["active"]
        if version is not None:
            active_versions[name] = version.version
        if info["unloaded"]:
            unloaded.append(name)
            continue
        if version is None:
            continue
        if info["error"] and info["error"] not in reasons:
            reasons.append(info["error"])
        serving = info["serving"]
        if serving is not None:
            served_names.append(name)
            if serving.version_id != version.pk:
                reasons.append(f"{name}: serving {serving.label} while {name}@{version.version} is not loaded")
        elif not info["error"]:  # e.g. promoted after this worker started: nothing serves it yet
            reasons.append(f"{name}@{version.version} is active but not loaded in this worker (it loads on its "
                           f"first prediction, or POST /models/{name}/load)")
    if not active_versions:
        reasons.append("no active model versions: train and promote one (python manage.py retrain --sync)")
    body.update(
        status="degraded" if reasons else "healthy",
        models_loaded=len(served_names),
        models=served_names,
        reasons=reasons,
        active_versions=active_versions,
        unloaded=unloaded,
        loaded_versions=[s.label for s in state["loaded"]],
    )
    return body, 200


def models_overview() -> list[dict[str, Any]]:
    """Every registered model: its active version and whether this process serves it."""
    state = get_manager().status()
    out = []
    for name, info in state["models"].items():
        version = info["active"]
        serving = info["serving"]
        if info["unloaded"]:
            status = "unloaded"
        elif version is None:
            status = "no_active_version"
        elif info["error"] and info["active_loaded"] is None:
            status = "failed"
        elif info["active_loaded"] is not None:
            status = "loaded"
        else:
            status = "not_loaded"
        features = len(serving.feature_columns) if serving is not None else (
            len(version.feature_columns or []) if version is not None else 0
        )
        score = serving.score if serving is not None else None
        if score is None and version is not None:
            value = (version.gate or {}).get("score")
            score = float(value) if isinstance(value, int | float) else None
        out.append({
            "name": name,
            "type": (version.model_type if version is not None and version.model_type else info["model_type"]),
            "features": features,
            "score": score,
            "loaded_at": info["active_loaded"].loaded_at if info["active_loaded"] is not None else None,
            "version": version.version if version is not None else None,
            "status": status,
            "horizon_days": version.horizon_days if version is not None else None,
            "error": info["error"],
        })
    return out


def model_versions(*, model_name: str) -> list[dict[str, Any]]:
    if not registered_models().filter(name=model_name).exists():
        known = ", ".join(registered_models().values_list("name", flat=True)) or "none registered yet"
        raise NotFound(f"unknown model {model_name!r} (known: {known})", field="model_name")
    loaded = {s.version_id for s in get_manager().status()["loaded"]}
    out = []
    for v in versions(model_name=model_name):
        gate = v.gate or {}
        score = gate.get("score")
        out.append({
            "version": v.version,
            "status": v.status,
            "status_reason": v.status_reason,
            "model_type": v.model_type,
            "target": v.target,
            "horizon_days": v.horizon_days,
            "features": len(v.feature_columns or []),
            "score": float(score) if isinstance(score, int | float) else None,
            "metrics": {k: val for k, val in (v.metrics or {}).items() if isinstance(val, int | float)},
            "created_at": v.created_at,
            "activated_at": v.activated_at,
            "artifact_sha256": v.artifact_sha256,
            "training_run_id": v.training_run_id,
            "loaded": v.pk in loaded,
        })
    return out


def recommendations(
    *, on: date | None = None, top: int = 20, model_name: str | None = None, recommendation: str | None = None
) -> dict[str, Any]:
    """The day's ranked recommendations of the preferred model (``ML_RECOMMENDATION_MODELS`` order:
    the ensemble first) or of ``model_name``; the latest date with predictions by default."""
    qs = DailyPrediction.objects.all()
    if model_name:
        qs = qs.filter(model_version__model__name=model_name)
    if on is None:
        on = qs.aggregate(last=Max("date"))["last"]
        if on is None:
            scope = f" for model {model_name!r}" if model_name else ""
            raise NotFound(
                f"no daily predictions{scope} yet: run python manage.py predict_universe", field="date"
            )
    day_rows = qs.filter(date=on)
    versions = list(
        day_rows.values_list("model_version_id", "model_version__model__name", "model_version__version")
        .annotate(last=Max("created_at"))
        .order_by("-last")
    )
    if not versions:
        scope = f" of model {model_name!r}" if model_name else ""
        raise NotFound(f"no daily predictions{scope} on {on.isoformat()}", field="date")
    preference = {name: i for i, name in enumerate(conf.recommendation_models())}
    versions.sort(key=lambda v: preference.get(v[1], len(preference)))
    version_id, name, number = versions[0][:3]
    rows = day_rows.filter(model_version_id=version_id).select_related("ticker")
    if recommendation:
        rows = rows.filter(recommendation=recommendation)
    total = rows.count()
    rows = list(rows.order_by("rank")[:top])
    horizon = rows[0].horizon_days if rows else None
    if horizon is None:
        first = DailyPrediction.objects.filter(date=on, model_version_id=version_id).first()
        horizon = first.horizon_days if first else None
    return {
        "date": on,
        "model_name": name,
        "model_version": number,
        "horizon_days": horizon,
        "total": total,
        "count": len(rows),
        "recommendations": [
            {
                "rank": r.rank,
                "ticker": r.ticker.symbol,
                "recommendation": r.recommendation,
                "expected_return": r.expected_return,
                "prob_up": r.prob_up,
                "confidence": r.confidence,
                "predicted_price": r.predicted_price,
            }
            for r in rows
        ],
    }
