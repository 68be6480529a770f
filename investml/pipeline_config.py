"""The pipeline configuration file (the spec's ``config.json``), loaded and validated.

Framework-free on purpose: settings import it at start-up, and a bad file must stop start-up
with a message that names the offending key, before anything runs on wrong values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class PipelineConfigError(ValueError):
    """The pipeline config file is missing, not JSON, or does not match the schema."""


@dataclass(frozen=True)
class Field:
    kind: type | tuple[type, ...]
    required: bool = False
    default: Any = None
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    pattern: str | None = None
    maximum: float | None = None


_NUMBER = (int, float)

_ORCHESTRATOR = {
    "name": Field(str, default="ml_orchestrator"),
    "max_concurrent_pipelines": Field(int, default=3, minimum=1),
    "enable_scheduling": Field(bool, default=True),
    "enable_auto_retraining": Field(bool, default=True),
    "cost_limit_daily_usd": Field(_NUMBER, default=10.0, minimum=0),
    "max_retries": Field(int, default=3, minimum=0),
    "retry_backoff_seconds": Field(_NUMBER, default=30.0, minimum=0),
}

_SCHEDULE = {
    "frequency": Field(str, default="daily", choices=("hourly", "daily", "weekly")),
    "time_of_day": Field(str, default="02:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$"),
    "day_of_week": Field(int, default=0, minimum=0),
}

_TRAINING = {
    "default_schedule": _SCHEDULE,
    "drift_schedule": _SCHEDULE,
    "performance_threshold": Field(_NUMBER, default=0.8, minimum=0),
    "drift_threshold": Field(_NUMBER, default=0.3, minimum=0),
    "max_training_hours": Field(_NUMBER, default=24.0, minimum=0),
    "horizon_days": Field(int, default=5, minimum=1),
    "feature_set": Field(str, default="default",
                         choices=("default", "alpha158", "default_cs", "alpha158_cs", "default_social")),
    "promotion_metric": Field(str, default="rank_ic"),
    "train_years": Field(_NUMBER, default=5, minimum=0),
    # daily runs refit; the walk-forward evaluation runs when the last one is this many trading days old
    "reevaluate_every_trading_days": Field(int, default=5, minimum=0),
}

_COMMON_MODEL = {
    "type": Field(str, required=True),
    "horizon_days": Field(int, minimum=1),
    "seed": Field(int, default=42),
    "enabled": Field(bool, default=True),
}

MODEL_SCHEMAS: dict[str, dict[str, Field]] = {
    "lstm_predictor": {
        **_COMMON_MODEL,
        "features": Field(int, default=20, minimum=1),
        "sequence_length": Field(int, default=60, minimum=2),
        "hidden_size": Field(int, default=128, minimum=1),
        "num_layers": Field(int, default=1, minimum=1),
        "dropout": Field(_NUMBER, default=0.0, minimum=0, maximum=0.95),
        "batch_size": Field(int, default=256, minimum=1),
        "epochs": Field(int, default=20, minimum=1),
        "learning_rate": Field(_NUMBER, default=1e-3, minimum=0),
        "weight_decay": Field(_NUMBER, default=0.0, minimum=0),
        "patience": Field(int, default=3, minimum=1),
        "use_amp": Field(bool, default=False),
        "gradient_checkpointing": Field(bool, default=False),
    },
    "xgboost_classifier": {
        **_COMMON_MODEL,
        "n_estimators": Field(int, default=400, minimum=1),
        "max_depth": Field(int, default=6, minimum=1),
        "learning_rate": Field(_NUMBER, default=0.05, minimum=0),
        "subsample": Field(_NUMBER, default=0.8, minimum=0, maximum=1),
        "colsample_bytree": Field(_NUMBER, default=0.8, minimum=0, maximum=1),
        "min_child_weight": Field(_NUMBER, default=100.0, minimum=0),
        "reg_alpha": Field(_NUMBER, default=10.0, minimum=0),
        "reg_lambda": Field(_NUMBER, default=100.0, minimum=0),
        "objective": Field(str, default="binary", choices=("binary", "rank")),
        "eval_every": Field(int, default=25, minimum=1),
    },
    "prophet_forecaster": {
        **_COMMON_MODEL,
        "interval_width": Field(_NUMBER, default=0.8, minimum=0),
        "changepoint_prior_scale": Field(_NUMBER, default=0.05, minimum=0),
        "history_days": Field(int, default=750, minimum=30),
    },
    "ensemble": {
        **_COMMON_MODEL,
        "members": Field(list, default=None),
    },
}

MODEL_TYPES = {
    "lstm_predictor": "neural_network",
    "xgboost_classifier": "tree_ensemble",
    "prophet_forecaster": "time_series",
    "ensemble": "ensemble",
}

_PROVIDER = {
    "requests_per_minute": Field(_NUMBER, default=5, minimum=0),
    "requests_per_day": Field(int, default=500, minimum=0),
    "cost_per_call_usd": Field(_NUMBER, default=0.0, minimum=0),
    "timeout_seconds": Field(_NUMBER, default=30, minimum=0),
    "max_retries": Field(int, default=4, minimum=0),
}

_MONITORING = {
    "latency_ms_threshold": Field(_NUMBER, default=500.0, minimum=0),
    "error_rate_threshold": Field(_NUMBER, default=0.05, minimum=0),
    "resource_usage_threshold": Field(_NUMBER, default=0.85, minimum=0),
    "accuracy_threshold": Field(_NUMBER, default=0.8, minimum=0),
    "drift_window_days": Field(int, default=20, minimum=1),
    "performance_window_days": Field(int, default=20, minimum=1),
}

SECTIONS: dict[str, Any] = {
    "orchestrator": _ORCHESTRATOR,
    "training": _TRAINING,
    "models": MODEL_SCHEMAS,
    "providers": None,  # provider name -> _PROVIDER
    "monitoring": _MONITORING,
}


def _check_field(path: str, value: Any, field: Field) -> Any:
    kinds = field.kind if isinstance(field.kind, tuple) else (field.kind,)
    # bool is an int subclass in Python; "true" where a number is wanted is a typo, not a 1.
    if isinstance(value, bool) and bool not in kinds:
        raise PipelineConfigError(f"{path}: expected {_kind_name(kinds)}, got a boolean")
    if not isinstance(value, kinds):
        raise PipelineConfigError(
            f"{path}: expected {_kind_name(kinds)}, got {type(value).__name__} {value!r}"
        )
    if field.choices is not None and value not in field.choices:
        raise PipelineConfigError(f"{path}: {value!r} is not one of {list(field.choices)}")
    if field.minimum is not None and value < field.minimum:
        raise PipelineConfigError(f"{path}: {value!r} is below the minimum {field.minimum}")
    if field.maximum is not None and value > field.maximum:
        raise PipelineConfigError(f"{path}: {value!r} is above the maximum {field.maximum}")
    if field.pattern is not None and not re.match(field.pattern, value):
        raise PipelineConfigError(f"{path}: {value!r} does not match the format {field.pattern}")
    return float(value) if kinds == _NUMBER else value


def _kind_name(kinds: tuple[type, ...]) -> str:
    return "a number" if kinds == _NUMBER else " or ".join(k.__name__ for k in kinds)


def _check_object(path: str, raw: Any, schema: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise PipelineConfigError(f"{path}: expected an object, got {type(raw).__name__}")
    for key in raw:
        if key not in schema:
            raise PipelineConfigError(
                f"{path}.{key}: unknown key (allowed: {', '.join(sorted(schema))})"
            )
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        where = f"{path}.{key}"
        if isinstance(spec, Field):
            if key in raw:
                out[key] = _check_field(where, raw[key], spec)
            elif spec.required:
                raise PipelineConfigError(f"{where}: required key is missing")
            else:
                out[key] = spec.default
        else:
            out[key] = _check_object(where, raw.get(key, {}), spec)
    return out


def validate_pipeline_config(raw: Any) -> dict[str, Any]:
    """Return the config with defaults filled in, or raise naming the first bad key."""
    if not isinstance(raw, dict):
        raise PipelineConfigError("config: expected a JSON object at the top level")
    for section in raw:
        if section not in SECTIONS:
            raise PipelineConfigError(
                f"{section}: unknown section (allowed: {', '.join(SECTIONS)})"
            )
    config = {
        "orchestrator": _check_object("orchestrator", raw.get("orchestrator", {}), _ORCHESTRATOR),
        "training": _check_object("training", raw.get("training", {}), _TRAINING),
        "monitoring": _check_object("monitoring", raw.get("monitoring", {}), _MONITORING),
    }
    models_raw = raw.get("models", {})
    if not isinstance(models_raw, dict):
        raise PipelineConfigError("models: expected an object of model name -> settings")
    models: dict[str, dict[str, Any]] = {}
    for name, schema in MODEL_SCHEMAS.items():
        # Every known learner gets its defaults, so a config may list only the ones it tunes.
        given = models_raw.get(name, {"type": MODEL_TYPES[name]})
        models[name] = _check_object(f"models.{name}", given, schema)
        if models[name]["type"] != MODEL_TYPES[name]:
            raise PipelineConfigError(
                f"models.{name}.type: {models[name]['type']!r} is not {MODEL_TYPES[name]!r}"
            )
    for name in models_raw:
        if name not in MODEL_SCHEMAS:
            raise PipelineConfigError(
                f"models.{name}: unknown model (known: {', '.join(MODEL_SCHEMAS)})"
            )
    config["models"] = models
    providers_raw = raw.get("providers", {})
    if not isinstance(providers_raw, dict):
        raise PipelineConfigError("providers: expected an object of provider name -> limits")
    config["providers"] = {
        name: _check_object(f"providers.{name}", value, _PROVIDER)
        for name, value in providers_raw.items()
    }
    return config


def load_pipeline_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PipelineConfigError(f"pipeline config not found: {path} (set ML_PIPELINE_CONFIG)") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipelineConfigError(f"{path}: not valid JSON: {exc}") from exc
    try:
        return validate_pipeline_config(raw)
    except PipelineConfigError as exc:
        raise PipelineConfigError(f"{path}: {exc}") from exc
