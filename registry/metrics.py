"""Evaluation metrics for daily cross-sectional return forecasts (numpy/pandas/scipy only).

In ``registry``, below training in the apps' dependency direction, because the promotion gate
decides on them (``registry.gate``); training's walk-forward evaluation and benchmark report and
monitoring's realized performance score with the same definitions.

``compute_metrics`` returns exactly these keys (``METRIC_KEYS``), all floats:

Direction, CROSS-SECTIONAL (the product ranks the stocks of a day; the market's own direction
is not what a model is asked): realized "up" = ``fwd_ret_h`` above the day's median over the scored
tickers; predicted "up" = the forecast above the day's median forecast. Dates with fewer than
``min_names`` scored tickers are left out of these four:
    ``accuracy``, ``precision``, ``recall``, ``f1`` for the "up" class. Precision is 0 when nothing
    is predicted up, recall 0 when nothing went up, f1 0 when both are 0.
Price (predicted price ``adj_close * (1 + expected_return)`` against the realized
``adj_close * (1 + fwd_ret_h)``):
    ``mae``, ``rmse`` (price units), ``mape`` (a fraction: 0.02 = 2 %).
Ranking (per date, across tickers, dates with fewer than ``min_names`` tickers skipped):
    ``ic`` / ``rank_ic``: mean of the daily Pearson / Spearman correlations of ``expected_return``
    with ``fwd_ret_h``; ``icir`` / ``rank_icir``: that mean divided by the standard deviation of the
    daily values (per day, not annualized; 0 when the daily values do not vary). A date on which
    the forecast is the same for every ticker carries no cross-sectional information and scores 0;
    a date on which every realized return is equal is skipped.
``hit_rate``: share of rows on the right side of the day's medians (forecast above its median and
    return above its median, or both below); a forecast on its median counts as half a hit, so a
    forecast that is the same for every ticker scores 0.5.
Portfolio (a daily rebalanced, equal-weighted top-minus-bottom decile long-short book formed at the
close of ``t`` from the forecast at ``t``): its daily return is the mean next-day return of the
top decile minus that of the bottom decile (ties at a decile edge join that leg; an all-equal
forecast holds nothing). The next-day return is ``fwd_ret_1`` when given, else ``fwd_ret_h / h``
(an approximation; the feature store should provide ``fwd_ret_1``). Holding every forecast for one
day avoids the overlap of ``h``-day returns.
    ``annual_return``: geometric, ``equity_end ** (252 / n_days) - 1``; ``sharpe``: mean / std of the
    daily returns times sqrt(252) (no risk-free rate; 0 when the returns do not vary); ``max_drawdown``: the worst peak-to-trough
    fall of the compounded equity curve (starting at 1), as a number <= 0 (-0.25 = a 25 % loss).

Rows with a NaN forecast or NaN realized return are dropped. A metric with no data is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from features.labels import cs_beats_median

METRIC_KEYS: tuple[str, ...] = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "mae",
    "rmse",
    "mape",
    "ic",
    "icir",
    "rank_ic",
    "rank_icir",
    "hit_rate",
    "annual_return",
    "sharpe",
    "max_drawdown",
)
TRADING_DAYS = 252
MIN_CROSS_SECTION = 5
DECILE = 0.1
NAN = float("nan")
_TINY = 1e-12  # a spread below this is float rounding of a constant series: ratios report 0


def _arr(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


# --------------------------------------------------------------------------------------------------
# direction and price errors


def direction_metrics(predicted_up: Any, realized_up: Any) -> dict[str, float]:
    pred = np.asarray(predicted_up, dtype=bool).reshape(-1)
    real = np.asarray(realized_up, dtype=bool).reshape(-1)
    if len(pred) == 0:
        return {"accuracy": NAN, "precision": NAN, "recall": NAN, "f1": NAN}
    tp = float(np.sum(pred & real))
    fp = float(np.sum(pred & ~real))
    fn = float(np.sum(~pred & real))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": float(np.mean(pred == real)), "precision": precision, "recall": recall, "f1": f1}


def price_errors(expected_return: Any, adj_close: Any, realized_return: Any) -> dict[str, float]:
    close = _arr(adj_close)
    predicted = close * (1.0 + _arr(expected_return))
    realized = close * (1.0 + _arr(realized_return))
    ok = np.isfinite(predicted) & np.isfinite(realized)
    if not ok.any():
        return {"mae": NAN, "rmse": NAN, "mape": NAN}
    err = predicted[ok] - realized[ok]
    nonzero = realized[ok] != 0
    mape = float(np.mean(np.abs(err[nonzero]) / np.abs(realized[ok][nonzero]))) if nonzero.any() else NAN
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err**2))), "mape": mape}


def relative_to_median(dates: Any, values: Any, *, min_names: int = MIN_CROSS_SECTION) -> np.ndarray:
    """Per row: +1 above the date's median of ``values``, -1 below, 0 on it; NaN where the value
    is NaN or the date has fewer than ``min_names`` values (the label ``cs_beats_median`` on a
    -1..1 scale, so the metrics score forecasts with the learners' own class)."""
    return 2.0 * cs_beats_median(dates, _arr(values), min_names=min_names) - 1.0


def hit_rate(side_forecast: Any, side_realized: Any) -> float:
    """Share of rows whose forecast side (``relative_to_median``) matches the realized side; a
    forecast on its median counts half."""
    pred = _arr(side_forecast)
    real = _arr(side_realized)
    if len(pred) == 0:
        return NAN
    hits = np.where(pred == 0, 0.5, (pred * real > 0).astype(float))
    return float(np.mean(hits))


def relative_direction_metrics(
    dates: Any, forecast: Any, realized: Any, *, min_names: int = MIN_CROSS_SECTION
) -> dict[str, float]:
    """``accuracy``/``precision``/``recall``/``f1`` of "beats the day's median" and ``hit_rate``."""
    f_side = relative_to_median(dates, forecast, min_names=min_names)
    r_side = relative_to_median(dates, realized, min_names=min_names)
    ok = np.isfinite(f_side) & np.isfinite(r_side)
    out = direction_metrics(f_side[ok] > 0, r_side[ok] > 0)
    out["hit_rate"] = hit_rate(f_side[ok], r_side[ok]) if ok.any() else NAN
    return out


# --------------------------------------------------------------------------------------------------
# cross-sectional ranking


def daily_ic(
    dates: Any, signal: Any, realized: Any, *, rank: bool = False, min_names: int = MIN_CROSS_SECTION
) -> pd.Series:
    """Per-date cross-sectional correlation (Pearson, or Spearman with ``rank=True``)."""
    df = pd.DataFrame({"d": np.asarray(dates), "x": _arr(signal), "y": _arr(realized)})
    df = df[np.isfinite(df["x"]) & np.isfinite(df["y"])]
    if df.empty:
        return pd.Series(dtype=np.float64)
    g = df.groupby("d", sort=True)
    size = g["x"].transform("size")
    df = df[size >= min_names]
    if df.empty:
        return pd.Series(dtype=np.float64)
    g = df.groupby("d", sort=True)
    x_const = (g["x"].max() - g["x"].min()) == 0
    y_const = (g["y"].max() - g["y"].min()) == 0
    if rank:
        x = g["x"].rank(method="average")
        y = g["y"].rank(method="average")
    else:
        x, y = df["x"], df["y"]
    xd = x - x.groupby(df["d"]).transform("mean")
    yd = y - y.groupby(df["d"]).transform("mean")
    sxy = (xd * yd).groupby(df["d"]).sum()
    sxx = (xd * xd).groupby(df["d"]).sum()
    syy = (yd * yd).groupby(df["d"]).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        ic = sxy / np.sqrt(sxx * syy)
    ic = ic.clip(-1.0, 1.0)
    ic[x_const] = 0.0
    ic = ic[~y_const]
    return ic.astype(np.float64)


def _mean_ir(series: pd.Series) -> tuple[float, float]:
    values = series.to_numpy(dtype=np.float64)
    if len(values) == 0:
        return NAN, NAN
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, 0.0
    std = float(np.std(values, ddof=1))
    return mean, (mean / std if std > _TINY else 0.0)


def ic_metrics(
    dates: Any, signal: Any, realized: Any, *, min_names: int = MIN_CROSS_SECTION,
    daily_rank: pd.Series | None = None,
) -> dict[str, float]:
    """``ic``, ``icir``, ``rank_ic``, ``rank_icir``; ``daily_rank``: the daily rank IC of the same
    rows when the caller has it already."""
    ic, icir = _mean_ir(daily_ic(dates, signal, realized, min_names=min_names))
    if daily_rank is None:
        daily_rank = daily_ic(dates, signal, realized, rank=True, min_names=min_names)
    rank_ic, rank_icir = _mean_ir(daily_rank)
    return {"ic": ic, "icir": icir, "rank_ic": rank_ic, "rank_icir": rank_icir}


# --------------------------------------------------------------------------------------------------
# long-short portfolio


def decile_weights(
    dates: Any,
    tickers: Any | None,
    signal: Any,
    next_returns: Any,
    *,
    quantile: float = DECILE,
    min_names: int = MIN_CROSS_SECTION,
) -> pd.DataFrame:
    """Per (date, ticker) the net weight of the top-minus-bottom ``quantile`` book.

    Rows need a finite signal and next return; dates with fewer than ``min_names`` such rows hold
    nothing; each leg takes the ``k = max(1, floor(n * quantile))`` highest (lowest) forecasts,
    names tied at the edge join the leg; a leg weights its names equally and sums to 1 (long +1, short -1). A name in both legs
    (ties across the whole cross-section, e.g. an all-equal forecast) nets to 0. ``sum(weight *
    next_return)`` per date is the book's return (``long_short_returns``). ``tickers`` None numbers
    the rows. Returns columns ``date``, ``ticker``, ``weight``, ``next_return``.
    """
    df = pd.DataFrame({
        "date": pd.to_datetime(pd.Series(np.asarray(dates))).to_numpy(),
        "ticker": np.asarray(tickers).astype(str) if tickers is not None else np.arange(len(np.asarray(dates))),
        "x": np.asarray(signal, dtype=np.float64).reshape(-1),
        "next_return": np.asarray(next_returns, dtype=np.float64).reshape(-1),
    })
    df = df[np.isfinite(df["x"]) & np.isfinite(df["next_return"])]
    df = df[df.groupby("date")["x"].transform("size") >= min_names]
    if df.empty:
        return pd.DataFrame({"date": pd.Series(dtype="datetime64[ns]"), "ticker": pd.Series(dtype=object),
                             "weight": pd.Series(dtype=np.float64), "next_return": pd.Series(dtype=np.float64)})
    g = df.groupby("date", sort=True)
    k = np.maximum(1, np.floor(g["x"].transform("size") * quantile)).astype(int)
    long = (g["x"].rank(method="min", ascending=False) <= k).astype(np.float64)
    short = (g["x"].rank(method="min", ascending=True) <= k).astype(np.float64)
    weight = long / long.groupby(df["date"]).transform("sum") - short / short.groupby(df["date"]).transform("sum")
    out = df[["date", "ticker", "next_return"]].assign(weight=weight.to_numpy())
    return out[["date", "ticker", "weight", "next_return"]].sort_values(["date", "ticker"]).reset_index(drop=True)


def long_short_returns(
    dates: Any,
    signal: Any,
    next_returns: Any,
    *,
    quantile: float = DECILE,
    min_names: int = MIN_CROSS_SECTION,
) -> pd.Series:
    """Daily return of the top-minus-bottom ``quantile`` equal-weighted book, indexed by date."""
    book = decile_weights(dates, None, signal, next_returns, quantile=quantile, min_names=min_names)
    if book.empty:
        return pd.Series(dtype=np.float64)
    return (book["weight"] * book["next_return"]).groupby(book["date"], sort=True).sum().astype(np.float64)


def max_drawdown(daily_returns: Any) -> float:
    r = _arr(daily_returns)
    if len(r) == 0:
        return NAN
    equity = np.concatenate([[1.0], np.cumprod(1.0 + r)])
    peak = np.maximum.accumulate(equity)
    return float(np.min(equity / peak - 1.0))


def portfolio_metrics(daily_returns: Any) -> dict[str, float]:
    r = _arr(daily_returns)
    r = r[np.isfinite(r)]
    if len(r) == 0:
        return {"annual_return": NAN, "sharpe": NAN, "max_drawdown": NAN}
    end = float(np.prod(1.0 + r))
    annual = end ** (TRADING_DAYS / len(r)) - 1.0 if end > 0 else -1.0
    std = float(np.std(r, ddof=1)) if len(r) > 1 else 0.0
    sharpe = float(np.mean(r)) / std * math.sqrt(TRADING_DAYS) if std > _TINY else 0.0
    return {"annual_return": float(annual), "sharpe": sharpe, "max_drawdown": max_drawdown(r)}


# --------------------------------------------------------------------------------------------------


def compute_metrics(
    *,
    dates: Any,
    expected_return: Any,
    prob_up: Any | None,
    adj_close: Any,
    realized_return: Any,
    next_day_return: Any | None = None,
    horizon: int = 1,
    min_names: int = MIN_CROSS_SECTION,
) -> dict[str, float]:
    """All ``METRIC_KEYS`` for aligned arrays (one element per (ticker, date) row).

    ``realized_return`` is ``fwd_ret_h``; ``next_day_return`` is ``fwd_ret_1`` (falls back to
    ``realized_return / horizon``) and only feeds the long-short portfolio.
    """
    dates = np.asarray(dates)
    er = _arr(expected_return)
    real = _arr(realized_return)
    close = _arr(adj_close)
    prob = _arr(prob_up) if prob_up is not None else np.full(len(er), np.nan)
    nxt = _arr(next_day_return) if next_day_return is not None else real / float(horizon)
    if not (len(dates) == len(er) == len(real) == len(close) == len(prob) == len(nxt)):
        raise ValueError("metric inputs must have the same length")

    ok = np.isfinite(er) & np.isfinite(real)
    out: dict[str, float] = {}
    out.update(relative_direction_metrics(dates[ok], er[ok], real[ok], min_names=min_names))
    out.update(price_errors(er[ok], close[ok], real[ok]))
    out.update(ic_metrics(dates[ok], er[ok], real[ok], min_names=min_names))
    book = long_short_returns(dates, er, nxt, min_names=min_names)
    out.update(portfolio_metrics(book.to_numpy()))
    return {key: float(out[key]) for key in METRIC_KEYS}


def metrics_from_frame(
    frame: pd.DataFrame,
    *,
    horizon: int,
    prediction: str = "expected_return",
    probability: str | None = "prob_up",
    min_names: int = MIN_CROSS_SECTION,
) -> dict[str, float]:
    """``compute_metrics`` on a frame with ``date``, ``adj_close``, ``fwd_ret_{h}`` (and
    ``fwd_ret_1``) next to the prediction columns."""
    ret_col = f"fwd_ret_{horizon}"
    return compute_metrics(
        dates=pd.to_datetime(frame["date"]).to_numpy(),
        expected_return=frame[prediction].to_numpy(),
        prob_up=frame[probability].to_numpy() if probability and probability in frame else None,
        adj_close=frame["adj_close"].to_numpy(),
        realized_return=frame[ret_col].to_numpy(),
        next_day_return=frame["fwd_ret_1"].to_numpy() if "fwd_ret_1" in frame else None,
        horizon=horizon,
        min_names=min_names,
    )


def summarize(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={metrics[k]:.4g}" for k in METRIC_KEYS if k in metrics)


# --------------------------------------------------------------------------------------------------
# significance


def overlap_adjusted_tstat(values: Any, *, overlap: int = 1) -> float:
    """t-statistic of the mean of ``values`` when ``overlap`` consecutive values share label days.

    A daily statistic of ``h``-day forward returns is observed every day while its labels span ``h``
    days, so neighbouring values are strongly correlated and ``n`` daily values hold about
    ``n / h`` independent observations: ``t = mean / (std / sqrt(n / overlap))`` (computed as
    ``mean / (std / sqrt(n)) / sqrt(overlap)``, the same number). Non-finite values are dropped;
    NaN with fewer than two values or values that do not vary. The promotion gate's confidence
    (``registry.gate.skill_confidence``) uses this too.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    n = len(v)
    if n < 2:
        return NAN
    std = float(np.std(v, ddof=1))
    if std <= _TINY:
        return NAN
    mean = float(np.mean(v))
    return float(mean / (std / math.sqrt(n)) / math.sqrt(max(int(overlap), 1)))
