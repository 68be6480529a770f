"""Bars as the engine reads them: sorted by (ticker, date) into contiguous numpy arrays.

``prepare_bars`` checks and sorts a long OHLCV frame once (rows without a usable adjusted close are
dropped), so every per-ticker computation after it works on slices ``bounds[k]:bounds[k + 1]``.
Also the day arithmetic the joins share and the rows an incremental run keeps. No Django.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Bars", "day_key", "day_numbers", "lookback_rows", "prepare_bars", "to_datetime64"]


def day_key(codes: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Sortable int64 key of (ticker code, day number); days may be negative (before 1970)."""
    return (codes.astype(np.int64) << 32) + (days.astype(np.int64) + (1 << 31))


def day_numbers(values: Any) -> np.ndarray:
    return to_datetime64(values).astype("datetime64[D]").astype(np.int64)


def to_datetime64(values: Any) -> np.ndarray:
    """datetime64[ns] numpy array, tz-naive (tz-aware input converted to UTC then dropped)."""
    if isinstance(values, pd.DatetimeIndex | pd.Series) and values.dtype.kind == "M" and getattr(
            values.dtype, "tz", None) is None:
        # naive datetimes already: pd.to_datetime would box a sample of them to check its cache
        # (a third of an intraday row's time, inference.intraday)
        return np.asarray(values, dtype="datetime64[ns]")
    idx = pd.DatetimeIndex(pd.to_datetime(values))
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    return idx.values.astype("datetime64[ns]")


@dataclass
class Bars:
    """Bars sorted by (ticker, date) as contiguous numpy arrays."""

    codes: np.ndarray  # int64 ticker code per row (codes follow sorted symbols)
    symbols: np.ndarray  # object array of symbols, index = code
    categorical: bool  # input ticker column was categorical
    dates: np.ndarray  # datetime64[ns]
    bounds: np.ndarray  # row offsets: ticker k rows are bounds[k]:bounds[k+1]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    adj_close: np.ndarray
    volume: np.ndarray

    @property
    def n(self) -> int:
        return len(self.dates)

    def ticker_column(self) -> Any:
        if self.categorical:
            return pd.Categorical.from_codes(self.codes, categories=pd.Index(self.symbols))
        return self.symbols[self.codes]

    def take(self, rows: np.ndarray) -> Bars:
        codes = self.codes[rows]
        return Bars(
            codes=codes,
            symbols=self.symbols,
            categorical=self.categorical,
            dates=self.dates[rows],
            bounds=_bounds(codes),
            open=self.open[rows],
            high=self.high[rows],
            low=self.low[rows],
            close=self.close[rows],
            adj_close=self.adj_close[rows],
            volume=self.volume[rows],
        )


def _bounds(codes: np.ndarray) -> np.ndarray:
    if len(codes) == 0:
        return np.zeros(1, dtype=np.int64)
    starts = np.flatnonzero(np.diff(codes)) + 1
    return np.concatenate([[0], starts, [len(codes)]]).astype(np.int64)


_REQUIRED = ("ticker", "date", "open", "high", "low", "close", "adj_close", "volume")


def prepare_bars(bars: pd.DataFrame) -> Bars:
    missing = [c for c in _REQUIRED if c not in bars.columns]
    if missing:
        raise ValueError(f"bars lacks columns {missing}")
    tick = bars["ticker"]
    categorical = isinstance(tick.dtype, pd.CategoricalDtype)
    codes, uniques = pd.factorize(tick, sort=True)
    if (codes < 0).any():
        raise ValueError("bars has rows without a ticker")
    symbols = np.asarray(uniques, dtype=object)
    codes = codes.astype(np.int64, copy=False)
    date_col = bars["date"]
    if pd.api.types.is_datetime64_any_dtype(date_col) and getattr(date_col.dt, "tz", None) is None:
        dates = date_col.to_numpy(dtype="datetime64[ns]")
    else:
        dates = to_datetime64(date_col)
    d8 = dates.view(np.int64)

    def col(name: str) -> np.ndarray:
        return bars[name].to_numpy(dtype=np.float64, na_value=np.nan)

    arrays = {name: col(name) for name in ("open", "high", "low", "close", "adj_close", "volume")}

    same = codes[1:] == codes[:-1]
    sorted_ok = bool(np.all((codes[1:] > codes[:-1]) | (same & (d8[1:] > d8[:-1]))))
    if not sorted_ok:
        order = np.lexsort((d8, codes))
        codes, dates, d8 = codes[order], dates[order], d8[order]
        arrays = {k: v[order] for k, v in arrays.items()}
        same = codes[1:] == codes[:-1]
        if np.any(same & (d8[1:] == d8[:-1])):
            raise ValueError("bars has duplicate (ticker, date) rows")

    # Rows without a usable adjusted close cannot carry any price feature: drop them.
    ac = arrays["adj_close"]
    keep = np.isfinite(ac) & (ac > 0)
    if not keep.all():
        codes, dates = codes[keep], dates[keep]
        arrays = {k: v[keep] for k, v in arrays.items()}
    return Bars(
        codes=codes,
        symbols=symbols,
        categorical=categorical,
        dates=dates,
        bounds=_bounds(codes),
        **arrays,
    )


def lookback_rows(b: Bars, since: Any, lookback: int) -> np.ndarray:
    since8 = to_datetime64([since])[0].astype(np.int64)
    key = (b.codes << 1) + (b.dates.view(np.int64) >= since8)  # within a ticker: 0..0 1..1
    starts = b.bounds[:-1]
    ends = b.bounds[1:]
    # first row of each ticker dated >= since
    first_new = np.searchsorted(key, (b.codes[starts] << 1) + 1, side="left")
    first_new = np.minimum(first_new, ends)
    lo = np.maximum(starts, first_new - lookback)
    keep = np.zeros(b.n, dtype=bool)
    for a, z in zip(lo, ends, strict=True):
        keep[a:z] = True
    return np.flatnonzero(keep)
