"""One vectorized model call per model for all the rows of a source (see ``inference.inputs``).

Returns ``(expected_return, prob_up, confidence)`` arrays aligned to ``source.tickers``; NaN marks a
row the model has no opinion on (Prophet for a ticker it has no model for).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inference.inputs import Source, VectorSource
from inference.model_manager import ENSEMBLE, SEQUENCE, TICKER, VECTOR, ModelManager, ServedModel

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]


def _from_predictions(preds: Any) -> Arrays:
    return (
        np.asarray(preds.expected_return, dtype=np.float64),
        np.asarray(preds.prob_up, dtype=np.float64),
        np.asarray(preds.confidence, dtype=np.float64),
    )


def _sequence_last(learner: Any, frame: Any, positions: np.ndarray) -> Arrays:
    """The LSTM's output for the rows at ``positions`` only (their windows hold the earlier rows).

    ``predict_at`` runs only the wanted rows through the network.
    """
    n = len(positions)
    er = np.full(n, np.nan)
    prob = np.full(n, np.nan)
    valid = positions >= 0
    if not valid.any():
        return er, prob, np.full(n, np.nan)
    preds = learner.predict_at(frame, positions[valid])
    er[valid] = preds.expected_return
    prob[valid] = preds.prob_up
    prob = np.clip(prob, 0.0, 1.0)
    return er, prob, np.abs(2.0 * prob - 1.0)


def score(
    served: ServedModel, source: Source, *, manager: ModelManager, memo: dict[int, Arrays] | None = None
) -> Arrays:
    """``memo`` (version id -> arrays) is shared by the calls of one batch over one source: an
    ensemble then reuses its members' scores instead of running them again (Prophet's per-ticker
    forecasts are most of a daily batch's scoring time)."""
    if memo is not None and served.version_id in memo:
        return memo[served.version_id]
    arrays = _score(served, source, manager=manager, memo=memo)
    if memo is not None:
        memo[served.version_id] = arrays
    return arrays


def _score(served: ServedModel, source: Source, *, manager: ModelManager, memo: dict[int, Arrays] | None) -> Arrays:
    learner = served.learner
    if served.kind == VECTOR:
        if isinstance(source, VectorSource) and hasattr(learner, "predict_matrix"):
            return _from_predictions(learner.predict_matrix(source.vectors))
        frame = source.latest(served.feature_set_version_id, served.feature_columns)
        return _from_predictions(learner.predict(frame))
    if served.kind == SEQUENCE:
        length = int(getattr(learner, "params", {}).get("sequence_length", 1))
        frame, positions = source.history(served.feature_set_version_id, served.feature_columns, length)
        return _sequence_last(learner, frame, positions)
    if served.kind == TICKER:
        frame = source.latest(served.feature_set_version_id, [])
        return _from_predictions(learner.predict(frame[["ticker", "date", "adj_close"]]))
    if served.kind == ENSEMBLE:
        members = {}
        for name, version_id in served.members.items():
            member = manager.get_version(version_id)
            members[name] = score(member, source, manager=manager, memo=memo)[0]
        return _from_predictions(learner.predict_members(members))
    raise ValueError(f"unknown model kind {served.kind!r}")  # pragma: no cover
