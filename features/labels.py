"""Prediction targets, kept apart from the features (no Django).

``fwd_ret_h`` at (ticker, t) is the SIMPLE return of adj_close from t to the h-th next bar of the
same ticker (trading days of that ticker, so a missing day is skipped, not interpolated);
``fwd_dir_h`` is 1.0 when that return is > 0, 0.0 otherwise. Both are NaN where the future bar is
not in the input (the last h rows of each ticker). A label at t uses prices after t by design:
never feed these columns to a model as features.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from features.engine import _prepare_bars

__all__ = ["compute_labels", "label_columns"]


def label_columns(horizons: Iterable[int] = (1, 5)) -> list[str]:
    hs = [int(h) for h in horizons]
    return [f"fwd_ret_{h}" for h in hs] + [f"fwd_dir_{h}" for h in hs]


def compute_labels(bars: pd.DataFrame, horizons: Iterable[int] = (1, 5)) -> pd.DataFrame:
    """Forward returns and directions per (ticker, date), sorted like ``compute_features``.

    ``bars`` needs ``ticker``, ``date`` and ``adj_close`` (other bar columns are ignored). Rows with
    a missing or non-positive adj_close are dropped, as in the feature engine, so the two frames
    line up row for row on the same input.
    """
    hs = [int(h) for h in horizons]
    if any(h <= 0 for h in hs):
        raise ValueError("horizons must be positive")
    frame = bars[["ticker", "date", "adj_close"]].copy()
    for col in ("open", "high", "low", "close", "volume"):
        frame[col] = 0.0  # unused by labels; satisfies the shared bar preparation
    b = _prepare_bars(frame)
    n = b.n
    ac = b.adj_close
    out: dict[str, object] = {"ticker": b.ticker_column(), "date": b.dates}
    rets = {}
    for h in hs:
        r = np.full(n, np.nan)
        if n > h:
            same = b.codes[h:] == b.codes[:-h]
            r[:-h] = np.where(same, ac[h:] / ac[:-h] - 1.0, np.nan)
        rets[h] = r
        out[f"fwd_ret_{h}"] = r
    for h in hs:
        r = rets[h]
        out[f"fwd_dir_{h}"] = np.where(np.isnan(r), np.nan, (r > 0).astype(np.float64))
    return pd.DataFrame(out)
