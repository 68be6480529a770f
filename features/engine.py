"""Framework-free feature engine: long OHLCV bars in, one feature row per (ticker, date) out.

No Django here (numpy, pandas and TA-Lib only), so the engine runs in a notebook, a worker or a
benchmark alike; the feature store persists what it returns. The columns and their parameters are
``features.feature_sets``; the sorted bar arrays ``features.bars``; the market, fundamentals, news
and social inputs per bar ``features.joins``.

Conventions
-----------
* Input ``bars``: long frame ``ticker,date,open,high,low,close,adj_close,volume``. OHLC are
  split-adjusted, ``adj_close`` is split- and dividend-adjusted (the Yahoo convention). Every price
  feature is computed on ADJUSTED prices: adjusted open/high/low = value * adj_close / close.
* A feature at date t uses bars dated <= t only (the close of t is known when it is computed), and
  fundamentals/news known by then. Labels (``features.labels``) are kept apart.
* Returns: ``ret_k`` are SIMPLE returns of adj_close over k bars of that ticker; volatilities use
  daily LOG returns; beta/correlation use daily simple returns against the market.
* Undefined values (warm-up, zero volume, zero variance, no market data) are NaN, never inf.
* Windows count the ticker's own bars (trading days), not calendar days.
* Bounded lookback: every feature at a date depends on at most ``MAX_LOOKBACK`` previous bars of
  that ticker (to within 1e-9; recursive smoothers such as EMA/RSI/MACD/ATR decay their seed below
  1e-15 within it). So an incremental run passes the last ``MAX_LOOKBACK`` bars of each ticker plus
  the new days and keeps rows dated >= since (``compute_features_incremental`` does exactly that).
  For this reason on-balance volume is WINDOWED (``obv_20`` = sum over 20 bars of
  sign(close change) * volume / sum of volume, in [-1, 1]) instead of the classic cumulative OBV
  level: the cumulative level depends on where the history starts (so it cannot be computed
  incrementally from a bounded window), and its scale depends on the ticker's share count (so it is
  not comparable across tickers).
* Rolling sums use a fixed power-of-two decomposition of each window (``features.windows.rolling_sum``):
  the value at a row depends only on the values inside its window and is bit-identical whatever
  precedes it (no prefix-sum drift), which makes truncated and incremental runs reproduce the full
  build.

Performance: bars are sorted by (ticker, date) once and every per-ticker computation runs on
contiguous numpy slices (no pandas groupby/rolling); results are written into one preallocated
column-major block, which becomes the output frame without a copy.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd
import talib

from features.alpha158 import alpha158_columns, compute_alpha158
from features.bars import Bars, lookback_rows, prepare_bars, to_datetime64
from features.feature_sets import FEATURE_COLUMNS, FEATURE_GROUPS, MAX_LOOKBACK, FeatureSpec
from features.joins import join_fundamentals, map_sentiment, map_social, market_index
from features.windows import rolling_sum as _rolling_sum
from features.windows import window_var as _window_var

__all__ = ["compute_features", "compute_features_incremental", "rank_normalize", "select_lookback"]


# --------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------


def compute_features(
    bars: pd.DataFrame,
    *,
    market_returns: pd.Series | None = None,
    fundamentals: pd.DataFrame | None = None,
    sentiment: pd.DataFrame | None = None,
    params: FeatureSpec | dict[str, Any] | None = None,
    dtype: Any = np.float64,
    timings: dict[str, float] | None = None,
    social: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Feature rows for every (ticker, date) in ``bars``.

    Returns a frame with ``ticker``, ``date`` and ``spec.columns()`` (``FEATURE_COLUMNS`` for the
    default spec), sorted by (ticker, date). ``ticker`` keeps the input's kind (categorical stays
    categorical). Rows whose adj_close is missing or <= 0 are dropped. Fundamentals columns are
    NaN when ``fundamentals`` is None, sentiment columns NaN when ``sentiment`` is None (unknown,
    as opposed to 0 = "known: no news").

    ``market_returns``: Series of daily simple market returns indexed by date (e.g. SPY); when
    None, the equal-weighted mean return of the tickers in ``bars`` that day.
    ``fundamentals``: long frame ``ticker,as_of,pe_ratio,eps,market_cap,dividend_yield`` (market
    cap in currency units, dividend yield as the caller stores it); joined point-in-time.
    ``sentiment``: daily ``ticker,date,score,count``.
    ``social``: daily ``ticker,date,score_sum,count,bullish,bearish``
    (``features.social.aggregate_social_daily``), for a spec with ``social_windows``; its columns
    are NaN when it is None.
    ``dtype``: float dtype of the feature block (float32 halves memory for a full-universe build;
    float64 keeps the 1e-9 reproducibility guarantees).
    ``timings``: when a dict is given it is filled with seconds per phase, ``talib`` (inside TA-Lib
    calls only) and ``total``.
    """
    t_start = time.perf_counter()
    spec = FeatureSpec.from_params(params)
    tm: dict[str, float] = {}
    b = prepare_bars(bars)
    tm["prepare"] = time.perf_counter() - t_start
    out = _compute(b, spec, market_returns, fundamentals, sentiment, np.dtype(dtype), tm, social)
    tm["total"] = time.perf_counter() - t_start
    if timings is not None:
        timings.update(tm)
    return out


def _compute(
    b: Bars,
    spec: FeatureSpec,
    market_returns: pd.Series | None,
    fundamentals: pd.DataFrame | None,
    sentiment: pd.DataFrame | None,
    dtype: np.dtype,
    tm: dict[str, float],
    social: pd.DataFrame | None = None,
) -> pd.DataFrame:
    t0 = time.perf_counter()
    columns = spec.columns()
    ci = {c: i for i, c in enumerate(columns)}
    n = b.n
    out = np.empty((n, len(columns)), dtype=dtype, order="F")

    # ---- global (vectorized) pieces ----------------------------------------------------
    d8 = b.dates.view(np.int64)
    date_codes, uniq = pd.factorize(d8, sort=True)
    uniq_dates = np.asarray(uniq, dtype=np.int64).view("datetime64[ns]")
    market_level = market_index(b, date_codes, uniq_dates, market_returns)

    ac, cl = b.adj_close, b.close
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = ac / cl
    factor[~(np.isfinite(factor) & (factor > 0))] = np.nan

    def adjusted(raw: np.ndarray) -> np.ndarray:
        v = raw * factor
        bad = ~np.isfinite(v)
        v[bad] = ac[bad]
        return v

    a_high, a_low = adjusted(b.high), adjusted(b.low)
    volume = np.nan_to_num(b.volume, nan=0.0)

    di = pd.DatetimeIndex(uniq_dates)
    out[:, ci["day_of_week"]] = di.dayofweek.to_numpy()[date_codes]
    out[:, ci["month"]] = di.month.to_numpy()[date_codes]

    fund = join_fundamentals(b, fundamentals)
    for name in FEATURE_GROUPS["fundamentals"]:
        out[:, ci[name]] = np.nan if fund is None else fund[name]
    news = map_sentiment(b, sentiment)
    del fund
    tm["joins"] = time.perf_counter() - t0

    # ---- per ticker --------------------------------------------------------------------
    t1 = time.perf_counter()
    t_talib = 0.0
    perf = time.perf_counter
    sqrt_ann = math.sqrt(spec.annualization)
    m_tag, b_tag = spec.macd_tag, spec.bb_tag
    col_rsi = ci[f"rsi_{spec.rsi_period}"]
    col_macd = [ci[f"macd_{m_tag}"], ci[f"macd_signal_{m_tag}"], ci[f"macd_hist_{m_tag}"]]
    col_bb = [ci[f"bb_upper_{b_tag}"], ci[f"bb_middle_{b_tag}"], ci[f"bb_lower_{b_tag}"]]
    col_pctb, col_bbw = ci[f"bb_pctb_{b_tag}"], ci[f"bb_width_{b_tag}"]
    col_sma = [(p, ci[f"sma_{p}"]) for p in spec.sma_periods]
    col_ema = [(p, ci[f"ema_{p}"]) for p in spec.ema_periods]
    col_atr = ci[f"atr_{spec.atr_period}"]
    col_obv = ci[f"obv_{spec.obv_window}"]
    col_ret = [(h, ci[f"ret_{h}"]) for h in spec.return_horizons]
    col_vol = [(w, ci[f"vol_{w}"]) for w in spec.vol_windows]
    vw = spec.volume_window
    col_vr, col_vz = ci[f"volume_ratio_{vw}"], ci[f"volume_z_{vw}"]
    bw = spec.beta_window
    col_beta, col_corr = ci[f"beta_{bw}"], ci[f"corr_{bw}"]
    rw = spec.rel_ret_window
    col_rel = ci[f"rel_ret_{rw}"]
    sent_cols = [(w, ci[f"sent_mean_{w}"]) for w in spec.sent_windows]
    ncw = spec.news_count_window
    col_nc, col_has = ci[f"news_count_{ncw}"], ci["has_news"]
    if news is None:
        for c in FEATURE_GROUPS["sentiment"]:
            out[:, ci[c]] = np.nan

    nan = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(len(b.bounds) - 1):
            s, e = int(b.bounds[k]), int(b.bounds[k + 1])
            m = e - s
            c = ac[s:e]
            h = a_high[s:e]
            lo = a_low[s:e]
            v = volume[s:e]

            ta0 = perf()
            rsi = talib.RSI(c, spec.rsi_period)
            macd = talib.MACD(c, spec.macd_fast, spec.macd_slow, spec.macd_signal)
            bb = talib.BBANDS(c, spec.bb_period, spec.bb_nstd, spec.bb_nstd, 0)
            smas = {p: talib.SMA(c, p) for p, _ in col_sma}
            emas = {p: talib.EMA(c, p) for p, _ in col_ema}
            atr = talib.ATR(h, lo, c, spec.atr_period)
            t_talib += perf() - ta0

            out[s:e, col_rsi] = rsi
            for arr, j in zip(macd, col_macd, strict=True):
                out[s:e, j] = arr
            for arr, j in zip(bb, col_bb, strict=True):
                out[s:e, j] = arr
            upper, middle, lower = bb
            band = upper - lower
            # a constant window has zero width (TA-Lib may leave ~1e-15 of rounding): %b undefined
            flat = band <= 1e-9 * np.abs(middle)
            band[flat] = 0.0
            width = band / middle
            width[~np.isfinite(width)] = nan
            out[s:e, col_bbw] = width
            band[flat] = nan
            out[s:e, col_pctb] = (c - lower) / band
            for p, j in col_sma:
                out[s:e, j] = smas[p]
            for p, j in col_ema:
                out[s:e, j] = emas[p]
            for p in spec.close_to_sma:
                out[s:e, ci[f"close_to_sma_{p}"]] = c / smas[p] - 1.0
            for p in spec.close_to_ema:
                out[s:e, ci[f"close_to_ema_{p}"]] = c / emas[p] - 1.0
            out[s:e, col_atr] = atr

            # simple returns over h bars
            for hz, j in col_ret:
                r = np.full(m, nan)
                if m > hz:
                    r[hz:] = c[hz:] / c[:-hz] - 1.0
                out[s:e, j] = r

            # one-bar changes: log return, simple return, sign of the move
            lr = np.full(m, nan)
            r1 = np.full(m, nan)
            sgn = np.full(m, nan)
            if m > 1:
                lr[1:] = np.log(c[1:] / c[:-1])
                r1[1:] = c[1:] / c[:-1] - 1.0
                sgn[1:] = np.sign(c[1:] - c[:-1])

            # windowed OBV: signed volume / volume over the window
            obv_w = spec.obv_window
            sv = _rolling_sum(np.stack([sgn * v, v]), obv_w)
            obv = sv[0] / sv[1]
            obv[~np.isfinite(obv)] = nan
            out[s:e, col_obv] = obv

            # realized volatility (annualized std of log returns, all w returns required)
            lr0 = np.where(np.isfinite(lr), lr, 0.0)
            for w, j in col_vol:
                sums = _rolling_sum(np.stack([lr0, lr0 * lr0]), w)
                var = _window_var(sums[0], sums[1], float(w))
                vol = np.sqrt(np.maximum(var, 0.0)) * sqrt_ann
                if m > 0:
                    vol[: min(w, m)] = nan  # the window includes the undefined first return
                out[s:e, j] = vol

            # volume vs its window
            vs = _rolling_sum(np.stack([v, v * v]), vw)
            mean_v = vs[0] / vw
            ratio = v / mean_v
            ratio[~np.isfinite(ratio)] = nan
            out[s:e, col_vr] = ratio
            var_v = _window_var(vs[0], vs[1], float(vw))
            sd_v = np.sqrt(var_v)
            sd_v[sd_v <= 0] = nan
            z = (v - mean_v) / sd_v
            z[~np.isfinite(z)] = nan
            out[s:e, col_vz] = z

            # market: ticker-period market returns from the index level
            lvl = market_level[s:e]
            mr = np.full(m, nan)
            if m > 1:
                mr[1:] = lvl[1:] / lvl[:-1] - 1.0
            ok = np.isfinite(mr) & np.isfinite(r1)
            x = np.where(ok, r1, 0.0)
            y = np.where(ok, mr, 0.0)
            st = _rolling_sum(np.stack([ok.astype(np.float64), x, y, x * x, y * y, x * y]), bw)
            cnt, sx, sy, sxx, syy, sxy = st
            cov = sxy - sx * sy / cnt
            var_x = _window_var(sx, sxx, cnt)
            var_y = _window_var(sy, syy, cnt)
            enough = cnt >= spec.beta_min_obs
            var_y[~enough | (var_y <= 0)] = nan
            var_x[~enough | (var_x <= 0)] = nan
            cov = cov / (cnt - 1)
            beta = cov / var_y
            corr = np.clip(cov / np.sqrt(var_x * var_y), -1.0, 1.0)
            beta[~np.isfinite(beta)] = nan
            corr[~np.isfinite(corr)] = nan
            out[s:e, col_beta] = beta
            out[s:e, col_corr] = corr

            rel = np.full(m, nan)
            if m > rw:
                rel[rw:] = (c[rw:] / c[:-rw]) - (lvl[rw:] / lvl[:-rw])
            rel[~np.isfinite(rel)] = nan
            out[s:e, col_rel] = rel

            if news is not None:
                score = news[0][s:e]
                has = np.isfinite(score)
                hasf = has.astype(np.float64)
                sc0 = np.where(has, score, 0.0)
                for w, j in sent_cols:
                    ss = _rolling_sum(np.stack([sc0, hasf]), w)
                    sm = np.where(ss[1] > 0, ss[0] / np.where(ss[1] > 0, ss[1], 1.0), 0.0)
                    sm[np.isnan(ss[1])] = nan
                    out[s:e, j] = sm
                out[s:e, col_nc] = _rolling_sum(news[1][s:e], ncw)
                out[s:e, col_has] = hasf
    tm["talib"] = t_talib
    tm["per_ticker"] = time.perf_counter() - t1

    if spec.alpha158_windows:
        t3 = time.perf_counter()
        names = alpha158_columns(spec.alpha158_windows)
        first = ci[names[0]]
        compute_alpha158(open=adjusted(b.open), high=a_high, low=a_low, close=ac, volume=volume, bounds=b.bounds,
                         windows=spec.alpha158_windows, out=out[:, first : first + len(names)])
        tm["alpha158"] = time.perf_counter() - t3

    if spec.social_windows:
        t4 = time.perf_counter()
        _social_columns(b, spec, map_social(b, social), out, ci)
        tm["social"] = time.perf_counter() - t4

    t2 = time.perf_counter()
    frame = pd.DataFrame(out, columns=columns, copy=False)
    frame.insert(0, "date", b.dates)
    frame.insert(0, "ticker", b.ticker_column())
    tm["assemble"] = time.perf_counter() - t2
    return frame


def _social_columns(b: Bars, spec: FeatureSpec, daily: np.ndarray | None, out: np.ndarray,
                    ci: dict[str, int]) -> None:
    """The ``social_*`` columns from per-bar post sums (``map_social``), per ticker over its own bars.

    ``social_mean_w``: post-weighted mean score of the last w bars, 0 when they have no post (as the
    news mean: a ticker nobody posted about reads neutral); ``social_count_w``: posts; ``social_bullish_w``:
    bullish / (bullish + bearish) posts, NaN without either (no share of nothing);
    ``social_abnormal_W``: log((1 + posts of the bar) / (1 + mean posts of the W bars before it)).
    All NaN without post data (``daily`` None) and in each window's warm-up.
    """
    names = [f"social_{kind}_{w}" for w in spec.social_windows for kind in ("mean", "count", "bullish")]
    vw = spec.social_volume_window
    abnormal = ci[f"social_abnormal_{vw}"]
    if daily is None:
        for name in (*names, f"social_abnormal_{vw}"):
            out[:, ci[name]] = np.nan
        return
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(len(b.bounds) - 1):
            s, e = int(b.bounds[k]), int(b.bounds[k + 1])
            day = daily[:, s:e]
            for w in spec.social_windows:
                ss, posts, bull, bear = _rolling_sum(day, w)
                mean = np.where(posts > 0, ss / np.where(posts > 0, posts, 1.0), 0.0)
                mean[np.isnan(posts)] = np.nan
                polar = bull + bear
                share = np.where(polar > 0, bull / np.where(polar > 0, polar, 1.0), np.nan)
                out[s:e, ci[f"social_mean_{w}"]] = mean
                out[s:e, ci[f"social_count_{w}"]] = posts
                out[s:e, ci[f"social_bullish_{w}"]] = share
            # the vw bars before this one: a window of vw + 1 less the bar itself
            before = _rolling_sum(day[1], vw + 1) - day[1]
            out[s:e, abnormal] = np.log1p(day[1]) - np.log1p(before / vw)


# --------------------------------------------------------------------------------------------
# Incremental computation
# --------------------------------------------------------------------------------------------


def select_lookback(bars: pd.DataFrame, since: Any, lookback: int | None = None) -> pd.DataFrame:
    """Rows of ``bars`` an incremental run needs: per ticker the last ``lookback`` bars before
    ``since`` (default ``MAX_LOOKBACK``) plus every bar dated >= since."""
    lookback = MAX_LOOKBACK if lookback is None else int(lookback)
    b = prepare_bars(bars)
    rows = lookback_rows(b, since, lookback)
    sub = b.take(rows)
    return pd.DataFrame(
        {
            "ticker": sub.ticker_column(),
            "date": sub.dates,
            "open": sub.open,
            "high": sub.high,
            "low": sub.low,
            "close": sub.close,
            "adj_close": sub.adj_close,
            "volume": sub.volume,
        }
    )




def compute_features_incremental(
    bars: pd.DataFrame,
    since: Any,
    *,
    market_returns: pd.Series | None = None,
    fundamentals: pd.DataFrame | None = None,
    sentiment: pd.DataFrame | None = None,
    params: FeatureSpec | dict[str, Any] | None = None,
    dtype: Any = np.float64,
    timings: dict[str, float] | None = None,
    social: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Feature rows dated >= ``since``, equal (to 1e-9) to those of a full-history build.

    ``bars`` may hold the full history or just enough of it: only the last ``max_lookback`` bars
    of each ticker before ``since`` are used. Pass ``fundamentals``, ``sentiment`` and ``social`` untrimmed
    (the latest snapshot before the first new day may be older than the bar lookback). With
    ``market_returns=None`` the equal-weighted market is built from the selected bars, which hold
    every ticker trading on the days the market features look at.
    """
    t_start = time.perf_counter()
    spec = FeatureSpec.from_params(params)
    tm: dict[str, float] = {}
    b = prepare_bars(bars)
    b = b.take(lookback_rows(b, since, spec.max_lookback()))
    tm["prepare"] = time.perf_counter() - t_start
    frame = _compute(b, spec, market_returns, fundamentals, sentiment, np.dtype(dtype), tm, social)
    since64 = to_datetime64([since])[0]
    frame = frame.loc[frame["date"].to_numpy() >= since64].reset_index(drop=True)
    tm["total"] = time.perf_counter() - t_start
    if timings is not None:
        timings.update(tm)
    return frame


# --------------------------------------------------------------------------------------------
# Cross-sectional normalization
# --------------------------------------------------------------------------------------------


def rank_normalize(df: pd.DataFrame, columns: list[str] | None = None, *, by: str = "date") -> pd.DataFrame:
    """Per-date cross-sectional rank of each column mapped linearly onto [-0.5, 0.5].

    ``columns`` defaults to the feature columns present, except calendar fields and ``has_news``.
    Lowest value -> -0.5, highest -> 0.5, ties share their average rank, a lone value -> 0, NaN
    stays NaN. Returns a copy with the columns replaced.
    """
    if columns is None:
        skip = set(FEATURE_GROUPS["calendar"]) | {"has_news"}
        columns = [c for c in FEATURE_COLUMNS if c in df.columns and c not in skip]
    columns = list(columns)
    res = df.copy()
    grouped = df.groupby(by, sort=False, observed=True)[columns]
    ranks = grouped.rank(method="average")
    counts = grouped.transform("count")
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = (ranks - 1.0) / (counts - 1.0) - 0.5
    scaled = scaled.where(counts > 1, 0.0).where(df[columns].notna())
    res[columns] = scaled.astype(np.float64)
    return res
