"""What the daily bar update decides without the database. Framework-free (no Django).

``features.services.market_updates`` fetches and stores; this module holds its arithmetic: which
tickers to ask a provider for (``stale_tickers``, ``freshness_probe``) and, for a provider that
serves the whole market per day, which days (``bulk_window``); which fetched rows are new
(``rows_after``); and how a split or dividend after a ticker's last stored bar moves its stored
history and sets the new bars' adjusted closes (``tickers_split_after``, ``gap_adjustment``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from features.providers.base import RATE_LIMITED
from features.providers.polygon import dividend_adjusted_close
from features.trading_calendar import is_trading_day

__all__ = [
    "BULK_GAP_QUANTILE",
    "BULK_MAX_GAP_DAYS",
    "BulkWindow",
    "GapAdjustment",
    "adjusted_frames",
    "bulk_window",
    "freshness_probe",
    "gap_adjustment",
    "is_quota_failure",
    "normalize_symbols",
    "rows_after",
    "stale_tickers",
    "tickers_split_after",
]

BULK_MAX_GAP_DAYS = 31  # calendar days a ticker may lag the universe's newest bar in a bulk update
BULK_GAP_QUANTILE = 0.1  # the share of stale tickers that may lag and still set the bulk window


def normalize_symbols(tickers: Iterable[str]) -> list[str]:
    """Stripped, upper-case, first occurrence kept, blanks dropped."""
    return list(dict.fromkeys(t.strip().upper() for t in tickers if t and t.strip()))


def is_quota_failure(reason: str, message: str) -> bool:
    """A rate-limit failure that is the provider's daily quota (no retry helps until tomorrow)."""
    low = message.lower()
    return reason == RATE_LIMITED and ("daily request limit" in low or "daily quota" in low or "daily hits" in low
                                       or "allocation" in low)


# Which tickers and days to ask for -----------------------------------------------------------------
def stale_tickers(*, symbols: list[str], last: dict[str, date], as_of: date) -> list[str]:
    """The ``symbols`` whose last stored bar (``last``) is before ``as_of``, or that have none."""
    return [s for s in symbols if not (s in last and last[s] >= as_of)]


def freshness_probe(*, todo: list[str], last: dict[str, date]) -> str | None:
    """The ticker to request alone first: of several, the one with the newest stored bar. If the
    provider has nothing after it, it has not published the next day yet (None: nothing to probe)."""
    with_history = [s for s in todo if s in last]
    if len(todo) > 1 and with_history:
        return max(with_history, key=lambda s: (last[s], s))
    return None


@dataclass
class BulkWindow:
    tickers: list[str]  # the stale tickers the window serves
    behind: list[str]  # stale tickers far behind the others: left to a per-ticker backfill
    first: date  # the first day to fetch
    days: list[date]  # the trading days from ``first`` to ``as_of``


def bulk_window(*, stale: list[str], last: dict[str, date], as_of: date) -> BulkWindow:
    """The days a whole-market-per-day provider is asked for.

    A few tickers far behind the others (delisted, halted) would make every daily update fetch
    each day since their last bar: the window starts at the last bar of the 10th percentile of
    the stale tickers (a gap most of the universe shares is filled; stragglers are not), never
    more than BULK_MAX_GAP_DAYS back, and the tickers before it are left to a per-ticker backfill.
    """
    known = sorted(last[s] for s in stale if s in last)
    if known:
        horizon = max(known[int(len(known) * BULK_GAP_QUANTILE)], known[-1] - timedelta(days=BULK_MAX_GAP_DAYS))
    else:
        horizon = as_of
    behind = sorted(s for s in stale if s in last and last[s] < horizon)
    left_behind = set(behind)
    tickers = [s for s in stale if s not in left_behind]
    first = (min(last[s] for s in tickers if s in last) + timedelta(days=1)) if any(s in last for s in tickers) else as_of
    days = [d.date() for d in pd.date_range(first, as_of, freq="D") if is_trading_day(d.date())]
    return BulkWindow(tickers=tickers, behind=behind, first=first, days=days)


def rows_after(bars: pd.DataFrame, last: dict[str, Any]) -> pd.DataFrame:
    """The rows of ``bars`` dated after their ticker's date in ``last`` (every row of a ticker
    without one: not in ``last``, or None)."""
    floor = pd.to_datetime(bars["ticker"].map(last))  # NaT for tickers with no stored bar
    return bars[floor.isna().to_numpy() | (pd.to_datetime(bars["date"]) > floor).to_numpy()]


# Splits and dividends after the last stored bar ---------------------------------------------------
def tickers_split_after(actions: pd.DataFrame, last: dict[str, date]) -> set[str]:
    """The tickers of ``last`` with a split in ``actions`` (ticker, date, kind) after their last stored bar."""
    if actions.empty:
        return set()
    splits = actions[actions["kind"] == "split"]
    return {t for t, d in zip(splits["ticker"], splits["date"], strict=True) if t in last and d > last[t]}


def adjusted_frames(bars: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per ticker: its new bars with ``adj_close`` as ``gap_adjustment`` set it, in date order."""
    cols = ["ticker", "date", "open", "high", "low", "close", "adj_close", "volume"]
    return {t: f[cols].sort_values("date") for t, f in bars.groupby("ticker", sort=True)}


@dataclass
class GapAdjustment:
    price_ratio: float  # stored prices x this (volumes / this): the splits of the gap
    adj_ratio: float  # stored adjusted closes x this: the splits and the dividends of the gap
    new_adj_close: np.ndarray  # the new bars' adjusted closes, in date order
    splits: list[tuple[date, float]]  # applied: (execution day, new shares per old share)
    dividends: list[tuple[date, float]]  # applied: (ex day, cash per share)


def gap_adjustment(*, new_bars: pd.DataFrame, splits: pd.DataFrame, dividends: pd.DataFrame,
                   stored_last: date | None, last_close: float | None,
                   recorded: set[tuple[date, str]]) -> GapAdjustment:
    """How one ticker's splits and dividends after its last stored bar move its stored history.

    ``new_bars`` (date, close; date order): its bars after ``stored_last``, split-adjusted as of the
    request (Polygon's grouped bars), so stored bars are on the old share count: each split after
    ``stored_last`` multiplies stored prices by split_from / split_to. ``last_close``: the stored
    close on ``stored_last`` (None: no stored history to adjust). A dividend lowers the adjusted
    close of every earlier day by (1 - D / previous close), the newest bar's adjusted close being
    its close. ``recorded`` (day, kind): actions already applied, never applied again.
    """
    ratio = 1.0
    applied_splits = []
    for row in splits.itertuples(index=False):
        day = row.date.date()
        if stored_last is None or day <= stored_last or (day, "split") in recorded:
            continue
        ratio *= row.split_from / row.split_to
        applied_splits.append((day, row.split_to / row.split_from))
    series_dates = ([pd.Timestamp(stored_last)] if last_close is not None else []) + list(new_bars["date"])
    closes = pd.Series(([last_close * ratio] if last_close is not None else []) + list(new_bars["close"]),
                       index=pd.DatetimeIndex(series_dates), dtype="float64")
    cash = pd.Series(0.0, index=closes.index)
    applied_dividends = []
    for row in dividends.itertuples(index=False):
        day = row.date.date()
        if (stored_last is not None and day <= stored_last) or (day, "dividend") in recorded:
            continue
        if row.date in cash.index:
            cash[row.date] += row.cash_amount
            applied_dividends.append((day, float(row.cash_amount)))
    adj = dividend_adjusted_close(closes, cash)
    new_adj_close = adj.iloc[-len(new_bars):].to_numpy() if len(new_bars) else np.array([], dtype=np.float64)
    factor = float(adj.iloc[0] / closes.iloc[0]) if last_close is not None and len(closes) else 1.0
    return GapAdjustment(price_ratio=ratio, adj_ratio=ratio * factor, new_adj_close=new_adj_close,
                         splits=applied_splits, dividends=applied_dividends)
