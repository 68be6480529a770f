"""What a training run is configured by: the learners, the pipeline config's ``training`` and
``models`` sections, and the environment.

Knobs read from the environment (defaults in brackets): ``ML_WALK_FORWARD_FOLDS`` [3],
``ML_WALK_FORWARD_TEST_DAYS`` [63], ``ML_WALK_FORWARD_MIN_TRAIN_DAYS`` [252],
``ML_WALK_FORWARD_GAP_DAYS`` [the horizon; never less], ``ML_LSTM_MAX_TRAIN_ROWS`` [50000: the
LSTM fits on a seeded random sample of that many labelled rows, the others still feed its
sequences; 0 = all], ``ML_PROPHET_CHUNK_TICKERS`` [50], ``ML_COMPUTE_USD_PER_CPU_HOUR`` [0.05],
``ML_TRAINING_MAX_ATTEMPTS`` [3].
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from django.conf import settings

from features.common import env_number
from training.learners import LEARNERS
from training.learners.base import cs_label_columns
from training.walk_forward import WalkForward

# OpenMP threads (XGBoost, torch) spin while they wait by default; on a machine shared with other
# processes that burns the cores the other threads need (measured here: LSTM training 1.8x and
# XGBoost 1.5x slower under load). Passive waiting costs almost nothing when the machine is idle.
# Only effective when set before XGBoost/torch load, which training imports lazily.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

BASE_LEARNERS = ("xgboost_classifier", "lstm_predictor", "prophet_forecaster")
ENSEMBLE = "ensemble"
ALL_LEARNERS = (*BASE_LEARNERS, ENSEMBLE)
# Sampling for the LSTM (the spec's "data sampling for large datasets"): at the config's 128 units x 60
# days it trains ~3,500 rows/s on 2 cores, and early stopping runs at least 1 + patience epochs.
LSTM_MAX_TRAIN_ROWS = 50_000


class RetrainError(ValueError):
    """Bad retrain arguments (unknown learner, empty selection)."""


def env_int(name: str, default: int) -> int:
    return env_number(name, default, cast=int, error=RetrainError)


def _env_float(name: str, default: float) -> float:
    return env_number(name, default, cast=float, error=RetrainError)


def walk_forward_from_env(*, horizon: int) -> WalkForward:
    """The walk-forward settings of the ``ML_WALK_FORWARD_*`` knobs (the gap never shorter than the horizon)."""
    gap = env_int("ML_WALK_FORWARD_GAP_DAYS", horizon)
    if gap < horizon:
        raise RetrainError(
            f"ML_WALK_FORWARD_GAP_DAYS={gap} is shorter than the horizon {horizon}: training labels "
            "would overlap the test window"
        )
    return WalkForward(
        n_folds=env_int("ML_WALK_FORWARD_FOLDS", 3),
        test_days=env_int("ML_WALK_FORWARD_TEST_DAYS", 63),
        min_train_days=env_int("ML_WALK_FORWARD_MIN_TRAIN_DAYS", 252),
        gap_days=gap,
    )


def cpu_hour_usd() -> float:
    return _env_float("ML_COMPUTE_USD_PER_CPU_HOUR", 0.05)


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
