"""Synthetic daily market: realistic-looking OHLCV bars for load tests and benchmarks.

No Django. ``generate_market`` returns a long frame in the Yahoo layout
``date,open,high,low,close,adj_close,volume,ticker`` (business days, ticker-major order):

* log returns = drift + beta * market factor + idiosyncratic shock; both the market factor and the
  idiosyncratic part follow GARCH(1,1) with standardized Student-t shocks (fat tails, volatility
  clustering); a weak pull of the log price toward its start keeps prices in a sane range;
* volume: lognormal around a per-ticker level, rising with the size of the day's shock, with a
  persistent AR(1) component; a few illiquid tickers have occasional zero-volume days;
* splits: a few tickers split once (2:1, 3:1, 3:2 or 4:1). As in Yahoo files OHLC/volume are
  split-adjusted, so the split shows no jump in the bars; it is listed in the actions frame
  (``return_actions=True``), with the raw dividend amounts;
* dividends: about half the tickers pay quarterly; ``adj_close`` is the total-return series and
  close = adj_close / (product of (1 - dividend/prev close) over later ex-dates), so close >=
  adj_close before the last ex-date and the close drops by the dividend on ex-dates;
* a tenth of the tickers list late and a twentieth delist early (ragged histories).

Deterministic per seed: ticker i draws from its own random stream ``(seed, i)``, so a ticker's bars
do not depend on how many tickers are generated or on the chunk size. Generation is vectorized over
chunks of tickers (only the GARCH recursion loops over days), which bounds memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

__all__ = ["BAR_COLUMNS", "generate_market", "iter_market_chunks", "ticker_symbols"]

BAR_COLUMNS = ["date", "open", "high", "low", "close", "adj_close", "volume", "ticker"]
ACTION_COLUMNS = ["ticker", "date", "kind", "value"]

_MARKET_STREAM = 2**31 - 1  # stream id of the common market factor


def ticker_symbols(n_tickers: int) -> list[str]:
    width = max(4, len(str(n_tickers)))
    return [f"SYN{i + 1:0{width}d}" for i in range(n_tickers)]


def _garch_t(
    z: np.ndarray, omega: np.ndarray, alpha: np.ndarray, beta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """GARCH(1,1) shocks e_t = sqrt(h_t) z_t, h_t = omega + alpha e_{t-1}^2 + beta h_{t-1}.

    ``z`` has shape (days, series); parameters are per series. Returns (e, sqrt(h)).
    """
    days = z.shape[0]
    e = np.empty_like(z)
    sd = np.empty_like(z)
    h = omega / (1.0 - alpha - beta)  # start at the unconditional variance
    for t in range(days):
        if t:
            h = omega + alpha * e[t - 1] * e[t - 1] + beta * h
        sd[t] = np.sqrt(h)
        e[t] = sd[t] * z[t]
    return e, sd


def _std_t(rng: np.random.Generator, df: float, size: int) -> np.ndarray:
    """Student-t draws scaled to unit variance."""
    return rng.standard_t(df, size) * math.sqrt((df - 2.0) / df)


def _market_factor(seed: int, n_days: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, _MARKET_STREAM])
    z = _std_t(rng, 5.0, n_days)[:, None]
    daily_var = 0.0105**2
    a, b = 0.09, 0.895
    e, sd = _garch_t(z, np.array([daily_var * (1 - a - b)]), np.array([a]), np.array([b]))
    return 0.0003 + e[:, 0], sd[:, 0]


def iter_market_chunks(
    n_tickers: int,
    years: float,
    seed: int,
    start: str = "2010-01-04",
    *,
    chunk_size: int = 500,
    late_listing: float = 0.10,
    early_delisting: float = 0.05,
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """Yield (bars, actions) per chunk of ``chunk_size`` tickers, in ticker order."""
    n_days = int(round(years * 252))
    if n_tickers <= 0 or n_days <= 0:
        return
    dates = pd.bdate_range(start, periods=n_days).values.astype("datetime64[ns]")
    symbols = ticker_symbols(n_tickers)
    categories = pd.CategoricalDtype(symbols)
    m_ret, m_sd = _market_factor(seed, n_days)
    for c0 in range(0, n_tickers, chunk_size):
        ids = range(c0, min(n_tickers, c0 + chunk_size))
        yield _chunk(seed, list(ids), dates, m_ret, m_sd, symbols, categories, late_listing, early_delisting)


def _chunk(
    seed: int,
    ids: list[int],
    dates: np.ndarray,
    m_ret: np.ndarray,
    m_sd: np.ndarray,
    symbols: list[str],
    categories: pd.CategoricalDtype,
    late_listing: float,
    early_delisting: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    n_days, k = len(dates), len(ids)
    z = np.empty((n_days, k))
    gap = np.empty((n_days, k))
    up = np.empty((n_days, k))
    down = np.empty((n_days, k))
    vnoise = np.empty((n_days, k))
    zero_u = np.empty((n_days, k))
    names = (
        "mu beta sigma alpha persist df p0 vbase vshock illiquid div_yield div_offset first last "
        "split_day split_ratio"
    ).split()
    par = {n: np.empty(k) for n in names}
    split_ratios = np.array([2.0, 3.0, 1.5, 4.0])
    for j, i in enumerate(ids):
        rng = np.random.default_rng([seed, i])
        df = rng.uniform(3.5, 8.0)
        par["df"][j] = df
        par["mu"][j] = rng.normal(0.0002, 0.0003)
        par["beta"][j] = np.clip(rng.normal(1.0, 0.35), 0.1, 2.5)
        par["sigma"][j] = math.exp(rng.normal(math.log(0.015), 0.35))
        par["alpha"][j] = rng.uniform(0.04, 0.12)
        par["persist"][j] = rng.uniform(0.93, 0.985)
        par["p0"][j] = math.exp(rng.normal(math.log(40.0), 0.9))
        par["vbase"][j] = rng.normal(math.log(1.5e6), 1.2)
        par["vshock"][j] = rng.uniform(0.25, 0.6)
        par["illiquid"][j] = rng.random() < 0.05
        par["div_yield"][j] = rng.uniform(0.005, 0.04) if rng.random() < 0.5 else 0.0
        par["div_offset"][j] = rng.integers(0, 63)
        par["first"][j] = rng.integers(1, n_days // 2) if rng.random() < late_listing else 0
        par["last"][j] = rng.integers(n_days // 2, n_days) if rng.random() < early_delisting else n_days
        par["split_day"][j] = rng.integers(1, n_days) if rng.random() < 0.03 else -1
        par["split_ratio"][j] = split_ratios[rng.integers(0, len(split_ratios))]
        z[:, j] = _std_t(rng, df, n_days)
        gap[:, j] = rng.standard_normal(n_days)
        up[:, j] = np.abs(rng.standard_normal(n_days))
        down[:, j] = np.abs(rng.standard_normal(n_days))
        vnoise[:, j] = rng.standard_normal(n_days)
        zero_u[:, j] = rng.random(n_days)

    # idiosyncratic GARCH(1,1) with t shocks
    alpha = par["alpha"]
    beta_g = par["persist"] - alpha
    omega = par["sigma"] ** 2 * (1.0 - par["persist"])
    e, sd = _garch_t(z, omega, alpha, beta_g)

    # log total-return price with a weak pull toward the start level; volume AR(1) component
    kappa = 0.0005
    lp0 = np.log(par["p0"])
    floor = math.log(0.5)
    lp = np.empty((n_days, k))
    ar = np.empty((n_days, k))
    drift = par["mu"][None, :] + par["beta"][None, :] * m_ret[:, None] + e
    cur = lp0.copy()
    a_prev = np.zeros(k)
    for t in range(n_days):
        cur = np.maximum(cur + drift[t] - kappa * (cur - lp0), floor)
        lp[t] = cur
        a_prev = 0.6 * a_prev + 0.3 * vnoise[t]
        ar[t] = a_prev
    adj_close = np.exp(lp)
    total_sd = np.sqrt(sd * sd + (par["beta"][None, :] * m_sd[:, None]) ** 2)

    # intraday shape on the total-return scale: open gaps from the previous close, high/low wrap
    prev = np.vstack([adj_close[:1] * np.exp(-drift[:1]), adj_close[:-1]])
    adj_open = prev * np.exp(0.25 * total_sd * gap)
    adj_high = np.maximum(adj_open, adj_close) * np.exp(0.45 * total_sd * up)
    adj_low = np.minimum(adj_open, adj_close) * np.exp(-0.45 * total_sd * down)

    # dividends: quarterly ex-dates, fraction f = yield/4 of the previous close
    day = np.arange(n_days)[:, None]
    is_ex = ((day - par["div_offset"][None, :]) % 63 == 0) & (day > 0) & (par["div_yield"][None, :] > 0)
    frac = np.where(is_ex, par["div_yield"][None, :] / 4.0, 0.0)
    log_keep = np.log1p(-frac)
    # factor_t = prod over ex-dates AFTER t of (1 - f): reverse cumulative sum, shifted one day
    after = np.cumsum(log_keep[::-1], axis=0)[::-1]
    factor = np.exp(np.vstack([after[1:], np.zeros((1, k))]))
    close = adj_close / factor
    open_ = adj_open / factor
    high = adj_high / factor
    low = adj_low / factor

    # volume: lognormal, larger on big-shock days, persistent; zero days for illiquid names
    shock = np.minimum(np.abs(e) / sd, 5.0)
    mshock = np.minimum(np.abs(m_ret - 0.0003) / m_sd, 5.0)[:, None]
    log_v = par["vbase"][None, :] + par["vshock"][None, :] * (shock - 0.8) + 0.15 * (mshock - 0.8) + ar
    volume = np.floor(np.exp(log_v)).astype(np.int64)
    zero = (par["illiquid"][None, :] > 0) & (zero_u < 0.004)
    volume[zero] = 0

    # ragged histories
    live = (day >= par["first"][None, :]) & (day < par["last"][None, :])

    # long, ticker-major
    keep = live.T.ravel()
    n_keep = int(keep.sum())
    codes = np.repeat(np.asarray(ids, dtype=np.int32), n_days)[keep]
    frame = pd.DataFrame(
        {
            "date": np.tile(dates, k)[keep],
            "open": open_.T.ravel()[keep],
            "high": high.T.ravel()[keep],
            "low": low.T.ravel()[keep],
            "close": close.T.ravel()[keep],
            "adj_close": adj_close.T.ravel()[keep],
            "volume": volume.T.ravel()[keep],
            "ticker": pd.Categorical.from_codes(codes, dtype=categories),
        }
    )
    assert len(frame) == n_keep

    # corporate actions inside each ticker's live range
    rows = []
    for j, i in enumerate(ids):
        first, last = int(par["first"][j]), int(par["last"][j])
        sday = int(par["split_day"][j])
        if first < sday < last:
            rows.append((symbols[i], dates[sday], "split", float(par["split_ratio"][j])))
        for t in np.flatnonzero(is_ex[:, j]):
            if first < t < last:
                rows.append((symbols[i], dates[t], "dividend", float(frac[t, j] * close[t - 1, j])))
    actions = pd.DataFrame(rows, columns=ACTION_COLUMNS)
    if len(actions):
        actions["date"] = pd.to_datetime(actions["date"])
        actions = actions.sort_values(["ticker", "date", "kind"], kind="stable").reset_index(drop=True)
    return frame, actions


def generate_market(
    n_tickers: int,
    years: float,
    seed: int,
    start: str = "2010-01-04",
    *,
    chunk_size: int = 500,
    late_listing: float = 0.10,
    early_delisting: float = 0.05,
    return_actions: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Synthetic bars for ``n_tickers`` over ``years`` x 252 business days from ``start``.

    Returns the long bars frame (``BAR_COLUMNS``; ``ticker`` is categorical with symbols
    ``SYN0001``...), or ``(bars, actions)`` with ``return_actions`` (``ticker,date,kind,value``:
    kind ``split`` with the ratio, ``dividend`` with the raw cash amount per share).
    ``progress(done, total)`` is called after each chunk.
    """
    bars_parts: list[pd.DataFrame] = []
    action_parts: list[pd.DataFrame] = []
    for bars, actions in iter_market_chunks(
        n_tickers,
        years,
        seed,
        start,
        chunk_size=chunk_size,
        late_listing=late_listing,
        early_delisting=early_delisting,
    ):
        bars_parts.append(bars)
        action_parts.append(actions)
        if progress is not None:
            progress(min(n_tickers, len(bars_parts) * chunk_size), n_tickers)
    if bars_parts:
        bars = pd.concat(bars_parts, ignore_index=True, copy=False)
        actions = pd.concat(action_parts, ignore_index=True)
    else:
        bars = pd.DataFrame({c: pd.Series(dtype="float64") for c in BAR_COLUMNS})
        bars["date"] = bars["date"].astype("datetime64[ns]")
        bars["volume"] = bars["volume"].astype("int64")
        bars["ticker"] = bars["ticker"].astype(object)
        actions = pd.DataFrame(columns=ACTION_COLUMNS)
    return (bars, actions) if return_actions else bars
