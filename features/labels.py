"""Prediction targets, kept apart from the features (no Django).

``fwd_ret_h`` at (ticker, t) is the SIMPLE return of adj_close from t to the h-th next bar of the
same ticker (trading days of that ticker, so a missing day is skipped, not interpolated);
``fwd_dir_h`` is 1.0 when that return is > 0, 0.0 otherwise. Both are NaN where the future bar is
not in the input (the last h rows of each ticker). A label at t uses prices after t by design:
never feed these columns to a model as features.

Cross-sectional targets (what the learners fit): a daily ranking product must learn which stocks
beat the others on a day, not the market's direction (which dominates the absolute return and
says nothing about the ranking). ``cs_rank_norm`` is Qlib's ``CSRankNorm``: the per-date
percentile rank of the return, centred and scaled to unit variance for a uniform rank
(``(pct - 0.5) * 3.46``); ``cs_beats_median`` is 1.0 when the return is above the day's
cross-sectional median, 0.0 when below, 0.5 on the median (a tie carries no class). Both are
NaN where the return is NaN or the date has fewer than ``min_names`` returns.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from features.bars import prepare_bars

__all__ = ["compute_labels", "cs_beats_median", "cs_demean", "cs_rank_norm", "label_columns"]

# Qlib CSRankNorm: a uniform percentile has std 1/sqrt(12); * 3.46 makes it ~unit variance.
_RANK_SCALE = 3.46
# a relative target needs someone to be relative to; two names already rank
MIN_NAMES = 2


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
    b = prepare_bars(frame)
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


def _by_date(dates: object, values: object, min_names: int) -> tuple[pd.Series, pd.core.groupby.SeriesGroupBy]:
    v = pd.Series(np.asarray(values, dtype=np.float64))
    v = v.where(np.isfinite(v.to_numpy()))
    keys = pd.Series(np.asarray(dates))
    counts = v.groupby(keys, sort=False).transform("count")
    v = v.where(counts.to_numpy() >= min_names)
    return v, v.groupby(keys, sort=False)


def cs_rank_norm(dates: object, values: object, *, min_names: int = MIN_NAMES) -> np.ndarray:
    """Per-date percentile rank of ``values`` (ties averaged), ``(pct - 0.5) * 3.46``; NaN kept."""
    v, grouped = _by_date(dates, values, min_names)
    pct = grouped.rank(method="average", pct=True)
    count = grouped.transform("count")
    # pandas' pct is rank / n in (0, 1]; centre it exactly: (rank - 0.5) / n in (0, 1)
    centred = pct - 0.5 / count
    return ((centred - 0.5) * _RANK_SCALE).to_numpy(dtype=np.float64)


def cs_beats_median(dates: object, values: object, *, min_names: int = MIN_NAMES) -> np.ndarray:
    """1.0 above the date's cross-sectional median, 0.0 below, 0.5 on it; NaN kept."""
    v, grouped = _by_date(dates, values, min_names)
    med = grouped.transform("median").to_numpy()
    x = v.to_numpy()
    with np.errstate(invalid="ignore"):
        out = np.where(x > med, 1.0, np.where(x < med, 0.0, 0.5))
    out[np.isnan(x)] = np.nan
    return out


def cs_demean(dates: object, values: object, *, min_names: int = MIN_NAMES) -> np.ndarray:
    """``values`` minus the date's cross-sectional mean; NaN kept."""
    v, grouped = _by_date(dates, values, min_names)
    return (v - grouped.transform("mean")).to_numpy(dtype=np.float64)
