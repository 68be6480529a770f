"""Side inputs joined onto the sorted bars (``features.bars``), one value per bar, point in time.

The market index per row, the latest fundamentals snapshot dated before each bar, and the news
and social-media days mapped to the ticker's first bar on or after them. No Django.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.bars import Bars, day_key, day_numbers, to_datetime64
from features.windows import safe_div

__all__ = ["join_fundamentals", "map_sentiment", "map_social", "market_index"]


def market_index(
    b: Bars, date_codes: np.ndarray, uniq_dates: np.ndarray, market_returns: pd.Series | None
) -> np.ndarray:
    """Cumulative market index per row (NaN where the market is unknown that day).

    With ``market_returns`` (a Series of daily simple returns indexed by date) the index is the
    compounded series on its own dates; otherwise the equal-weighted mean of the simple returns of
    the tickers in ``bars`` that day. Market returns between two bars of a ticker are index ratios,
    which compounds correctly over a ticker's missing days.
    """
    if market_returns is None:
        ac = b.adj_close
        r = np.full(b.n, np.nan)
        r[1:] = ac[1:] / ac[:-1] - 1.0
        r[b.bounds[:-1]] = np.nan
        ok = np.isfinite(r)
        sums = np.bincount(date_codes[ok], weights=r[ok], minlength=len(uniq_dates))
        cnt = np.bincount(date_codes[ok], minlength=len(uniq_dates))
        with np.errstate(invalid="ignore", divide="ignore"):
            m = np.where(cnt > 0, sums / np.maximum(cnt, 1), 0.0)
        level = np.cumprod(1.0 + m)
        return level[date_codes]
    s = pd.Series(market_returns).dropna()
    mdates = to_datetime64(s.index).astype("datetime64[D]").astype("datetime64[ns]")
    vals = s.to_numpy(dtype=np.float64)
    order = np.argsort(mdates, kind="stable")
    mdates, vals = mdates[order], vals[order]
    # duplicate dates: keep the last
    if len(mdates) > 1:
        last = np.r_[mdates[1:] != mdates[:-1], True]
        mdates, vals = mdates[last], vals[last]
    if len(mdates) == 0:
        return np.full(len(date_codes), np.nan)
    level = np.cumprod(1.0 + vals)
    pos = np.searchsorted(mdates, uniq_dates)
    pos_c = np.minimum(pos, len(mdates) - 1)
    hit = (pos < len(mdates)) & (mdates[pos_c] == uniq_dates)
    lvl_u = np.where(hit, level[pos_c], np.nan)
    return lvl_u[date_codes]


def join_fundamentals(b: Bars, fundamentals: pd.DataFrame | None) -> dict[str, np.ndarray] | None:
    """Latest snapshot per ticker with as_of STRICTLY before the bar's date.

    Same result as ``pd.merge_asof(bars, f, left_on='date', right_on='as_of', by='ticker',
    allow_exact_matches=False)``, done with one searchsorted on (ticker code, day) keys.
    """
    if fundamentals is None:
        return None
    f = fundamentals
    code_of = pd.Index(b.symbols)
    fcode = code_of.get_indexer(f["ticker"].astype(object))
    fday = day_numbers(f["as_of"])
    ok = (fcode >= 0) & pd.notna(f["as_of"]).to_numpy()
    cols = {}
    for name in ("pe_ratio", "eps", "market_cap", "dividend_yield"):
        if name in f.columns:
            cols[name] = pd.to_numeric(f[name], errors="coerce").to_numpy(dtype=np.float64)[ok]
        else:
            cols[name] = np.full(int(ok.sum()), np.nan)
    fkey = day_key(fcode[ok], fday[ok])
    order = np.argsort(fkey, kind="stable")
    fkey = fkey[order]
    cols = {k: v[order] for k, v in cols.items()}
    bkey = day_key(b.codes, b.dates.astype("datetime64[D]").astype(np.int64))
    idx = np.searchsorted(fkey, bkey, side="left") - 1
    idx_c = np.maximum(idx, 0)
    hit = (idx >= 0) & ((fkey[idx_c] >> 32) == b.codes) if len(fkey) else np.zeros(b.n, bool)

    def pick(v: np.ndarray) -> np.ndarray:
        if len(v) == 0:
            return np.full(b.n, np.nan)
        return np.where(hit, v[idx_c], np.nan)

    pe, eps, mc, dy = (pick(cols[k]) for k in ("pe_ratio", "eps", "market_cap", "dividend_yield"))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_mc = np.where(mc > 0, np.log(np.where(mc > 0, mc, 1.0)), np.nan)
    return {
        "pe_ratio": np.where(np.isfinite(pe), pe, np.nan),
        # eps per share / price per share. Uses the split-adjusted close of the bar: correct when
        # the provider's EPS is on the same (current) share basis.
        "earnings_yield": safe_div(eps, b.close),
        "log_market_cap": log_mc,
        "dividend_yield": np.where(np.isfinite(dy), dy, np.nan),
    }


def map_sentiment(b: Bars, sentiment: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Daily news rows -> per-bar (score, count).

    A news day maps to the ticker's first bar dated on or after it (weekend news counts on Monday);
    news dated before the ticker's first bar or after its last bar is dropped. Several news days
    landing on one bar combine into a count-weighted mean score. Score is NaN on bars without news.
    """
    if sentiment is None:
        return None
    s = sentiment
    code_of = pd.Index(b.symbols)
    scode = code_of.get_indexer(s["ticker"].astype(object)).astype(np.int64)
    sday = day_numbers(s["date"])
    score = pd.to_numeric(s["score"], errors="coerce").to_numpy(dtype=np.float64)
    if "count" in s.columns:
        count = pd.to_numeric(s["count"], errors="coerce").fillna(0).to_numpy(dtype=np.float64)
    else:
        count = np.ones(len(s))
    ok = (scode >= 0) & np.isfinite(score) & pd.notna(s["date"]).to_numpy()
    scode, sday, score, count = scode[ok], sday[ok], score[ok], count[ok]
    bday = b.dates.astype("datetime64[D]").astype(np.int64)
    bkey = day_key(b.codes, bday)
    skey = day_key(scode, sday)
    j = np.searchsorted(bkey, skey, side="left")
    jc = np.minimum(j, max(b.n - 1, 0))
    valid = (j < b.n) & (b.codes[jc] == scode) if b.n else np.zeros(len(skey), bool)
    first_row = b.bounds[:-1][np.searchsorted(b.bounds[:-1], jc, side="right") - 1] if b.n else jc
    valid &= (jc != first_row) | (bday[jc] == sday)
    jv = jc[valid]
    w = np.where(count[valid] > 0, count[valid], 1.0)
    wsum = np.bincount(jv, weights=w, minlength=b.n)
    ssum = np.bincount(jv, weights=w * score[valid], minlength=b.n)
    csum = np.bincount(jv, weights=count[valid], minlength=b.n)
    hits = np.bincount(jv, minlength=b.n)
    with np.errstate(invalid="ignore", divide="ignore"):
        day_score = np.where(hits > 0, ssum / np.where(wsum > 0, wsum, 1.0), np.nan)
    return day_score, csum


def map_social(b: Bars, social: pd.DataFrame | None) -> np.ndarray | None:
    """Daily social rows (``ticker, date, score_sum, count, bullish, bearish``, dated by the trading
    day the posts can first affect) -> per-bar sums, shape (4, n): score sum, posts, bullish, bearish.

    A day maps to the ticker's first bar dated on or after it, as news does; days before the
    ticker's first bar or after its last bar are dropped."""
    if social is None:
        return None
    out = np.zeros((4, b.n))
    if social.empty or b.n == 0:
        return out
    code_of = pd.Index(b.symbols)
    scode = code_of.get_indexer(social["ticker"].astype(object)).astype(np.int64)
    sday = day_numbers(social["date"])
    values = np.stack([pd.to_numeric(social[c], errors="coerce").fillna(0).to_numpy(dtype=np.float64)
                       for c in ("score_sum", "count", "bullish", "bearish")])
    ok = (scode >= 0) & pd.notna(social["date"]).to_numpy()
    scode, sday, values = scode[ok], sday[ok], values[:, ok]
    bday = b.dates.astype("datetime64[D]").astype(np.int64)
    bkey = day_key(b.codes, bday)
    j = np.searchsorted(bkey, day_key(scode, sday), side="left")
    jc = np.minimum(j, b.n - 1)
    valid = (j < b.n) & (b.codes[jc] == scode)
    first_row = b.bounds[:-1][np.searchsorted(b.bounds[:-1], jc, side="right") - 1]
    valid &= (jc != first_row) | (bday[jc] == sday)
    for k in range(4):
        out[k] = np.bincount(jc[valid], weights=values[k, valid], minlength=b.n)
    return out

