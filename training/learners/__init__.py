"""Framework-free learners behind one interface (see ``base.Learner``); no Django imports here.

Learner modules are imported lazily (torch and Prophet are slow to import): ``learner_class(name)``,
``build_learner(name, config)`` and ``load_learner(bytes)`` import only the one they need.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from training.learners.base import (
    ArtifactError,
    FitReport,
    Learner,
    NotFittedError,
    Predictions,
    read_artifact_meta,
)

# name -> (module, class, model_type); names and types match investml.pipeline_config.MODEL_TYPES
LEARNERS: dict[str, tuple[str, str, str]] = {
    "lstm_predictor": ("training.learners.lstm", "LSTMLearner", "neural_network"),
    "xgboost_classifier": ("training.learners.xgb", "XGBoostLearner", "tree_ensemble"),
    "prophet_forecaster": ("training.learners.prophet_learner", "ProphetLearner", "time_series"),
    "ensemble": ("training.learners.ensemble", "EnsembleLearner", "ensemble"),
}


def learner_class(name: str) -> Any:
    try:
        module, cls, _ = LEARNERS[name]
    except KeyError:
        raise KeyError(f"unknown learner {name!r} (known: {', '.join(LEARNERS)})") from None
    return getattr(importlib.import_module(module), cls)


def build_learner(name: str, config: Mapping[str, Any] | None = None) -> Learner:
    """A new learner from its validated ``models.<name>`` config block (defaults when None).

    Config-only keys (``type``, ``enabled``, ``horizon_days``) are ignored; pass the horizon to
    ``fit``.
    """
    return learner_class(name).from_config(dict(config or {}))


def load_learner(data: bytes) -> Learner:
    """Verify an artifact and rebuild whichever learner wrote it."""
    meta = read_artifact_meta(data)
    name = meta.get("learner")
    if name not in LEARNERS:
        raise ArtifactError(f"artifact names an unknown learner {name!r}")
    return learner_class(name).from_bytes(data)


__all__ = [
    "LEARNERS",
    "ArtifactError",
    "FitReport",
    "Learner",
    "NotFittedError",
    "Predictions",
    "build_learner",
    "learner_class",
    "load_learner",
]
