"""Fitting a learner on a seeded subsample of its labelled rows (framework-free).

The LSTM's cost grows with its training rows; on the whole market it fits on a random sample of
them (``ML_LSTM_MAX_TRAIN_ROWS``). The other rows stay in the frame, unlabelled, so a sequence
model still reads them as history, and the cross-sectional targets are ranked over the whole
universe of each date before the subsample is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from training.learners.base import (
    FitReport,
    Learner,
    Predictions,
    cs_label_columns,
    label_columns,
    with_cross_sectional_targets,
)


def mask_labels(frame: pd.DataFrame, *, horizon: int, max_rows: int, seed: int,
                columns: Sequence[str] | None = None) -> pd.DataFrame:
    """``frame`` with all but a seeded random ``max_rows`` of the labelled rows unlabelled.

    The unlabelled rows stay in the frame (a sequence model still reads them as context); the learner
    simply does not fit on them. ``max_rows <= 0`` or fewer labelled rows returns ``frame`` as is.
    """
    ret_col, dir_col = label_columns(horizon)
    labelled = np.flatnonzero(np.isfinite(frame[ret_col].to_numpy(dtype=np.float64)))
    if max_rows <= 0 or len(labelled) <= max_rows:
        return frame
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(frame), dtype=bool)
    keep[np.sort(rng.choice(labelled, size=max_rows, replace=False))] = True
    ret = np.where(keep, frame[ret_col].to_numpy(dtype=np.float64), np.nan)
    updates = {ret_col: ret}
    if dir_col in frame:
        updates[dir_col] = np.where(keep, frame[dir_col].to_numpy(dtype=np.float64), np.nan)
    if columns is not None:  # copy only what the learner reads
        keep_cols = ["ticker", "date", "adj_close", *columns, *cs_label_columns(horizon)]
        frame = frame[[c for c in dict.fromkeys(keep_cols) if c in frame]]
    return frame.assign(**updates)


class SampledFit:
    """A learner whose ``fit`` sees at most ``max_rows`` labelled rows (see ``mask_labels``)."""

    def __init__(self, inner: Learner, *, max_rows: int, seed: int):
        self.inner = inner
        self.max_rows = int(max_rows)
        self.seed = int(seed)
        self.name = inner.name
        self.model_type = inner.model_type

    @property
    def context_days(self) -> int:
        return int(getattr(self.inner, "context_days", 0) or 0)

    def fit(self, frame: pd.DataFrame, *, feature_columns: list[str], horizon: int) -> FitReport:
        # targets ranked over the whole universe of each date before the rows are subsampled
        sampled = mask_labels(with_cross_sectional_targets(frame, horizon), horizon=horizon,
                              max_rows=self.max_rows, seed=self.seed, columns=feature_columns)
        report = self.inner.fit(sampled, feature_columns=feature_columns, horizon=horizon)
        report.extra["sampled_rows"] = int(np.isfinite(sampled[f"fwd_ret_{horizon}"].to_numpy()).sum())
        return report

    def predict(self, frame: pd.DataFrame) -> Predictions:
        return self.inner.predict(frame)
