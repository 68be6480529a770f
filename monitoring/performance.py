"""Realized performance of logged predictions. Framework-free: frames in, numbers out.

A prediction made with the features of date ``t`` for horizon ``h`` is scored against the realized
return ``adj_close[t+h] / adj_close[t] - 1``, where ``t+h`` is the ``h``-th trading bar of the same
ticker after ``t``; until that bar exists the prediction is not scored.

Metrics over a window of prediction dates (definitions shared with ``registry.metrics``, so live
numbers compare with the walk-forward ones a version was validated with):

* direction: ``accuracy``, ``precision``, ``recall``, ``f1`` of "beats the day's median" (the
  forecast above the day's median forecast against the return above the day's median return, as
  in ``registry.metrics``; dates with fewer than 5 scored tickers left out);
* ``mae``: mean absolute error of the **return** forecast, ``|expected_return - realized|`` (a
  fraction: 0.02 = 2 percentage points). Returns, not prices, so tickers of every price level weigh
  the same (``ModelVersion.metrics["mae"]`` is in price units and is not compared with it);
* ``ic`` / ``rank_ic``: per-date cross-sectional Pearson / Spearman correlation of the forecast with
  the realized return (dates with fewer than 5 tickers skipped), averaged over the dates.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from registry.metrics import MIN_CROSS_SECTION, daily_ic, relative_direction_metrics

METRICS = ("accuracy", "precision", "recall", "f1", "mae", "ic", "rank_ic")


def realized_returns(predictions: pd.DataFrame, bars: pd.DataFrame, *, as_of: Any = None) -> pd.DataFrame:
    """``predictions`` (ticker, date, horizon, ...) with ``realized`` and ``outcome_date`` added.

    ``bars``: ticker, date, adj_close (trading bars). A prediction whose date is not a bar date is
    matched to the last bar on or before it. Rows whose outcome bar is after ``as_of`` (or missing)
    get NaN.
    """
    out = predictions.copy()
    out["realized"] = np.nan
    out["outcome_date"] = pd.NaT
    if out.empty or bars.empty:
        return out
    bars = bars.sort_values(["ticker", "date"], kind="stable")
    limit = pd.Timestamp(as_of) if as_of is not None else None
    realized = np.full(len(out), np.nan)
    outcome = np.full(len(out), np.datetime64("NaT"), dtype="datetime64[ns]")
    dates_all = pd.to_datetime(out["date"]).to_numpy(dtype="datetime64[ns]")
    horizons = out["horizon"].to_numpy(dtype=np.int64)
    for ticker, idx in out.groupby("ticker", sort=False).indices.items():
        tb = bars[bars["ticker"] == ticker]
        if tb.empty:
            continue
        bar_dates = pd.to_datetime(tb["date"]).to_numpy(dtype="datetime64[ns]")
        prices = tb["adj_close"].to_numpy(dtype=np.float64)
        pos = np.searchsorted(bar_dates, dates_all[idx], side="right") - 1
        target = pos + horizons[idx]
        ok = (pos >= 0) & (target < len(bar_dates))
        t0, t1 = pos[ok], target[ok]
        if limit is not None:
            within = bar_dates[t1] <= limit.to_datetime64()
            keep = np.flatnonzero(ok)[within]
            t0, t1 = t0[within], t1[within]
        else:
            keep = np.flatnonzero(ok)
        with np.errstate(divide="ignore", invalid="ignore"):
            realized[idx[keep]] = prices[t1] / prices[t0] - 1.0
        outcome[idx[keep]] = bar_dates[t1]
    out["realized"] = realized
    out["outcome_date"] = outcome
    return out


def window_metrics(rows: pd.DataFrame) -> dict[str, float | None]:
    """Metrics of scored rows (date, expected_return, realized); None where undefined. Every metric
    reads the forecast ``expected_return`` (the direction classes are relative to the day's median
    forecast, so ``prob_up`` is not needed)."""
    er = rows["expected_return"].to_numpy(dtype=np.float64)
    real = rows["realized"].to_numpy(dtype=np.float64)
    ok = np.isfinite(real) & np.isfinite(er)
    er, real = er[ok], real[ok]
    dates = pd.to_datetime(rows["date"]).to_numpy()[ok]
    if len(real) == 0:
        return {name: None for name in METRICS}
    direction = relative_direction_metrics(dates, er, real, min_names=MIN_CROSS_SECTION)
    out: dict[str, float | None] = {k: direction[k] for k in ("accuracy", "precision", "recall", "f1")}
    out["mae"] = float(np.mean(np.abs(er - real)))
    for name, rank in (("ic", False), ("rank_ic", True)):
        daily = daily_ic(dates, er, real, rank=rank, min_names=MIN_CROSS_SECTION)
        out[name] = float(daily.mean()) if len(daily) else None
    return {k: (None if v is None or not math.isfinite(v) else float(v)) for k, v in out.items()}


def last_dates(rows: pd.DataFrame, n: int) -> pd.DataFrame:
    """The rows of the ``n`` most recent distinct prediction dates."""
    if rows.empty:
        return rows
    dates = np.sort(pd.to_datetime(rows["date"]).unique())[-n:]
    return rows[pd.to_datetime(rows["date"]).isin(dates)]
