"""The benchmark protocol of ``evaluation_report`` (numpy/pandas only, no Django), in the spirit of
Qlib's benchmark tables: per model, on out-of-sample rows,

* ``ic``/``icir``/``rank_ic``/``rank_icir``: as in ``registry.metrics`` (daily cross-sectional
  Pearson / Spearman correlation of the forecast with ``fwd_ret_h``; mean, and mean over std);
* ``rank_ic_t``: the t-statistic of the mean daily rank IC, adjusted for overlapping labels
  (``rank_ic_tstat``);
* a daily rebalanced top-minus-bottom decile long-short book with trading costs (``decile_book``):
  ``annual_return`` (net of costs), ``information_ratio``, ``turnover``, ``max_drawdown``;
* ``per_year``: the mean daily rank IC of each calendar year.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from registry.metrics import (
    DECILE,
    MIN_CROSS_SECTION,
    NAN,
    daily_ic,
    decile_weights,
    ic_metrics,
    overlap_adjusted_tstat,
    portfolio_metrics,
)

DEFAULT_COST_BPS = 10.0
_TINY = 1e-12  # a spread below this is float rounding of a constant series


# --------------------------------------------------------------------------------------------------
# significance


def rank_ic_tstat(daily: pd.Series, horizon: int) -> float:
    """Overlap-adjusted t-statistic of the mean daily rank IC against ``horizon``-day returns."""
    return overlap_adjusted_tstat(daily, overlap=horizon)


def per_year_rank_ic(daily: pd.Series) -> dict[int, float]:
    """Mean of a date-indexed daily series (rank IC) per calendar year, years ascending."""
    values = pd.Series(np.asarray(daily, dtype=np.float64), index=pd.to_datetime(daily.index))
    values = values[np.isfinite(values.to_numpy())]
    if values.empty:
        return {}
    means = values.groupby(values.index.year).mean()
    return {int(year): float(value) for year, value in means.items()}


# --------------------------------------------------------------------------------------------------
# long-short book with costs


@dataclass(frozen=True)
class BookResult:
    gross_returns: pd.Series  # per formation date t: the book's return from t's close to t+1's
    net_returns: pd.Series  # gross minus the cost of the trades at t's close
    turnover: pd.Series  # per date, see ``decile_book``
    annual_return: float  # geometric, of the net returns
    gross_annual_return: float
    information_ratio: float  # mean / std of the net daily returns * sqrt(252)
    mean_turnover: float
    max_drawdown: float  # of the compounded net curve, <= 0


def decile_book(
    dates: Any,
    tickers: Any,
    signal: Any,
    next_returns: Any,
    *,
    quantile: float = DECILE,
    cost_bps: float = DEFAULT_COST_BPS,
    min_names: int = MIN_CROSS_SECTION,
    hold_days: int = 1,
) -> BookResult:
    """An equal-weighted top-minus-bottom decile long-short book with costs, rebalanced every
    ``hold_days`` book dates.

    At the close of a rebalancing date ``t`` (the first book date, then every ``hold_days``-th) the
    book is set to the weights of ``decile_weights`` (formed from the forecast at ``t``) and held
    until the next rebalancing, earning each day's ``next_returns`` (``fwd_ret_1``; a held name
    without a row that day earns 0). ``hold_days`` = the forecast's horizon trades the forecast for
    the period it is made for; 1 rebalances daily.

    Turnover on ``t``: ``sum over tickers of |w_t - w_{t-1}| / 2``, which is the per-leg
    ``sum |w_t - w_{t-1}| / 2`` of the long leg plus that of the short leg (each leg's names weigh
    ``1/k``): 0 when nothing changes, 1 when one leg is replaced entirely, 2 when both are; the
    first date opens the book from nothing (turnover 1). ``w_{t-1}`` is the previous book date's
    target weight (the drift of the weights over the day is ignored) and a name that leaves the
    book is sold to 0.
    Cost on ``t``: every unit of weight bought or sold pays ``cost_bps`` (a side), so
    ``cost = 2 * turnover * cost_bps / 1e4``: replacing the long leg sells 1 and buys 1 and costs
    ``2 * cost_bps``. The net return of ``t`` is the gross return minus the cost of ``t``'s trades.
    Dates without a book (fewer than ``min_names`` names) are skipped, and the book carries over.
    """
    if cost_bps < 0:
        raise ValueError(f"cost_bps must be >= 0, got {cost_bps}")
    if hold_days < 1:
        raise ValueError(f"hold_days must be >= 1, got {hold_days}")
    rows = decile_weights(dates, tickers, signal, next_returns, quantile=quantile, min_names=min_names)
    if rows.empty:
        empty = pd.Series(dtype=np.float64)
        return BookResult(gross_returns=empty, net_returns=empty, turnover=empty, annual_return=NAN,
                          gross_annual_return=NAN, information_ratio=NAN, mean_turnover=NAN, max_drawdown=NAN)
    # duplicate (date, ticker) rows would make the book ambiguous: pivot raises on them
    target = rows.pivot(index="date", columns="ticker", values="weight").sort_index().fillna(0.0)
    returns = rows.pivot(index="date", columns="ticker", values="next_return").reindex_like(target).fillna(0.0)
    rebalance = np.arange(len(target)) % hold_days == 0
    held = target.where(pd.Series(rebalance, index=target.index), axis=0).ffill()
    gross = (held * returns).sum(axis=1)
    traded = held.diff().abs().sum(axis=1)
    traded.iloc[0] = held.iloc[0].abs().sum()
    turnover = traded / 2.0
    net = gross - traded * cost_bps / 1e4
    gross_stats = portfolio_metrics(gross.to_numpy())
    net_stats = portfolio_metrics(net.to_numpy())
    return BookResult(
        gross_returns=gross.astype(np.float64),
        net_returns=net.astype(np.float64),
        turnover=turnover.astype(np.float64),
        annual_return=net_stats["annual_return"],
        gross_annual_return=gross_stats["annual_return"],
        information_ratio=net_stats["sharpe"],
        mean_turnover=float(turnover.mean()),
        max_drawdown=net_stats["max_drawdown"],
    )


# --------------------------------------------------------------------------------------------------


REPORT_ROW_KEYS: tuple[str, ...] = (
    "ic",
    "icir",
    "rank_ic",
    "rank_icir",
    "rank_ic_t",
    "annual_return",
    "gross_annual_return",
    "information_ratio",
    "turnover",
    "max_drawdown",
    "per_year",
    "n_dates",
)


def report_row(table: pd.DataFrame, *, horizon: int, cost_bps: float = DEFAULT_COST_BPS,
               min_names: int = MIN_CROSS_SECTION, hold_days: int = 1) -> dict[str, Any]:
    """The protocol's numbers (``REPORT_ROW_KEYS``) for one model's out-of-sample ``table`` with
    columns ``date``, ``ticker``, ``expected_return``, ``realized`` (``fwd_ret_h``) and
    ``next_return`` (``fwd_ret_1``). ``n_dates`` counts the dates with a rank IC (the t-statistic's
    ``n``); ``annual_return`` is net of costs, ``gross_annual_return`` before them."""
    dates = pd.to_datetime(table["date"]).to_numpy()
    signal = table["expected_return"].to_numpy(dtype=np.float64)
    realized = table["realized"].to_numpy(dtype=np.float64)
    ok = np.isfinite(signal) & np.isfinite(realized)
    daily_rank = daily_ic(dates[ok], signal[ok], realized[ok], rank=True, min_names=min_names)
    book = decile_book(dates, table["ticker"].to_numpy(), signal, table["next_return"].to_numpy(dtype=np.float64),
                       cost_bps=cost_bps, min_names=min_names, hold_days=hold_days)
    row: dict[str, Any] = {
        **ic_metrics(dates[ok], signal[ok], realized[ok], min_names=min_names, daily_rank=daily_rank),
        "rank_ic_t": rank_ic_tstat(daily_rank, horizon),
        "annual_return": book.annual_return,
        "gross_annual_return": book.gross_annual_return,
        "information_ratio": book.information_ratio,
        "turnover": book.mean_turnover,
        "max_drawdown": book.max_drawdown,
        "per_year": per_year_rank_ic(daily_rank),
        "n_dates": int(len(daily_rank)),
    }
    return {key: row[key] for key in REPORT_ROW_KEYS}

