"""Framework-free feature engine: long OHLCV bars in, one feature row per (ticker, date) out.

No Django here (numpy, pandas and TA-Lib only), so the engine runs in a notebook, a worker or a
benchmark alike; the feature store persists what it returns.

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
* Rolling sums use a fixed power-of-two decomposition of each window (``_rolling_sum``): the value at
  a row depends only on the values inside its window and is bit-identical whatever precedes it (no
  prefix-sum drift), which makes truncated and incremental runs reproduce the full build.

Performance: bars are sorted by (ticker, date) once and every per-ticker computation runs on
contiguous numpy slices (no pandas groupby/rolling); results are written into one preallocated
column-major block, which becomes the output frame without a copy.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import pandas as pd
import talib

from features.alpha158 import alpha158_columns, alpha158_lookback, compute_alpha158
from features.normalize import CS_NORMALIZATIONS
from features.windows import rolling_sum as _rolling_sum
from features.windows import safe_div as _safe_div
from features.windows import window_var as _window_var

__all__ = [
    "ALPHA158_SPEC",
    "DEFAULT_SPEC",
    "FEATURE_SETS",
    "FEATURE_COLUMNS",
    "MODEL_FEATURE_COLUMNS",
    "FEATURE_GROUPS",
    "FeatureSpec",
    "MAX_LOOKBACK",
    "compute_features",
    "compute_features_incremental",
    "rank_normalize",
    "select_lookback",
]

_NS_PER_DAY = 86_400 * 10**9


# --------------------------------------------------------------------------------------------
# Specification: the parameters and the ordered column list a feature-set version hashes.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSpec:
    """Parameters of the feature set. Column names are derived from them."""

    rsi_period: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    bb_period: int = 20
    bb_nstd: float = 2.0
    sma_periods: tuple[int, ...] = (5, 10, 20, 50, 200)
    ema_periods: tuple[int, ...] = (12, 26, 50)
    close_to_sma: tuple[int, ...] = (20, 50, 200)
    close_to_ema: tuple[int, ...] = (50,)
    return_horizons: tuple[int, ...] = (1, 5, 10, 20)
    atr_period: int = 14
    obv_window: int = 20
    vol_windows: tuple[int, ...] = (5, 20, 60)
    annualization: int = 252
    volume_window: int = 20
    beta_window: int = 60
    beta_min_obs: int = 48
    rel_ret_window: int = 20
    sent_windows: tuple[int, ...] = (5, 20)
    news_count_window: int = 5
    # Recursive indicators must decay their seed below this (relative) within MAX_LOOKBACK.
    seed_decay: float = 1e-15
    # Qlib's Alpha158 family (``features.alpha158``) over these windows; () leaves it out.
    alpha158_windows: tuple[int, ...] = ()
    # Per-date normalization every reader of the store applies ("none" | "robust_zscore";
    # ``features.normalize``): part of the version, so training and serving see the same values.
    cs_normalization: str = "none"
    # Social-media posts (``features.social``): post-weighted mean score, post count and bullish share
    # over these windows, and the day's posts against the ticker's own trailing
    # ``social_volume_window``-bar average; () leaves the group out.
    social_windows: tuple[int, ...] = ()
    social_volume_window: int = 20

    @classmethod
    def from_params(cls, params: FeatureSpec | dict[str, Any] | None) -> FeatureSpec:
        if params is None:
            return DEFAULT_SPEC
        if isinstance(params, FeatureSpec):
            return params
        known = {f.name for f in fields(cls)}
        unknown = set(params) - known
        if unknown:
            raise ValueError(f"unknown feature parameters: {sorted(unknown)}")
        clean = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        spec = replace(DEFAULT_SPEC, **clean)
        if spec.cs_normalization not in CS_NORMALIZATIONS:
            raise ValueError(f"cs_normalization must be one of {CS_NORMALIZATIONS}, got {spec.cs_normalization!r}")
        if any(int(w) != w or w < 1 for w in spec.social_windows) or spec.social_volume_window < 1:
            raise ValueError("social_windows and social_volume_window must be positive whole numbers of bars")
        missing_sma = set(spec.close_to_sma) - set(spec.sma_periods)
        missing_ema = set(spec.close_to_ema) - set(spec.ema_periods)
        if missing_sma or missing_ema:
            raise ValueError("close_to_sma/close_to_ema periods must be among sma_periods/ema_periods")
        return spec

    # --- names ---------------------------------------------------------------------------
    @property
    def _macd_tag(self) -> str:
        return f"{self.macd_fast}_{self.macd_slow}_{self.macd_signal}"

    @property
    def _bb_tag(self) -> str:
        nstd = int(self.bb_nstd) if float(self.bb_nstd).is_integer() else self.bb_nstd
        return f"{self.bb_period}_{nstd}"

    def groups(self) -> dict[str, list[str]]:
        m, b = self._macd_tag, self._bb_tag
        technical = [
            f"rsi_{self.rsi_period}",
            f"macd_{m}",
            f"macd_signal_{m}",
            f"macd_hist_{m}",
            f"bb_upper_{b}",
            f"bb_middle_{b}",
            f"bb_lower_{b}",
            f"bb_pctb_{b}",
            f"bb_width_{b}",
            *[f"sma_{p}" for p in self.sma_periods],
            *[f"ema_{p}" for p in self.ema_periods],
            *[f"close_to_sma_{p}" for p in self.close_to_sma],
            *[f"close_to_ema_{p}" for p in self.close_to_ema],
            *[f"ret_{h}" for h in self.return_horizons],
            f"atr_{self.atr_period}",
            f"obv_{self.obv_window}",
        ]
        market = [
            *[f"vol_{w}" for w in self.vol_windows],
            f"volume_ratio_{self.volume_window}",
            f"volume_z_{self.volume_window}",
            f"beta_{self.beta_window}",
            f"corr_{self.beta_window}",
            f"rel_ret_{self.rel_ret_window}",
        ]
        fundamentals = ["pe_ratio", "earnings_yield", "log_market_cap", "dividend_yield"]
        sentiment = [
            *[f"sent_mean_{w}" for w in self.sent_windows],
            f"news_count_{self.news_count_window}",
            "has_news",
        ]
        calendar = ["day_of_week", "month"]
        groups = {
            "technical": technical,
            "market": market,
            "fundamentals": fundamentals,
            "sentiment": sentiment,
            "calendar": calendar,
        }
        if self.alpha158_windows:
            groups["alpha158"] = alpha158_columns(self.alpha158_windows)
        if self.social_windows:
            groups["social"] = [
                *[f"social_{kind}_{w}" for w in self.social_windows for kind in ("mean", "count", "bullish")],
                f"social_abnormal_{self.social_volume_window}",
            ]
        return groups

    def columns(self) -> list[str]:
        return [c for cols in self.groups().values() for c in cols]

    def model_columns(self) -> list[str]:
        """Scale-free features, the default inputs of the learners and of drift checks.

        Price-level columns (SMA/EMA/Bollinger levels, MACD and ATR in dollars) are left out: their
        scale differs by ticker and trends over time, so a model fitted on them extrapolates and a
        drift check flags them on every window. Ordered so a model that takes the first N (the
        LSTM's ``features``) gets returns, trend and volatility first.
        """
        g = self.groups()
        levels = {f"macd_{self._macd_tag}", f"macd_signal_{self._macd_tag}", f"macd_hist_{self._macd_tag}",
                  f"bb_upper_{self._bb_tag}", f"bb_middle_{self._bb_tag}", f"bb_lower_{self._bb_tag}",
                  f"atr_{self.atr_period}",
                  *(f"sma_{p}" for p in self.sma_periods), *(f"ema_{p}" for p in self.ema_periods)}
        technical = [c for c in g["technical"] if c not in levels]
        # Alpha158 columns are ratios to the close (scale-free) and come last, so the LSTM's first N
        # stay the same in both feature sets.
        return [*technical, *g["market"], *g["fundamentals"], *g["sentiment"], *g["calendar"],
                *g.get("alpha158", []), *g.get("social", [])]

    # --- lookback ------------------------------------------------------------------------
    def max_lookback(self) -> int:
        """Bars needed before a date so that every feature there equals a full-history build.

        Windowed features need their window (+1 bar for a return). Recursive smoothers (EMA with
        alpha = 2/(p+1); Wilder's RSI/ATR with alpha = 1/p) need their seed period plus enough bars
        for (1 - alpha)^n < seed_decay. Rounded up to a multiple of 100.
        """

        def decay(alpha: float) -> int:
            return math.ceil(math.log(self.seed_decay) / math.log(1.0 - alpha))

        def ema(p: int) -> int:
            return p + decay(2.0 / (p + 1))

        recursive = [
            *[ema(p) for p in self.ema_periods],
            ema(self.macd_slow) + ema(self.macd_signal),
            self.rsi_period + 1 + decay(1.0 / self.rsi_period),
            self.atr_period + 1 + decay(1.0 / self.atr_period),
        ]
        windows = [
            max(self.sma_periods),
            self.bb_period,
            max(self.return_horizons) + 1,
            self.obv_window + 1,
            max(self.vol_windows) + 1,
            self.volume_window,
            self.beta_window + 1,
            self.rel_ret_window + 1,
            max(self.sent_windows),
            self.news_count_window,
            alpha158_lookback(self.alpha158_windows) if self.alpha158_windows else 0,
            max(self.social_windows, default=0),
            self.social_volume_window + 1 if self.social_windows else 0,
        ]
        need = max(recursive + windows)
        return int(math.ceil(need / 100.0) * 100)

    def to_dict(self) -> dict[str, Any]:
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        # a spec without Alpha158 or normalization keeps the parameters (and so the version hash)
        # it had before they existed: existing stores stay current
        if not self.alpha158_windows:
            del out["alpha158_windows"]
        if self.cs_normalization == "none":
            del out["cs_normalization"]
        if not self.social_windows:
            del out["social_windows"], out["social_volume_window"]
        return out

    def version_hash(self) -> str:
        """sha256 over the ordered column list and the parameters: the feature-set version key."""
        payload = json.dumps({"columns": self.columns(), "params": self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


DEFAULT_SPEC = FeatureSpec()
ALPHA158_SPEC = replace(DEFAULT_SPEC, alpha158_windows=(5, 10, 20, 30, 60))
# The feature sets a build knows by name (``build_features --feature-set``, ``training.feature_set``).
# ``<set>_cs``: the same features normalized per date across the universe (``features.normalize``).
FEATURE_SETS: dict[str, FeatureSpec] = {
    "default": DEFAULT_SPEC,
    "alpha158": ALPHA158_SPEC,
    "default_cs": replace(DEFAULT_SPEC, cs_normalization="robust_zscore"),
    "alpha158_cs": replace(ALPHA158_SPEC, cs_normalization="robust_zscore"),
    # the default features plus social-media sentiment (``social_*``; posts from ``ingest_social`` or
    # ML_SOCIAL_PROVIDER): the day's posts and the last week's
    "default_social": replace(DEFAULT_SPEC, social_windows=(1, 5)),
}
FEATURE_GROUPS: dict[str, list[str]] = DEFAULT_SPEC.groups()
FEATURE_COLUMNS: list[str] = DEFAULT_SPEC.columns()
MODEL_FEATURE_COLUMNS: list[str] = DEFAULT_SPEC.model_columns()
MAX_LOOKBACK: int = DEFAULT_SPEC.max_lookback()


# --------------------------------------------------------------------------------------------
# Numeric helpers
# --------------------------------------------------------------------------------------------


def _day_key(codes: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Sortable int64 key of (ticker code, day number); days may be negative (before 1970)."""
    return (codes.astype(np.int64) << 32) + (days.astype(np.int64) + (1 << 31))


def _days(values: Any) -> np.ndarray:
    return _to_datetime64(values).astype("datetime64[D]").astype(np.int64)


def _to_datetime64(values: Any) -> np.ndarray:
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


# --------------------------------------------------------------------------------------------
# Input preparation
# --------------------------------------------------------------------------------------------


@dataclass
class _Bars:
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

    def take(self, rows: np.ndarray) -> _Bars:
        codes = self.codes[rows]
        return _Bars(
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


def _prepare_bars(bars: pd.DataFrame) -> _Bars:
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
        dates = _to_datetime64(date_col)
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
    return _Bars(
        codes=codes,
        symbols=symbols,
        categorical=categorical,
        dates=dates,
        bounds=_bounds(codes),
        **arrays,
    )


def _market_index(
    b: _Bars, date_codes: np.ndarray, uniq_dates: np.ndarray, market_returns: pd.Series | None
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
    mdates = _to_datetime64(s.index).astype("datetime64[D]").astype("datetime64[ns]")
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


def _join_fundamentals(b: _Bars, fundamentals: pd.DataFrame | None) -> dict[str, np.ndarray] | None:
    """Latest snapshot per ticker with as_of STRICTLY before the bar's date.

    Same result as ``pd.merge_asof(bars, f, left_on='date', right_on='as_of', by='ticker',
    allow_exact_matches=False)``, done with one searchsorted on (ticker code, day) keys.
    """
    if fundamentals is None:
        return None
    f = fundamentals
    code_of = pd.Index(b.symbols)
    fcode = code_of.get_indexer(f["ticker"].astype(object))
    fday = _days(f["as_of"])
    ok = (fcode >= 0) & pd.notna(f["as_of"]).to_numpy()
    cols = {}
    for name in ("pe_ratio", "eps", "market_cap", "dividend_yield"):
        if name in f.columns:
            cols[name] = pd.to_numeric(f[name], errors="coerce").to_numpy(dtype=np.float64)[ok]
        else:
            cols[name] = np.full(int(ok.sum()), np.nan)
    fkey = _day_key(fcode[ok], fday[ok])
    order = np.argsort(fkey, kind="stable")
    fkey = fkey[order]
    cols = {k: v[order] for k, v in cols.items()}
    bkey = _day_key(b.codes, b.dates.astype("datetime64[D]").astype(np.int64))
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
        "earnings_yield": _safe_div(eps, b.close),
        "log_market_cap": log_mc,
        "dividend_yield": np.where(np.isfinite(dy), dy, np.nan),
    }


def _map_sentiment(b: _Bars, sentiment: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray] | None:
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
    sday = _days(s["date"])
    score = pd.to_numeric(s["score"], errors="coerce").to_numpy(dtype=np.float64)
    if "count" in s.columns:
        count = pd.to_numeric(s["count"], errors="coerce").fillna(0).to_numpy(dtype=np.float64)
    else:
        count = np.ones(len(s))
    ok = (scode >= 0) & np.isfinite(score) & pd.notna(s["date"]).to_numpy()
    scode, sday, score, count = scode[ok], sday[ok], score[ok], count[ok]
    bday = b.dates.astype("datetime64[D]").astype(np.int64)
    bkey = _day_key(b.codes, bday)
    skey = _day_key(scode, sday)
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


def _map_social(b: _Bars, social: pd.DataFrame | None) -> np.ndarray | None:
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
    sday = _days(social["date"])
    values = np.stack([pd.to_numeric(social[c], errors="coerce").fillna(0).to_numpy(dtype=np.float64)
                       for c in ("score_sum", "count", "bullish", "bearish")])
    ok = (scode >= 0) & pd.notna(social["date"]).to_numpy()
    scode, sday, values = scode[ok], sday[ok], values[:, ok]
    bday = b.dates.astype("datetime64[D]").astype(np.int64)
    bkey = _day_key(b.codes, bday)
    j = np.searchsorted(bkey, _day_key(scode, sday), side="left")
    jc = np.minimum(j, b.n - 1)
    valid = (j < b.n) & (b.codes[jc] == scode)
    first_row = b.bounds[:-1][np.searchsorted(b.bounds[:-1], jc, side="right") - 1]
    valid &= (jc != first_row) | (bday[jc] == sday)
    for k in range(4):
        out[k] = np.bincount(jc[valid], weights=values[k, valid], minlength=b.n)
    return out


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
    b = _prepare_bars(bars)
    tm["prepare"] = time.perf_counter() - t_start
    out = _compute(b, spec, market_returns, fundamentals, sentiment, np.dtype(dtype), tm, social)
    tm["total"] = time.perf_counter() - t_start
    if timings is not None:
        timings.update(tm)
    return out


def _compute(
    b: _Bars,
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
    market_level = _market_index(b, date_codes, uniq_dates, market_returns)

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

    fund = _join_fundamentals(b, fundamentals)
    for name in FEATURE_GROUPS["fundamentals"]:
        out[:, ci[name]] = np.nan if fund is None else fund[name]
    news = _map_sentiment(b, sentiment)
    del fund
    tm["joins"] = time.perf_counter() - t0

    # ---- per ticker --------------------------------------------------------------------
    t1 = time.perf_counter()
    t_talib = 0.0
    perf = time.perf_counter
    sqrt_ann = math.sqrt(spec.annualization)
    m_tag, b_tag = spec._macd_tag, spec._bb_tag
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
        _social_columns(b, spec, _map_social(b, social), out, ci)
        tm["social"] = time.perf_counter() - t4

    t2 = time.perf_counter()
    frame = pd.DataFrame(out, columns=columns, copy=False)
    frame.insert(0, "date", b.dates)
    frame.insert(0, "ticker", b.ticker_column())
    tm["assemble"] = time.perf_counter() - t2
    return frame


def _social_columns(b: _Bars, spec: FeatureSpec, daily: np.ndarray | None, out: np.ndarray,
                    ci: dict[str, int]) -> None:
    """The ``social_*`` columns from per-bar post sums (``_map_social``), per ticker over its own bars.

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
    b = _prepare_bars(bars)
    rows = _lookback_rows(b, since, lookback)
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


def _lookback_rows(b: _Bars, since: Any, lookback: int) -> np.ndarray:
    since8 = _to_datetime64([since])[0].astype(np.int64)
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
    b = _prepare_bars(bars)
    b = b.take(_lookback_rows(b, since, spec.max_lookback()))
    tm["prepare"] = time.perf_counter() - t_start
    frame = _compute(b, spec, market_returns, fundamentals, sentiment, np.dtype(dtype), tm, social)
    since64 = _to_datetime64([since])[0]
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
