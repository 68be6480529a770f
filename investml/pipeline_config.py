"""The pipeline configuration file (the spec's ``config.json``): one typed, validated, frozen object.

Framework-free on purpose: settings load it once at start-up (``settings.PIPELINE_CONFIG``), and a
bad file stops start-up with a message that names the offending key, before anything runs on wrong
values. Every key is typed, ranged and documented here; unknown keys are errors (a typo must not
silently fall back to a default). Learners every file gets, listed or not, with their defaults.

Environment variables that the spec also names (``ENABLE_AUTO_RETRAINING``,
``MODEL_PERFORMANCE_THRESHOLD``, ``DATA_DRIFT_THRESHOLD``, ``ML_DAILY_COST_LIMIT_USD``) win over
their keys here; settings resolve that once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

FEATURE_SETS = ("default", "alpha158", "default_cs", "alpha158_cs", "default_social")


class PipelineConfigError(ValueError):
    """The pipeline config file is missing, not JSON, or does not match the schema."""


class _Section(BaseModel):
    # strict: "3" is not 3 and true is not 1 (a typo, not a value); floats accept JSON integers
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Fraction = Annotated[float, Field(ge=0, le=1)]
NonNegative = Annotated[float, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]


class OrchestratorConfig(_Section):
    max_concurrent_pipelines: Positive = 3
    enable_scheduling: bool = True  # the daily pipeline schedule is enabled when seeded
    enable_auto_retraining: bool = True  # ENABLE_AUTO_RETRAINING wins
    cost_limit_daily_usd: NonNegative = 10.0  # ML_DAILY_COST_LIMIT_USD wins
    max_retries: Annotated[int, Field(ge=0)] = 3  # per stage, for transient failures
    retry_backoff_seconds: NonNegative = 30.0


class ScheduleConfig(_Section):
    frequency: Literal["hourly", "daily", "weekly"] = "daily"
    time_of_day: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] = "02:00"  # UTC
    day_of_week: Annotated[int, Field(ge=0, le=6)] = 0  # weekly runs (crontab): 0 = Sunday


class TrainingConfig(_Section):
    default_schedule: ScheduleConfig = ScheduleConfig()  # the daily pipeline
    drift_schedule: ScheduleConfig = ScheduleConfig()  # the drift check
    performance_threshold: NonNegative = 0.75  # MODEL_PERFORMANCE_THRESHOLD wins
    drift_threshold: Fraction = 0.3  # DATA_DRIFT_THRESHOLD wins
    max_training_hours: Annotated[float, Field(gt=0)] = 24.0
    horizon_days: Positive = 5
    feature_set: Literal[FEATURE_SETS] = "default"  # type: ignore[valid-type]
    promotion_metric: str = "rank_ic"  # one of registry.metrics.METRIC_KEYS (settings check it)
    train_years: NonNegative = 5  # history a model trains on; 0 = all
    # daily runs refit; the walk-forward evaluation runs when the last one is this many trading days old
    reevaluate_every_trading_days: Annotated[int, Field(ge=0)] = 5
    # a daily LSTM refit fine-tunes the active network this many epochs (0: fits from scratch)
    refit_warm_start_epochs: Annotated[int, Field(ge=0)] = 1


class _LearnerConfig(_Section):
    horizon_days: Positive | None = None  # None: training.horizon_days
    seed: int = 42
    enabled: bool = True


class LSTMConfig(_LearnerConfig):
    type: Literal["neural_network"] = "neural_network"
    features: Positive = 20
    sequence_length: Annotated[int, Field(ge=2)] = 60
    hidden_size: Positive = 128
    num_layers: Positive = 1
    dropout: Annotated[float, Field(ge=0, le=0.95)] = 0.0
    batch_size: Positive = 256
    epochs: Positive = 20
    learning_rate: Annotated[float, Field(gt=0)] = 1e-3
    weight_decay: NonNegative = 0.0
    patience: Positive = 3
    validation_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.2
    use_amp: bool = False
    gradient_checkpointing: bool = False
    device: Literal["cpu", "cuda"] | None = None  # None: CUDA when available


class XGBoostConfig(_LearnerConfig):
    type: Literal["tree_ensemble"] = "tree_ensemble"
    n_estimators: Positive = 400
    max_depth: Positive = 6
    learning_rate: Annotated[float, Field(gt=0)] = 0.05
    subsample: Annotated[float, Field(gt=0, le=1)] = 0.8
    colsample_bytree: Annotated[float, Field(gt=0, le=1)] = 0.8
    min_child_weight: NonNegative = 100.0
    reg_alpha: NonNegative = 10.0
    reg_lambda: NonNegative = 100.0
    objective: Literal["binary", "rank"] = "binary"
    calibration: Literal["platt", "isotonic", "none"] = "platt"
    validation_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.2
    eval_every: Positive = 25
    permutation_top: Annotated[int, Field(ge=0)] = 20
    n_jobs: Positive | None = None  # None: every core
    device: Literal["cpu", "cuda"] = "cpu"


class ProphetConfig(_LearnerConfig):
    type: Literal["time_series"] = "time_series"
    interval_width: Annotated[float, Field(gt=0, lt=1)] = 0.8
    changepoint_prior_scale: Annotated[float, Field(gt=0)] = 0.05
    history_days: Annotated[int, Field(ge=30)] = 750
    min_history_days: Annotated[int, Field(ge=3)] = 30
    uncertainty_samples: Annotated[int, Field(ge=0)] = 200
    yearly_seasonality: bool = False


class EnsembleConfig(_LearnerConfig):
    type: Literal["ensemble"] = "ensemble"
    members: list[str] | None = None  # None: every enabled base learner
    ridge_alpha: NonNegative = 0.1
    non_negative: bool = True


class ModelsConfig(_Section):
    lstm_predictor: LSTMConfig = LSTMConfig()
    xgboost_classifier: XGBoostConfig = XGBoostConfig()
    prophet_forecaster: ProphetConfig = ProphetConfig()
    ensemble: EnsembleConfig = EnsembleConfig()


class ProviderLimits(_Section):
    """A provider's limits; the keys a file leaves out keep the provider's own defaults
    (``features.providers.base.DEFAULT_LIMITS``)."""

    requests_per_minute: NonNegative = 5  # 0: unlimited
    requests_per_day: Annotated[int, Field(ge=0)] = 500  # 0: unlimited
    cost_per_call_usd: NonNegative = 0.0
    timeout_seconds: Annotated[float, Field(gt=0)] = 30
    max_retries: Annotated[int, Field(ge=0)] = 4
    backoff_base_seconds: NonNegative = 1.0  # exponential backoff between retries, capped
    backoff_max_seconds: NonNegative = 60.0
    max_retry_after_seconds: NonNegative = 120.0  # a longer Retry-After fails the request instead


class MonitoringSection(_Section):
    # MONITORING_* environment variables of the same names win (investml.settings)
    latency_ms_threshold: NonNegative = 500.0
    error_rate_threshold: Fraction = 0.05
    resource_usage_threshold: Fraction = 0.85
    drift_window_days: Positive = 20
    performance_window_days: Positive = 20


MODEL_TYPES = {name: field.default.type for name, field in ModelsConfig.model_fields.items()}


class PipelineConfig(_Section):
    orchestrator: OrchestratorConfig = OrchestratorConfig()
    training: TrainingConfig = TrainingConfig()
    models: ModelsConfig = ModelsConfig()
    providers: dict[str, ProviderLimits] = {}
    monitoring: MonitoringSection = MonitoringSection()

    def model_params(self, name: str) -> dict[str, Any]:
        """The ``models.<name>`` block as the learner's keyword arguments take it."""
        return getattr(self.models, name).model_dump()

    def provider_limits(self, name: str) -> ProviderLimits | None:
        return self.providers.get(name)

    def with_overrides(self, overrides: dict[str, Any]) -> PipelineConfig:
        """A new validated config: ``overrides`` merged section by section (a learner's block is
        merged into its current one), e.g. ``{"training": {"horizon_days": 10}}``."""
        return validate_pipeline_config(_merge(self.model_dump(exclude_none=True), overrides))


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _error_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "config"
    if first["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    got = first.get("input")
    shown = "a boolean" if isinstance(got, bool) else f"{type(got).__name__} {got!r}"
    return f"{where}: {first['msg']} (got {shown})"


def validate_pipeline_config(raw: Any) -> PipelineConfig:
    """The config with defaults filled in, or ``PipelineConfigError`` naming the first bad key."""
    if not isinstance(raw, dict):
        raise PipelineConfigError("config: expected a JSON object at the top level")
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise PipelineConfigError(_error_message(exc)) from None


def load_pipeline_config(path: str | Path) -> PipelineConfig:
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
