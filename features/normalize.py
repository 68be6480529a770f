"""Cross-sectional normalization of features per date. Framework-free (no Django).

A model that ranks the stocks of one day gains nothing from where a feature's level sits on that
day (every stock's 20-day volatility doubles in a crash); what ranks them is where each stock sits
among the others. ``robust_zscore`` maps each feature, per date, to ``(x - median) / scale`` over
that date's stocks, clipped to +-3 (Qlib's RobustZScoreNorm, applied per date as in its
CSZScoreNorm): ``scale`` is 1.4826 x the median absolute deviation, the standard deviation where
the MAD is zero (a mostly-zero flag such as ``has_news``); a feature equal for every stock of the
day (``day_of_week``) carries no cross-sectional information and becomes 0.

The statistics of a date come from every stored stock of that date (``cs_stats``), so training and
serving apply the same transform however few tickers a request reads (``cs_apply``). A feature's
value at date t still uses only data known at t: the other stocks' values of the same day.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["CS_NORMALIZATIONS", "CLIP", "cs_apply", "cs_stats", "stats_columns"]

CS_NORMALIZATIONS = ("none", "robust_zscore")
CLIP = 3.0
_MAD_TO_SD = 1.4826
_TINY = 1e-12


def stats_columns(columns: list[str]) -> tuple[list[str], list[str]]:
    """Names of the median and scale columns of a statistics table."""
    return [f"median:{c}" for c in columns], [f"scale:{c}" for c in columns]


def _column_medians(block: np.ndarray) -> np.ndarray:
    """NaN-skipping median of each column (a sort puts NaN last; 8x faster than ``np.nanmedian``)."""
    ordered = np.sort(block, axis=0)
    count = np.isfinite(block).sum(axis=0)
    lo = np.maximum((count - 1) // 2, 0)[None, :]
    hi = np.maximum(count // 2, 0)[None, :]
    median = (np.take_along_axis(ordered, lo, 0)[0] + np.take_along_axis(ordered, hi, 0)[0]) / 2.0
    return np.where(count > 0, median, np.nan)


def cs_stats(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per-date median and robust scale of each column over the rows of that date.

    Returns ``date`` (datetime64, sorted, unique), then ``median:<c>`` and ``scale:<c>`` (float64;
    scale 0 where every finite value of the day is equal, NaN where the day has none)."""
    dates = pd.to_datetime(frame["date"]).to_numpy()
    order = np.argsort(dates, kind="stable")
    # float32 as stored: the median of float32 values is exact, and the sort is twice as fast
    values = frame[columns].to_numpy(dtype=np.float32, na_value=np.nan)[order]
    sorted_dates = dates[order]
    cuts = np.flatnonzero(sorted_dates[1:] != sorted_dates[:-1]) + 1
    bounds = np.concatenate([[0], cuts, [len(values)]]).astype(np.int64)
    k = len(columns)
    median = np.full((len(bounds) - 1, k), np.nan)
    scale = np.full((len(bounds) - 1, k), np.nan)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        block = values[a:b]
        med = _column_medians(block)
        mad = _column_medians(np.abs(block - med.astype(np.float32))) * _MAD_TO_SD
        median[i] = med
        scale[i] = mad
        flat = ~(mad > _TINY) & np.isfinite(med)
        if flat.any():  # the standard deviation only where the MAD is zero
            sub = block[:, flat].astype(np.float64)
            with np.errstate(invalid="ignore"):
                std = np.nanstd(sub, axis=0)
            scale[i, flat] = np.where(std > _TINY, std, 0.0)
    med_names, scale_names = stats_columns(columns)
    out = pd.DataFrame(np.hstack([median, scale]), columns=[*med_names, *scale_names])
    out.insert(0, "date", sorted_dates[bounds[:-1]].astype("datetime64[ns]") if len(values) else
               np.array([], dtype="datetime64[ns]"))
    return out


def cs_apply(frame: pd.DataFrame, columns: list[str], stats: pd.DataFrame, *, dtype=np.float32) -> pd.DataFrame:
    """``frame`` with ``columns`` replaced by their clipped robust z-scores under ``stats`` (a
    ``cs_stats`` table holding every date of ``frame``); NaN stays NaN. Raises ``KeyError`` naming
    the first dates without statistics."""
    if frame.empty or not columns:
        return frame
    stat_dates = pd.to_datetime(stats["date"]).to_numpy()
    dates = pd.to_datetime(frame["date"]).to_numpy()
    pos = np.searchsorted(stat_dates, dates)
    pos_ok = np.minimum(pos, max(len(stat_dates) - 1, 0))
    found = (pos < len(stat_dates)) & (stat_dates[pos_ok] == dates) if len(stat_dates) else np.zeros(len(dates), bool)
    if not found.all():
        missing = sorted({str(pd.Timestamp(d).date()) for d in dates[~found]})
        raise KeyError(f"no cross-sectional statistics for {len(missing)} date(s): {', '.join(missing[:5])}")
    med_names, scale_names = stats_columns(columns)
    median = stats[med_names].to_numpy(dtype=np.float64)[pos_ok]
    scale = stats[scale_names].to_numpy(dtype=np.float64)[pos_ok]
    x = frame[columns].to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (x - median) / scale
    z[scale == 0] = 0.0
    np.clip(z, -CLIP, CLIP, out=z)
    z[~np.isfinite(x)] = np.nan
    out = frame.copy(deep=False)
    out[columns] = pd.DataFrame(z.astype(dtype), index=frame.index, columns=columns)
    return out
