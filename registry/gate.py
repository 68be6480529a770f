"""The promotion gate's statistics: plain functions of out-of-sample tables (numpy, pandas, scipy;
no Django), so they are tested and reused alone. ``registry.services.evaluate_gate`` decides with
them; training summarizes its windows with them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtr

from registry.metrics import (
    METRIC_KEYS,
    compute_metrics,
    daily_ic,
    long_short_returns,
    overlap_adjusted_tstat,
)

LOWER_IS_BETTER = frozenset({"mae", "rmse", "mape"})
_TINY = 1e-12


def check_metric(metric: str) -> str:
    if metric not in METRIC_KEYS:
        raise ValueError(f"unknown promotion metric {metric!r} (known: {', '.join(METRIC_KEYS)})")
    return metric


def is_better(new: float, old: float, *, metric: str, margin: float = 0.0) -> bool:
    """``new`` beats ``old`` by more than ``margin`` in the metric's direction (NaN never wins)."""
    if not math.isfinite(new):
        return False
    if not math.isfinite(old):
        return True
    if metric in LOWER_IS_BETTER:
        return new < old - margin
    return new > old + margin


def metric_on_rows(oof: pd.DataFrame, *, horizon: int, prediction: str = "expected_return",
                   probability: str | None = "prob_up") -> dict[str, float]:
    """All metrics of one prediction column of an out-of-sample table (``registry.artifacts`` layout)."""
    return compute_metrics(
        dates=pd.to_datetime(oof["date"]).to_numpy(),
        expected_return=oof[prediction].to_numpy(dtype=np.float64),
        prob_up=oof[probability].to_numpy(dtype=np.float64) if probability else None,
        adj_close=oof["adj_close"].to_numpy(dtype=np.float64),
        realized_return=oof["realized"].to_numpy(dtype=np.float64),
        next_day_return=oof["next_return"].to_numpy(dtype=np.float64),
        horizon=horizon,
    )


def daily_skill(oof: pd.DataFrame, *, metric: str, horizon: int) -> tuple[pd.Series, int]:
    """Per-date series whose mean is > 0 exactly when the model shows skill on ``metric``.

    Returns ``(series, overlap)``: ``overlap`` is how many consecutive daily values share label
    days (``horizon`` for ``fwd_ret_h`` based statistics, 1 for the next-day long-short book).

    * ``ic``/``icir``: daily Pearson IC; ``rank_ic``/``rank_icir``: daily Spearman IC;
    * ``annual_return``/``sharpe``/``max_drawdown``: daily top-minus-bottom decile return;
    * ``accuracy``/``precision``/``recall``/``f1``: daily directional accuracy minus 0.5;
    * ``hit_rate``: daily hit rate minus 0.5;
    * ``mae``/``rmse``/``mape``: daily mean absolute return error of the zero forecast minus the model's.
    """
    check_metric(metric)
    dates = pd.to_datetime(oof["date"]).to_numpy()
    er = oof["expected_return"].to_numpy(dtype=np.float64)
    real = oof["realized"].to_numpy(dtype=np.float64)
    if metric in ("ic", "icir"):
        return daily_ic(dates, er, real), horizon
    if metric in ("rank_ic", "rank_icir"):
        return daily_ic(dates, er, real, rank=True), horizon
    if metric in ("annual_return", "sharpe", "max_drawdown"):
        return long_short_returns(dates, er, oof["next_return"].to_numpy(dtype=np.float64)), 1
    ok = np.isfinite(er) & np.isfinite(real)
    up = real > 0
    if metric == "hit_rate":
        value = np.where(er > 0, up, np.where(er < 0, ~up, 0.5)).astype(np.float64) - 0.5
    elif metric in LOWER_IS_BETTER:
        value = np.abs(real) - np.abs(er - real)
    else:
        prob = oof["prob_up"].to_numpy(dtype=np.float64)
        predicted_up = np.where(np.isfinite(prob), prob > 0.5, er > 0)
        value = (predicted_up == up).astype(np.float64) - 0.5
    series = pd.Series(value[ok]).groupby(dates[ok]).mean()
    return series.astype(np.float64), horizon


def skill_confidence(series: pd.Series, *, overlap: int = 1) -> dict[str, float]:
    """One-sided confidence that the mean of ``series`` is > 0: ``Phi(t / sqrt(overlap))``.

    ``t`` is the mean over its standard error (``std / sqrt(n)``); dividing by ``sqrt(overlap)``
    allows for the autocorrelation of statistics whose labels overlap (``h``-day returns observed
    daily). In [0, 1]: 0.5 is no evidence either way, 0.84 about one standard error above zero.
    """
    values = series.to_numpy(dtype=np.float64)
    values = values[np.isfinite(values)]
    n = len(values)
    if n < 2:
        return {"confidence": 0.0, "t": float("nan"), "n_days": float(n), "mean": float("nan")}
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1))
    if std <= _TINY:
        conf = 1.0 if mean > _TINY else (0.0 if mean < -_TINY else 0.5)
        return {"confidence": conf, "t": float("nan"), "n_days": float(n), "mean": mean}
    t = overlap_adjusted_tstat(values, overlap=overlap)
    return {"confidence": float(ndtr(t)), "t": float(t), "n_days": float(n), "mean": mean}


def common_window(new: pd.DataFrame, old: pd.DataFrame) -> pd.DataFrame:
    """Rows scored out of sample by both versions: the new table with ``old_expected_return`` and
    ``old_prob_up`` added (labels are the new table's)."""
    right = old[["ticker", "date", "expected_return", "prob_up"]].rename(
        columns={"expected_return": "old_expected_return", "prob_up": "old_prob_up"}
    )
    both = new.merge(right, on=["ticker", "date"], how="inner")
    keep = np.isfinite(both["expected_return"].to_numpy(dtype=np.float64)) & np.isfinite(
        both["old_expected_return"].to_numpy(dtype=np.float64)
    )
    return both.loc[keep].sort_values(["date", "ticker"], kind="stable").reset_index(drop=True)


def window_summary(rows: pd.DataFrame) -> dict[str, Any]:
    if rows.empty:
        return {"rows": 0, "dates": 0, "start": None, "end": None}
    dates = pd.to_datetime(rows["date"])
    return {
        "rows": int(len(rows)),
        "dates": int(dates.nunique()),
        "start": dates.min().date().isoformat(),
        "end": dates.max().date().isoformat(),
    }
