"""Qlib's Alpha158 feature family from daily OHLCV bars, vectorized over a whole sorted panel.

No Django and no pandas here (numpy and scipy only), so it runs in a notebook, a worker or a
benchmark alike, on the sorted arrays ``features.engine`` prepares.

Inputs
------
1-D float arrays of equal length n, sorted by (ticker, date): ADJUSTED ``open``, ``high``, ``low``,
``close`` (``close`` is adj_close; adjusted open/high/low = value * adj_close / close, as in
``features.engine``), raw ``volume`` (NaN counts as 0), and ``bounds`` (int64: ticker k occupies
rows ``bounds[k]:bounds[k + 1]``). Below, o/h/l/c/v are those values at the row's bar, d is a window
length, ``Ref(x, d)`` the value d bars earlier of the same ticker, and every window is the trailing
window of the ticker's own bars (trading days) ending at the row.

Definitions (Qlib ``Alpha158DL.get_feature_config``, columns ``a158_<name>`` / ``a158_<name>_<d>``)
-----------------------------------------------------------------------------------------------
K-bar:   kmid (c-o)/o; klen (h-l)/o; kmid2 (c-o)/(h-l+1e-12); kup (h-max(o,c))/o;
         kup2 (h-max(o,c))/(h-l+1e-12); klow (min(o,c)-l)/o; klow2 (min(o,c)-l)/(h-l+1e-12);
         ksft (2c-h-l)/o; ksft2 (2c-h-l)/(h-l+1e-12)
Price:   open0 o/c; high0 h/c; low0 l/c. Qlib's vwap0 is OMITTED: end-of-day bars carry no VWAP.
Rolling, for each window d, in this order (operator-major: every window of roc, then of ma, ...):
  roc   Ref(c,d)/c                      ma    Mean(c,d)/c              std   Std(c,d)/c
  beta  Slope(c,d)/c                    rsqr  Rsquare(c,d)             resi  Resi(c,d)/c
  max   Max(h,d)/c                      min   Min(l,d)/c
  qtlu  Quantile(c,d,0.8)/c             qtld  Quantile(c,d,0.2)/c
  rank  Rank(c,d)                       rsv   (c-Min(l,d))/(Max(h,d)-Min(l,d)+1e-12)
  imax  IdxMax(h,d)/d                   imin  IdxMin(l,d)/d            imxd  (IdxMax(h,d)-IdxMin(l,d))/d
  corr  Corr(c, log(v+1), d)            cord  Corr(c/Ref(c,1), log(v/Ref(v,1)+1), d)
  cntp  Mean(c>Ref(c,1), d)             cntn  Mean(c<Ref(c,1), d)      cntd  cntp - cntn
  sump  Sum(max(c-Ref(c,1),0),d)/(Sum(|c-Ref(c,1)|,d)+1e-12)
  sumn  Sum(max(Ref(c,1)-c,0),d)/(Sum(|c-Ref(c,1)|,d)+1e-12)            sumd  sump - sumn
  vma   Mean(v,d)/(v+1e-12)             vstd  Std(v,d)/(v+1e-12)
  wvma  Std(|c/Ref(c,1)-1|*v,d)/(Mean(|c/Ref(c,1)-1|*v,d)+1e-12)
  vsump Sum(max(v-Ref(v,1),0),d)/(Sum(|v-Ref(v,1)|,d)+1e-12)
  vsumn Sum(max(Ref(v,1)-v,0),d)/(Sum(|v-Ref(v,1)|,d)+1e-12)            vsumd vsump - vsumn
where Std is the sample standard deviation (ddof=1); Slope, Rsquare and Resi are the OLS fit of
the window's values on their positions 0..d-1 (Resi: residual of the last point); Quantile
interpolates linearly between order statistics (pandas ``rolling.quantile``); Rank is the
percentile rank of the current value inside its window with ties averaged (pandas
``rolling.rank(pct=True)``); IdxMax/IdxMin are the 1-based positions of the first maximum/minimum
counted from the window's start (Qlib: ``argmax() + 1``).

Conventions
-----------
* Windows never cross tickers. A window of d needs d bars of the ticker; operators that read
  ``Ref(., 1)`` (cord, cnt*, sum*, wvma, vsum*) need d one-bar changes, i.e. d + 1 bars, and roc
  needs d + 1 bars too. Rows without their bars are NaN.
* Undefined values are NaN, never inf: a division by zero, a zero variance in a correlation or in
  rsqr, a window containing a non-finite price or an undefined change (e.g. log(v/Ref(v,1)+1)
  after a zero-volume bar). The "+1e-12" denominators are kept as Qlib writes them (vma on a
  zero-volume bar is Mean(v,d)/1e-12, large but finite). std/vstd/wvma of a constant window are 0.
* No look-ahead, bounded lookback: the value of a row depends only on the rows of its ticker inside
  its window, so it is the same (to 1e-9; in practice bit for bit) whether the history is truncated
  after the row or starts later, as long as the row keeps its window. ``alpha158_lookback()`` =
  max(windows) + 1 bars ending at a date are enough (an incremental run passes that many bars of
  each ticker before the first new date).
* Output dtype: float64 keeps the 1e-9 guarantees; float32 (rounding ~6e-8 relative) halves the
  memory of a full-universe build. Values beyond the float32 range become NaN, not inf.

Differences from Qlib, on purpose: Qlib's rolling operators use ``min_periods=1`` (partial windows
at the start of a history); here those rows are NaN. Qlib NaNs rsqr and corr where the rolling std
is within an absolute 2e-5 of 0 (scale-dependent); here only an exactly constant window is
undefined.

Performance: the panel is processed in row chunks (each with the ``max(windows)`` rows before it),
so temporaries stay in cache and memory stays bounded; no loop over tickers. Rolling sums use the
power-of-two block decomposition of ``features.windows.rolling_sum`` (bit-identical to it, the
blocks built once for all windows). Sums of squares and cross products of close and log volume are
taken from deviations from the current row (one nested pass over the lags serves every window and
also yields the rank), which avoids the cancellation of sum(x^2) - sum(x)^2/d. Regression slopes
are a fixed-weight correlation (no prefix sums). Max/min and their positions come from one sort per
chunk plus a running max filter on unique integer keys; quantiles from sorting each window.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from features.windows import window_var as _window_var

__all__ = ["ALPHA158_WINDOWS", "alpha158_columns", "alpha158_lookback", "compute_alpha158"]

ALPHA158_WINDOWS: tuple[int, ...] = (5, 10, 20, 30, 60)

_PREFIX = "a158_"
_KBAR = ("kmid", "klen", "kmid2", "kup", "kup2", "klow", "klow2", "ksft", "ksft2")
_PRICE = ("open0", "high0", "low0")
_ROLLING = (
    "roc", "ma", "std", "beta", "rsqr", "resi", "max", "min", "qtlu", "qtld", "rank", "rsv",
    "imax", "imin", "imxd", "corr", "cord", "cntp", "cntn", "cntd", "sump", "sumn", "sumd",
    "vma", "vstd", "wvma", "vsump", "vsumn", "vsumd",
)  # fmt: skip
# Operators reading Ref(., 1) or Ref(., d): a window of d needs d + 1 bars.
_NEEDS_PREVIOUS_BAR = frozenset(
    {"roc", "cord", "cntp", "cntn", "cntd", "sump", "sumn", "sumd", "wvma", "vsump", "vsumn", "vsumd"}
)
_EPS = 1e-12

# Series summed over every window, stacked in this order (one sum per series and window).
_SUMMED = (
    "c",  # close: ma
    "v", "v2",  # volume: vma, vstd
    # cord: r = c/Ref(c,1) - 1 (a correlation ignores the shift; r is better conditioned than c/Ref(c,1))
    # and dlv = log(v/Ref(v,1) + 1)
    "r", "r2", "dlv", "dlv2", "r_dlv",
    "up", "down", "gain", "loss",  # c vs Ref(c,1): cnt*, sum*
    "wv", "wv2",  # |r| * v: wvma
    "vgain", "vloss",  # v vs Ref(v,1): vsum*
)  # fmt: skip

# Rows per chunk: large enough to amortize the per-call overhead of ~2,000 numpy calls a chunk,
# small enough for the 16 stacked series and their power-of-two blocks to stay near the cache.
_CHUNK_ROWS = 16_384
# Rows of window matrices sorted at a time for the quantiles (a (rows, d) float64 buffer).
_SORT_ROWS = 4_096


def _check_windows(windows: Sequence[int]) -> tuple[int, ...]:
    wins = tuple(int(w) for w in windows)
    if not wins:
        raise ValueError("windows is empty")
    if any(w < 2 for w in wins):
        raise ValueError(f"every window must be >= 2 bars, got {wins}")
    if len(set(wins)) != len(wins):
        raise ValueError(f"windows has duplicates: {wins}")
    return wins


def alpha158_columns(windows: Sequence[int] = ALPHA158_WINDOWS) -> list[str]:
    """Ordered column names: k-bar, price, then each rolling operator for every window."""
    wins = _check_windows(windows)
    return [
        *(_PREFIX + k for k in _KBAR),
        *(_PREFIX + p for p in _PRICE),
        *(f"{_PREFIX}{op}_{d}" for op in _ROLLING for d in wins),
    ]


def alpha158_lookback(windows: Sequence[int] = ALPHA158_WINDOWS) -> int:
    """Bars of a ticker, up to and including a date, that every feature at that date needs:
    max(windows) + 1 (the longest window plus the Ref(., 1) bar before it)."""
    return max(_check_windows(windows)) + 1


def compute_alpha158(
    *,
    open: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    bounds: np.ndarray,
    windows: Sequence[int] = ALPHA158_WINDOWS,
    out: np.ndarray | None = None,
    dtype: Any = np.float64,
) -> np.ndarray:
    """Alpha158 features of every row, columns in ``alpha158_columns(windows)`` order.

    Arrays are 1-D of length n, sorted by (ticker, date), adjusted prices (``close`` = adj_close),
    raw volume (NaN = 0); ``bounds`` holds the row offsets of the tickers (``bounds[0] == 0``,
    ``bounds[-1] == n``). Returns a new (n, n_columns) Fortran-ordered array of ``dtype``, or fills
    and returns ``out`` (any (n, n_columns) float array, e.g. a column slice of a larger block; its
    dtype wins over ``dtype``; column-contiguous layouts are the fast ones). float64 keeps the
    1e-9 guarantees; float32 halves the memory of a full-universe build.
    """
    return _compute(open, high, low, close, volume, bounds, windows, out, dtype, None)


# --------------------------------------------------------------------------------------------
# Implementation
# --------------------------------------------------------------------------------------------


def _compute(
    open_: Any,
    high: Any,
    low: Any,
    close: Any,
    volume: Any,
    bounds: Any,
    windows: Sequence[int],
    out: np.ndarray | None,
    dtype: Any,
    timings: dict[str, float] | None,
) -> np.ndarray:
    """``compute_alpha158``; ``timings`` (for the benchmark) collects seconds per operator group."""
    wins = _check_windows(windows)
    columns = alpha158_columns(wins)
    series = [np.ascontiguousarray(x, dtype=np.float64) for x in (open_, high, low, close, volume)]
    n = len(series[3])
    if any(x.ndim != 1 or len(x) != n for x in series):
        raise ValueError("open/high/low/close/volume must be 1-D arrays of equal length")
    bounds = np.asarray(bounds, dtype=np.int64)
    if (
        bounds.ndim != 1
        or len(bounds) < 1
        or bounds[0] != 0
        or bounds[-1] != n
        or np.any(np.diff(bounds) < 0)
    ):
        raise ValueError("bounds must be non-decreasing row offsets from 0 to n")
    if out is None:
        out = np.empty((n, len(columns)), dtype=dtype, order="F")
    elif out.shape != (n, len(columns)):
        raise ValueError(f"out has shape {out.shape}, expected {(n, len(columns))}")
    col = {name: j for j, name in enumerate(columns)}
    halo = max(wins)  # rows before a chunk that its windows (and Ref(c, d)) read
    clock = _Clock(timings)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for a in range(0, n, _CHUNK_ROWS):
            b = min(n, a + _CHUNK_ROWS)
            t0 = clock.start()
            if a >= halo:
                chunk = [x[a - halo : b] for x in series]
            else:  # first rows of the panel: pad with NaN so every chunk has the same layout
                pad = np.full(halo - a, np.nan)
                chunk = [np.concatenate([pad, x[:b]]) for x in series]
            rows = np.arange(a, b)
            pos = rows - bounds[np.searchsorted(bounds, rows, side="right") - 1]
            clock.add("prepare", t0)
            _fill_chunk(out[a:b], col, chunk, pos, wins, halo, clock)
    return out


class _Clock:
    """Seconds per operator group, summed over chunks (a no-op without a timings dict).

    Writes into the output are timed apart ("write") and left out of the group they happen in.
    """

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.writes = 0.0

    def start(self) -> tuple[float, float]:
        return time.perf_counter(), self.writes

    def add(self, key: str, started: tuple[float, float]) -> None:
        if self.timings is not None:
            t0, writes0 = started
            spent = time.perf_counter() - t0 - (self.writes - writes0)
            self.timings[key] = self.timings.get(key, 0.0) + spent

    def add_write(self, t0: float) -> None:
        if self.timings is not None:
            spent = time.perf_counter() - t0
            self.writes += spent
            self.timings["write"] = self.timings.get("write", 0.0) + spent


def _fill_chunk(
    out: np.ndarray,
    col: dict[str, int],
    chunk: list[np.ndarray],
    pos: np.ndarray,
    wins: tuple[int, ...],
    halo: int,
    clock: _Clock,
) -> None:
    """Fill ``out`` (the chunk's output rows) from ``chunk`` = halo rows + output rows.

    ``pos`` is each output row's position within its ticker. Chunk-local row j (j >= halo) is
    output row j - halo; a window of d bars ending there covers local rows j-d+1..j, which the halo
    always holds. Rows whose window reaches before their ticker's first bar are set NaN afterwards.
    """
    t0 = clock.start()
    o, h, lo, c, v = chunk
    v = np.where(np.isnan(v), 0.0, v)
    m = len(c)
    first = halo  # local index of the first output row
    oo, ho, lwo, co, vo = o[first:], h[first:], lo[first:], c[first:], v[first:]

    # Rows lacking bars: pos < need - 1 for a need of `need` bars (pos counts the earlier bars).
    young = np.flatnonzero(pos < halo + 1)
    young_pos = pos[young]
    # Windows holding a non-finite price are undefined (sums would propagate NaN, but sorts and
    # max filters would not): remember the last bad row at or before each row.
    finite = np.isfinite(h) & np.isfinite(lo) & np.isfinite(c)
    last_bad = None
    if not finite.all():
        last_bad = np.maximum.accumulate(np.where(finite, -1, np.arange(m)))[first:]
    local_rows = np.arange(first, m)
    nan_rows: dict[int, list[np.ndarray]] = {}

    def rows_without(need: int) -> list[np.ndarray]:
        if need not in nan_rows:
            sel = [young[young_pos < need - 1]]
            if last_bad is not None:
                sel.append(np.flatnonzero(last_bad > local_rows - need))
            nan_rows[need] = sel
        return nan_rows[need]

    clock.add("prepare", t0)

    def emit(name: str, values: np.ndarray, need: int = 1) -> None:
        t = time.perf_counter() if clock.timings is not None else 0.0
        target = out[:, col[name]]
        target[...] = values
        for sel in rows_without(need):
            target[sel] = np.nan
        inf = np.isinf(target)  # division by zero (or float32 overflow): undefined
        if inf.any():
            target[inf] = np.nan
        clock.add_write(t)

    # ---- k-bar and price ratios ------------------------------------------------------------
    t0 = clock.start()
    span = ho - lwo + _EPS
    upper = ho - np.maximum(oo, co)
    lower = np.minimum(oo, co) - lwo
    body = co - oo
    shift = 2.0 * co - ho - lwo
    emit(_PREFIX + "kmid", body / oo)
    emit(_PREFIX + "klen", (ho - lwo) / oo)
    emit(_PREFIX + "kmid2", body / span)
    emit(_PREFIX + "kup", upper / oo)
    emit(_PREFIX + "kup2", upper / span)
    emit(_PREFIX + "klow", lower / oo)
    emit(_PREFIX + "klow2", lower / span)
    emit(_PREFIX + "ksft", shift / oo)
    emit(_PREFIX + "ksft2", shift / span)
    emit(_PREFIX + "open0", oo / co)
    emit(_PREFIX + "high0", ho / co)
    emit(_PREFIX + "low0", lwo / co)
    clock.add("kbar", t0)

    def name(op: str, d: int) -> str:
        return f"{_PREFIX}{op}_{d}"

    def need(op: str, d: int) -> int:
        return d + 1 if op in _NEEDS_PREVIOUS_BAR else d

    # ---- summed series -----------------------------------------------------------------------
    t0 = clock.start()
    stacked = np.empty((len(_SUMMED), m))
    s = dict(zip(_SUMMED, stacked, strict=True))
    s["c"][:] = c
    s["v"][:] = v
    np.multiply(v, v, out=s["v2"])
    # one-bar changes; local row 0 has no previous bar (no valid window reaches it)
    prev_c, prev_v = c[:-1], v[:-1]
    dc = c[1:] - prev_c
    dv = v[1:] - prev_v
    r = c[1:] / prev_c - 1.0
    r[~np.isfinite(r)] = np.nan
    dlv = np.log1p(v[1:] / prev_v)  # after a zero-volume bar: inf or NaN -> undefined
    dlv[~np.isfinite(dlv)] = np.nan
    stacked[_SUMMED.index("r") :, 0] = np.nan
    s["r"][1:] = r
    np.multiply(r, r, out=s["r2"][1:])
    s["dlv"][1:] = dlv
    np.multiply(dlv, dlv, out=s["dlv2"][1:])
    np.multiply(r, dlv, out=s["r_dlv"][1:])
    np.greater(dc, 0.0, out=s["up"][1:], casting="unsafe")
    np.less(dc, 0.0, out=s["down"][1:], casting="unsafe")
    np.maximum(dc, 0.0, out=s["gain"][1:])
    np.maximum(-dc, 0.0, out=s["loss"][1:])
    np.multiply(np.abs(r), v[1:], out=s["wv"][1:])
    np.multiply(s["wv"][1:], s["wv"][1:], out=s["wv2"][1:])
    np.maximum(dv, 0.0, out=s["vgain"][1:])
    np.maximum(-dv, 0.0, out=s["vloss"][1:])
    blocks = _PowerOfTwoSums(stacked, max(wins))
    clock.add("sums", t0)

    # ---- once for all windows ------------------------------------------------------------------
    t0 = clock.start()
    lags = _lag_sums(c, np.log1p(v), first, wins)
    clock.add("rank_dev", t0)
    t0 = clock.start()
    argmax_h = _first_extreme_positions(h, first, wins, largest=True)
    argmin_l = _first_extreme_positions(lo, first, wins, largest=False)
    clock.add("max_min", t0)

    for d in wins:
        t0 = clock.start()
        sums = dict(zip(_SUMMED, blocks.trailing(d, first), strict=True))
        clock.add("sums", t0)

        # -- close: roc, ma, std, regression
        t0 = clock.start()
        lag = lags[d]
        emit(name("roc", d), c[first - d : m - d] / co, need("roc", d))
        emit(name("ma", d), (sums["c"] / d) / co, d)
        # sum of squared deviations from the window mean, from deviations from the current close
        ss_c = lag.dev_sq - lag.dev * lag.dev / d
        np.maximum(ss_c, 0.0, out=ss_c)
        emit(name("std", d), np.sqrt(ss_c / (d - 1)) / co, d)
        clock.add("ma_std", t0)

        t0 = clock.start()
        # OLS on positions 0..d-1: slope = sum(t_c * c) / sum(t_c^2) with centered positions t_c,
        # a fixed-weight dot product per window (no prefix sums: exact under truncation).
        centered = np.arange(d) - (d - 1) / 2.0
        cross = ndimage.correlate1d(c[first - d + 1 :], centered, origin=(d - 1) - d // 2)[d - 1 :]
        sxx = d * (d * d - 1) / 12.0
        slope = cross / sxx
        emit(name("beta", d), slope / co, d)
        ss_defined = np.where(ss_c > 0, ss_c, np.nan)  # constant window: R^2 undefined
        emit(name("rsqr", d), np.clip(cross * cross / (sxx * ss_defined), 0.0, 1.0), d)
        # c - (mean + slope * (d-1)/2), with c - mean = -dev/d (no cancellation of price levels)
        emit(name("resi", d), (-lag.dev / d - slope * ((d - 1) / 2.0)) / co, d)
        clock.add("regression", t0)

        # -- extremes of high/low and their positions
        t0 = clock.start()
        p_max, p_min = argmax_h[d], argmin_l[d]
        max_h, min_l = h[p_max], lo[p_min]
        emit(name("max", d), max_h / co, d)
        emit(name("min", d), min_l / co, d)
        emit(name("rsv", d), (co - min_l) / (max_h - min_l + _EPS), d)
        # 1-based position from the window start (local row j - d + 1)
        idx_max = p_max - local_rows + d
        idx_min = p_min - local_rows + d
        emit(name("imax", d), idx_max / d, d)
        emit(name("imin", d), idx_min / d, d)
        emit(name("imxd", d), (idx_max - idx_min) / d, d)
        clock.add("max_min", t0)

        t0 = clock.start()
        q_up, q_down = _window_quantiles(c, first, d, (0.8, 0.2))
        emit(name("qtlu", d), q_up / co, d)
        emit(name("qtld", d), q_down / co, d)
        clock.add("quantile", t0)
        t0 = clock.start()
        emit(name("rank", d), lag.rank_pct, d)
        clock.add("rank_dev", t0)

        # -- correlations
        t0 = clock.start()
        # Corr(c, log(v+1)) from deviations from the current row (well conditioned)
        ss_lv = lag.lv_dev_sq - lag.lv_dev * lag.lv_dev / d
        cov = lag.cross - lag.dev * lag.lv_dev / d
        den = np.sqrt(ss_c * ss_lv)
        den[~(den > 0)] = np.nan  # a constant window (or rounding below 0): undefined
        emit(name("corr", d), np.clip(cov / den, -1.0, 1.0), d)
        corr_d = _window_corr(sums["r"], sums["dlv"], sums["r2"], sums["dlv2"], sums["r_dlv"], d)
        emit(name("cord", d), corr_d, need("cord", d))
        clock.add("corr", t0)

        # -- counts and sums of moves
        t0 = clock.start()
        nb = need("cntp", d)
        emit(name("cntp", d), sums["up"] / d, nb)
        emit(name("cntn", d), sums["down"] / d, nb)
        emit(name("cntd", d), (sums["up"] - sums["down"]) / d, nb)
        moved = sums["gain"] + sums["loss"] + _EPS  # Sum(|c - Ref(c, 1)|) + 1e-12
        emit(name("sump", d), sums["gain"] / moved, nb)
        emit(name("sumn", d), sums["loss"] / moved, nb)
        emit(name("sumd", d), (sums["gain"] - sums["loss"]) / moved, nb)
        vmoved = sums["vgain"] + sums["vloss"] + _EPS
        emit(name("vsump", d), sums["vgain"] / vmoved, nb)
        emit(name("vsumn", d), sums["vloss"] / vmoved, nb)
        emit(name("vsumd", d), (sums["vgain"] - sums["vloss"]) / vmoved, nb)
        clock.add("cnt_sum", t0)

        # -- volume
        t0 = clock.start()
        v_den = vo + _EPS
        emit(name("vma", d), (sums["v"] / d) / v_den, d)
        emit(name("vstd", d), np.sqrt(_window_var(sums["v"], sums["v2"], float(d))) / v_den, d)
        wv_sd = np.sqrt(_window_var(sums["wv"], sums["wv2"], float(d)))
        emit(name("wvma", d), wv_sd / (sums["wv"] / d + _EPS), need("wvma", d))
        clock.add("volume", t0)


class _PowerOfTwoSums:
    """Trailing-window sums for several windows from one set of power-of-two blocks.

    Same arithmetic as ``features.windows.rolling_sum``: level k holds the sums of 2^k consecutive
    values built by pairwise doubling, and a window of w is the left-to-right sum of the blocks of
    w's binary digits (largest first) at fixed offsets from the window's start. The levels do not
    depend on w, so building them once for the largest window serves every window, bit for bit.
    """

    def __init__(self, x: np.ndarray, max_window: int) -> None:
        self.n = x.shape[-1]
        self.levels = [x]
        for k in range(max_window.bit_length() - 1):
            q = self.levels[-1]
            h = 1 << k
            self.levels.append(q[..., :-h] + q[..., h:])

    def trailing(self, w: int, first: int) -> np.ndarray:
        """Sums over the w values ending at positions first..n-1 (requires first >= w - 1)."""
        m = self.n - first
        off = first - w + 1
        res = None
        for k in range(w.bit_length() - 1, -1, -1):
            if (w >> k) & 1:
                seg = self.levels[k][..., off : off + m]
                res = seg if res is None else res + seg
                off += 1 << k
        assert res is not None
        return res


def _window_corr(
    sx: np.ndarray, sy: np.ndarray, sxx: np.ndarray, syy: np.ndarray, sxy: np.ndarray, d: int
) -> np.ndarray:
    """Pearson correlation over d values from window sums; NaN when either variance is 0."""
    var_x = _window_var(sx, sxx, float(d))
    var_y = _window_var(sy, syy, float(d))
    cov = (sxy - sx * sy / d) / (d - 1)
    den = np.sqrt(var_x * var_y)
    den[den <= 0] = np.nan
    return np.clip(cov / den, -1.0, 1.0)


class _LagSums(NamedTuple):
    """Sums over the earlier rows j-k (k = 1..d-1) of the window of d rows ending at row j."""

    rank_pct: np.ndarray  # percentile rank of c[j] in the window, ties averaged
    dev: np.ndarray  # sum of (c[j-k] - c[j])
    dev_sq: np.ndarray  # sum of (c[j-k] - c[j])^2
    lv_dev: np.ndarray  # sum of (lv[j-k] - lv[j])
    lv_dev_sq: np.ndarray  # sum of (lv[j-k] - lv[j])^2
    cross: np.ndarray  # sum of (c[j-k] - c[j]) * (lv[j-k] - lv[j])


def _lag_sums(c: np.ndarray, lv: np.ndarray, first: int, wins: tuple[int, ...]) -> dict[int, _LagSums]:
    """One pass over the lags k = 1..max(wins)-1 serves every window (windows are nested).

    Rank: the average rank of c[j] among d values is (d + 1)/2 + S/2 with S = sum of
    sign(c[j] - c[j-k]). Deviations from the current row give the window's sums of squares and
    cross products without the cancellation of sum(x^2) - sum(x)^2/d when the spread is small
    against the level (prices; log volumes: a few 1e-4 apart at 13 lost 1e-7 that way), and a
    constant window gives exactly 0. Each value is a fixed sum over the window: truncation-invariant.
    """
    m = len(c)
    count = m - first
    c_now, lv_now = c[first:], lv[first:]
    sums = [np.zeros(count) for _ in range(6)]
    sign_sum, dev, dev_sq, lv_dev, lv_dev_sq, cross = sums
    e = np.empty(count)
    e_lv = np.empty(count)
    tmp = np.empty(count)
    wanted = set(wins)
    res = {}
    for k in range(1, max(wins)):
        np.subtract(c[first - k : m - k], c_now, out=e)
        np.subtract(lv[first - k : m - k], lv_now, out=e_lv)
        np.sign(e, out=tmp)
        sign_sum += tmp
        dev += e
        lv_dev += e_lv
        np.multiply(e, e, out=tmp)
        dev_sq += tmp
        np.multiply(e_lv, e_lv, out=tmp)
        lv_dev_sq += tmp
        np.multiply(e, e_lv, out=tmp)
        cross += tmp
        d = k + 1
        if d in wanted:
            # the sum of sign(c[j] - c[j-k]) is -sign_sum
            rank = (d + 1 - sign_sum) / (2.0 * d)
            res[d] = _LagSums(rank, *(x.copy() for x in sums[1:]))
    return res


def _first_extreme_positions(
    x: np.ndarray, first: int, wins: tuple[int, ...], *, largest: bool
) -> dict[int, np.ndarray]:
    """Local row of the first (earliest) maximum, or minimum, of x in each trailing window.

    Each value gets a unique integer key: its dense rank within the chunk times m, plus its row
    for the minimum (the earlier of equal values has the smaller key) or m-1 minus its row for the
    maximum (the earlier has the larger key). A running max (min) filter of the keys then names the
    row directly, with ties going to the earliest row as in Qlib's argmax() + 1. The answer depends
    only on the values inside the window, not on the chunk.
    """
    m = len(x)
    order = np.argsort(x)  # NaN last; ties are settled by the row part of the key
    xs = x[order]
    dense = np.empty(m, dtype=np.int64)
    dense[order] = np.concatenate([[0], np.cumsum(xs[1:] != xs[:-1])])
    rows = np.arange(m, dtype=np.int64)
    key = dense * m + ((m - 1) - rows if largest else rows)
    running = ndimage.maximum_filter1d if largest else ndimage.minimum_filter1d
    res = {}
    for d in wins:
        best = running(key[first - d + 1 :], d, origin=(d - 1) - d // 2)[d - 1 :]
        row = best % m
        res[d] = (m - 1) - row if largest else row
    return res


def _window_quantiles(c: np.ndarray, first: int, d: int, qs: tuple[float, ...]) -> list[np.ndarray]:
    """Quantiles of c over the trailing windows ending at rows first.., linear interpolation
    between order statistics as pandas ``rolling.quantile`` (idx = q * (d - 1))."""
    windows = sliding_window_view(c[first - d + 1 :], d)
    count = windows.shape[0]
    res = [np.empty(count) for _ in qs]
    plan = []
    for q in qs:
        at = q * (d - 1)
        below = int(at)
        plan.append((below, at - below))
    buf = np.empty((min(count, _SORT_ROWS), d))
    for a in range(0, count, _SORT_ROWS):
        b = min(count, a + _SORT_ROWS)
        block = buf[: b - a]
        np.copyto(block, windows[a:b])
        block.sort(axis=1)
        for (below, frac), target in zip(plan, res, strict=True):
            low = block[:, below]
            if frac == 0.0:
                target[a:b] = low
            else:
                target[a:b] = low + (block[:, below + 1] - low) * frac
    return res
