"""What a training run is configured by: the learners, the pipeline config's ``training`` and
``models`` sections, and the ``ML_WALK_FORWARD_*``, ``ML_LSTM_MAX_TRAIN_ROWS``,
``ML_PROPHET_CHUNK_TICKERS``, ``ML_COMPUTE_USD_PER_CPU_HOUR`` and ``ML_TRAINING_MAX_ATTEMPTS``
settings (``investml.settings``), and the heartbeat a run's process keeps
(``ML_PIPELINE_HEARTBEAT_SECONDS`` and ``_TIMEOUT_SECONDS``, the pipeline runs' own).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings

from training.learners import LEARNERS
from training.learners.base import cs_label_columns
from training.walk_forward import WalkForward

BASE_LEARNERS = ("xgboost_classifier", "lstm_predictor", "prophet_forecaster")
ENSEMBLE = "ensemble"
ALL_LEARNERS = (*BASE_LEARNERS, ENSEMBLE)


class RetrainError(ValueError):
    """Bad retrain arguments (unknown learner, empty selection)."""


def walk_forward_settings(*, horizon: int) -> WalkForward:
    """The walk-forward settings of the ``ML_WALK_FORWARD_*`` settings (the gap never shorter than the horizon)."""
    gap = horizon if settings.ML_WALK_FORWARD_GAP_DAYS is None else settings.ML_WALK_FORWARD_GAP_DAYS
    if gap < horizon:
        raise RetrainError(
            f"ML_WALK_FORWARD_GAP_DAYS={gap} is shorter than the horizon {horizon}: training labels "
            "would overlap the test window"
        )
    return WalkForward(
        n_folds=settings.ML_WALK_FORWARD_FOLDS,
        test_days=settings.ML_WALK_FORWARD_TEST_DAYS,
        min_train_days=settings.ML_WALK_FORWARD_MIN_TRAIN_DAYS,
        gap_days=gap,
        max_tickers=settings.ML_WALK_FORWARD_MAX_TICKERS,
    )


def heartbeat_seconds() -> float:
    return settings.ML_PIPELINE_HEARTBEAT_SECONDS


def heartbeat_timeout_seconds() -> float:
    """How long a heartbeat stays fresh: past it, the process of another machine counts as gone."""
    return settings.ML_PIPELINE_HEARTBEAT_TIMEOUT_SECONDS


def cpu_hour_usd() -> float:
    return settings.ML_COMPUTE_USD_PER_CPU_HOUR


def horizon_days() -> int:
    return settings.PIPELINE_CONFIG.training.horizon_days


def model_config(name: str) -> dict[str, Any]:
    return settings.PIPELINE_CONFIG.model_params(name)


def target_for(name: str, horizon: int) -> str:
    """The label a learner fits (``training.learners.base.cs_label_columns``): a change of target
    is a major version. Prophet forecasts each ticker's own series, so it keeps the raw return."""
    rank_col, up_col, excess_col = cs_label_columns(horizon)
    return {"xgboost_classifier": up_col, "lstm_predictor": rank_col, ENSEMBLE: excess_col}.get(
        name, f"fwd_ret_{horizon}")


def reevaluate_every_trading_days() -> int:
    return settings.PIPELINE_CONFIG.training.reevaluate_every_trading_days


def resolve_models(models: Sequence[str] | None) -> list[str]:
    if not models:
        chosen = [name for name in ALL_LEARNERS if model_config(name).get("enabled", True)]
    else:
        unknown = [m for m in models if m not in LEARNERS]
        if unknown:
            raise RetrainError(f"unknown model(s) {', '.join(unknown)} (known: {', '.join(ALL_LEARNERS)})")
        chosen = [name for name in ALL_LEARNERS if name in set(models)]
    if not chosen:
        raise RetrainError("no models selected (all disabled in the pipeline config?)")
    return chosen
