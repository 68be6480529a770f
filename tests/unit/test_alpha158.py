"""Alpha158 features: equal to a plain pandas rolling reference, no look-ahead, chunking-invariant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from features import alpha158 as A
from features.windows import rolling_sum as _rolling_sum

WINDOWS = A.ALPHA158_WINDOWS
TOL = 1e-9

SAMPLE_PRICES = Path(__file__).resolve().parents[2] / "sample_data" / "prices" / "sp500_sample_2013-05-21_2018-05-18.csv.gz"


# ------------------------------------------------------------------------------ data


def make_panel(lengths: list[int], seed: int = 0, start_offsets: list[int] | None = None) -> pd.DataFrame:
    """Adjusted daily bars ``ticker,date,open,high,low,close,volume`` sorted by (ticker, date).

    Prices are rounded to cents (ties in highs, lows and closes), ticker 0 has a flat stretch of
    70 bars (o = h = l = c, longer than the longest window) and zero-volume bars.
    """
    rng = np.random.default_rng(seed)
    start_offsets = start_offsets or [int(rng.integers(0, 40)) for _ in lengths]
    calendar = pd.bdate_range(
        "2020-01-01", periods=max(o + n for o, n in zip(start_offsets, lengths, strict=True))
    )
    parts = []
    for k, (n, off) in enumerate(zip(lengths, start_offsets, strict=True)):
        level = rng.uniform(15, 150)
        close = np.round(level * np.exp(np.cumsum(rng.normal(0, 0.015, n))), 2)
        open_ = np.round(close * np.exp(rng.normal(0, 0.006, n)), 2)
        high = np.round(np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.008, n))), 2)
        low = np.round(np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.008, n))), 2)
        volume = np.round(rng.lognormal(13, 0.6, n))
        if k == 0 and n >= 110:
            flat = slice(20, 90)
            close[flat] = open_[flat] = high[flat] = low[flat] = close[19]
            volume[[5, 6, 40, 100]] = 0.0  # zero-volume bars (two in a row, one in the flat part)
        parts.append(
            pd.DataFrame(
                {
                    "ticker": f"T{k}",
                    "date": calendar[off : off + n],
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "volume": volume,
                }
            )
        )
    return pd.concat(parts, ignore_index=True).sort_values(["ticker", "date"], ignore_index=True)


def arrays(df: pd.DataFrame) -> dict[str, np.ndarray]:
    codes = pd.factorize(df["ticker"])[0]
    starts = np.flatnonzero(np.diff(codes)) + 1
    bounds = np.concatenate([[0], starts, [len(df)]]).astype(np.int64)
    out = {k: df[k].to_numpy(dtype=np.float64) for k in ("open", "high", "low", "close", "volume")}
    out["bounds"] = bounds
    return out


def compute(df: pd.DataFrame, **kw) -> pd.DataFrame:
    windows = kw.get("windows", WINDOWS)
    values = A.compute_alpha158(**arrays(df), **kw)
    return pd.DataFrame(values, columns=A.alpha158_columns(windows), index=df.index)


# ------------------------------------------------------------------------------ reference


def _per_window(x: pd.Series, d: int, fn, *others: pd.Series) -> pd.Series:
    """fn applied to the (rows, d) matrix of trailing windows (of x and of ``others``); NaN for the
    first d - 1 rows."""
    res = np.full(len(x), np.nan)
    if len(x) >= d:
        mats = [sliding_window_view(s.to_numpy(dtype=np.float64), d) for s in (x, *others)]
        with np.errstate(divide="ignore", invalid="ignore"):
            res[d - 1 :] = fn(*mats)
    return pd.Series(res, index=x.index)


def _deviations(w: np.ndarray) -> np.ndarray:
    return w - w.mean(axis=1, keepdims=True)


def _std(w: np.ndarray) -> np.ndarray:
    """Two-pass sample std, 0 for a constant window. (pandas' ``rolling().std()`` runs an online
    update that drifts: after a run of zero volumes it was 1.2e-8 off.)"""
    sd = np.sqrt((_deviations(w) ** 2).sum(axis=1) / (w.shape[1] - 1))
    return np.where(np.ptp(w, axis=1) == 0, 0.0, sd)


def _corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Two-pass Pearson correlation, NaN for a constant window. (pandas' ``rolling().corr`` drifts
    as well: on two-point windows it returned 1.00000004 and 0.99999 where the exact value is 1.)"""
    xd, yd = _deviations(x), _deviations(y)
    r = (xd * yd).sum(axis=1) / np.sqrt((xd * xd).sum(axis=1) * (yd * yd).sum(axis=1))
    return np.where((np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0), np.nan, r)


def _ols(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slope, R^2, residual of the last point) of each window regressed on 0..d-1."""
    d = w.shape[1]
    t = np.arange(d) - (d - 1) / 2.0
    yd = _deviations(w)
    slope = yd @ t / (t @ t)
    resid = yd - slope[:, None] * t
    ss = (yd * yd).sum(axis=1)
    r2 = np.where(np.ptp(w, axis=1) == 0, np.nan, 1.0 - (resid * resid).sum(axis=1) / ss)
    return slope, r2, resid[:, -1]


def reference_one(g: pd.DataFrame, windows: tuple[int, ...]) -> pd.DataFrame:
    """Qlib's Alpha158 expressions for one ticker, written with pandas rolling operations."""
    o, h, lo, c = g["open"], g["high"], g["low"], g["close"]
    v = g["volume"].fillna(0.0)
    eps = 1e-12
    res: dict[str, pd.Series] = {
        "kmid": (c - o) / o,
        "klen": (h - lo) / o,
        "kmid2": (c - o) / (h - lo + eps),
        "kup": (h - np.maximum(o, c)) / o,
        "kup2": (h - np.maximum(o, c)) / (h - lo + eps),
        "klow": (np.minimum(o, c) - lo) / o,
        "klow2": (np.minimum(o, c) - lo) / (h - lo + eps),
        "ksft": (2 * c - h - lo) / o,
        "ksft2": (2 * c - h - lo) / (h - lo + eps),
        "open0": o / c,
        "high0": h / c,
        "low0": lo / c,
    }
    prev_c, prev_v = c.shift(1), v.shift(1)
    dc, dv = c - prev_c, v - prev_v
    cord_x = (c / prev_c).replace([np.inf, -np.inf], np.nan)
    cord_y = np.log(v / prev_v + 1).replace([np.inf, -np.inf], np.nan)
    up = (c > prev_c).astype(float).where(prev_c.notna())
    down = (c < prev_c).astype(float).where(prev_c.notna())
    wv = (c / prev_c - 1).abs() * v
    log_v = np.log(v + 1)
    for d in windows:
        roll = c.rolling(d)
        fit = [_per_window(c, d, lambda w, i=i: _ols(w)[i]) for i in range(3)]
        hmax, lmin = h.rolling(d).max(), lo.rolling(d).min()
        idx_max = h.rolling(d).apply(lambda x: x.argmax() + 1, raw=True)
        idx_min = lo.rolling(d).apply(lambda x: x.argmin() + 1, raw=True)
        cntp, cntn = up.rolling(d).mean(), down.rolling(d).mean()
        gain, loss, moved = dc.clip(lower=0), (-dc).clip(lower=0), dc.abs()
        vgain, vloss, vmoved = dv.clip(lower=0), (-dv).clip(lower=0), dv.abs()
        res |= {
            f"roc_{d}": c.shift(d) / c,
            f"ma_{d}": roll.mean() / c,
            f"std_{d}": _per_window(c, d, _std) / c,
            f"beta_{d}": fit[0] / c,
            f"rsqr_{d}": fit[1],
            f"resi_{d}": fit[2] / c,
            f"max_{d}": hmax / c,
            f"min_{d}": lmin / c,
            f"qtlu_{d}": roll.quantile(0.8) / c,
            f"qtld_{d}": roll.quantile(0.2) / c,
            f"rank_{d}": roll.rank(pct=True),
            f"rsv_{d}": (c - lmin) / (hmax - lmin + eps),
            f"imax_{d}": idx_max / d,
            f"imin_{d}": idx_min / d,
            f"imxd_{d}": (idx_max - idx_min) / d,
            f"corr_{d}": _per_window(c, d, _corr, log_v),
            f"cord_{d}": _per_window(cord_x, d, _corr, cord_y),
            f"cntp_{d}": cntp,
            f"cntn_{d}": cntn,
            f"cntd_{d}": cntp - cntn,
            f"sump_{d}": gain.rolling(d).sum() / (moved.rolling(d).sum() + eps),
            f"sumn_{d}": loss.rolling(d).sum() / (moved.rolling(d).sum() + eps),
            f"sumd_{d}": (gain.rolling(d).sum() - loss.rolling(d).sum()) / (moved.rolling(d).sum() + eps),
            f"vma_{d}": v.rolling(d).mean() / (v + eps),
            f"vstd_{d}": _per_window(v, d, _std) / (v + eps),
            f"wvma_{d}": _per_window(wv, d, _std) / (wv.rolling(d).mean() + eps),
            f"vsump_{d}": vgain.rolling(d).sum() / (vmoved.rolling(d).sum() + eps),
            f"vsumn_{d}": vloss.rolling(d).sum() / (vmoved.rolling(d).sum() + eps),
            f"vsumd_{d}": (vgain.rolling(d).sum() - vloss.rolling(d).sum()) / (vmoved.rolling(d).sum() + eps),
        }
    frame = pd.DataFrame({"a158_" + k: s for k, s in res.items()}, index=g.index)
    return frame.replace([np.inf, -np.inf], np.nan)


def reference(df: pd.DataFrame, windows: tuple[int, ...] = WINDOWS) -> pd.DataFrame:
    parts = [reference_one(g, windows) for _, g in df.groupby("ticker", sort=False)]
    return pd.concat(parts)[A.alpha158_columns(windows)].loc[df.index]


def assert_same(ours: pd.DataFrame, ref: pd.DataFrame, tol: float = TOL) -> None:
    """Equal NaN pattern and |ours - ref| <= tol * max(1, |ref|), column by column."""
    assert list(ours.columns) == list(ref.columns)
    for name in ref.columns:
        a, b = ours[name].to_numpy(), ref[name].to_numpy()
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        bad = np.flatnonzero(nan_a != nan_b)
        assert bad.size == 0, (
            f"{name}: NaN pattern differs at rows {bad[:10]} (ours {a[bad[:3]]}, ref {b[bad[:3]]})"
        )
        ok = ~nan_a
        err = np.abs(a[ok] - b[ok]) / np.maximum(1.0, np.abs(b[ok]))
        worst = int(np.argmax(err)) if err.size else 0
        assert not err.size or err[worst] <= tol, (
            f"{name}: error {err[worst]:.3g} at {np.flatnonzero(ok)[worst]}"
        )


# ------------------------------------------------------------------------------ tests


def test_columns_and_lookback():
    cols = A.alpha158_columns()
    assert len(cols) == 9 + 3 + 29 * 5 == 157
    assert len(set(cols)) == len(cols)
    assert cols[:12] == [
        "a158_kmid", "a158_klen", "a158_kmid2", "a158_kup", "a158_kup2", "a158_klow", "a158_klow2",
        "a158_ksft", "a158_ksft2", "a158_open0", "a158_high0", "a158_low0",
    ]  # fmt: skip
    assert cols[12:17] == ["a158_roc_5", "a158_roc_10", "a158_roc_20", "a158_roc_30", "a158_roc_60"]
    assert cols[17] == "a158_ma_5" and cols[-1] == "a158_vsumd_60"
    assert A.alpha158_lookback() == 61
    assert A.alpha158_columns((3, 7))[12:15] == ["a158_roc_3", "a158_roc_7", "a158_ma_3"]
    assert A.alpha158_lookback((3, 7)) == 8
    with pytest.raises(ValueError):
        A.alpha158_columns((1, 5))
    with pytest.raises(ValueError):
        A.alpha158_columns((5, 5))


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    # ticker 0 (150 bars) has the flat stretch and zero volumes; ticker 2 is shorter than the
    # longest window, ticker 3 has 3 bars
    return make_panel([150, 140, 45, 3, 120], seed=1)


@pytest.fixture(scope="module")
def panel_features(panel) -> pd.DataFrame:
    return compute(panel)


def test_matches_pandas_reference(panel, panel_features):
    ref = reference(panel)
    assert_same(panel_features, ref)
    # the panel exercises what it is meant to: flat windows, undefined correlations, ties
    t0 = panel["ticker"] == "T0"
    assert np.isnan(panel_features.loc[t0, "a158_corr_60"]).sum() > 60
    assert (panel_features.loc[t0, "a158_std_60"] == 0).any()
    assert (panel_features["a158_vma_5"] > 1e12).any()  # Mean(v)/(0 + 1e-12) on zero-volume bars
    assert np.isfinite(panel_features.loc[panel["ticker"] == "T2", "a158_ma_30"]).sum() == 45 - 29


def test_custom_windows_match_reference(panel):
    windows = (2, 3, 7)
    assert_same(compute(panel, windows=windows), reference(panel, windows))


def test_warm_up_rows_are_nan(panel, panel_features):
    pos = panel.groupby("ticker").cumcount().to_numpy()
    f = panel_features
    for d in WINDOWS:
        for op in ("ma", "rank", "qtlu", "imax", "beta", "corr", "vma"):  # d bars
            assert np.isnan(f[f"a158_{op}_{d}"].to_numpy()[pos < d - 1]).all()
        for op in ("roc", "cord", "cntp", "sump", "wvma", "vsumd"):  # d + 1 bars
            assert np.isnan(f[f"a158_{op}_{d}"].to_numpy()[pos < d]).all()
    assert not np.isinf(f.to_numpy()).any()


def test_no_look_ahead_and_bounded_lookback():
    """Truncating the history after a date, or starting it later, leaves every value that keeps its
    window unchanged."""
    df = make_panel([400, 260, 90, 61, 330, 12], seed=7)
    full = compute(df)
    rng = np.random.default_rng(3)
    dates = np.sort(df["date"].unique())
    for cut in rng.choice(dates[20:], size=5, replace=False):
        part = df[df["date"] <= cut]
        assert_same(compute(part), full.loc[part.index])

    lookback = A.alpha158_lookback()
    pos = df.groupby("ticker").cumcount()
    for skip in (lookback, 100):
        later = df[pos >= skip]
        got = compute(later)
        has_window = (later.groupby("ticker").cumcount() >= lookback - 1).to_numpy()
        assert_same(got[has_window], full.loc[later.index][has_window])
        # in practice bit for bit
        np.testing.assert_array_equal(
            got[has_window].to_numpy(), full.loc[later.index][has_window].to_numpy()
        )


def test_chunking_does_not_change_values(monkeypatch, panel, panel_features):
    monkeypatch.setattr(A, "_CHUNK_ROWS", 37)
    monkeypatch.setattr(A, "_SORT_ROWS", 5)
    np.testing.assert_array_equal(compute(panel).to_numpy(), panel_features.to_numpy())


def test_block_sums_are_bit_identical_to_engine_rolling_sum():
    rng = np.random.default_rng(0)
    x = rng.normal(100, 5, size=(3, 500)) ** 2
    blocks = A._PowerOfTwoSums(x, 60)
    for w in (2, 5, 7, 10, 16, 20, 30, 33, 60):
        first = 70
        np.testing.assert_array_equal(blocks.trailing(w, first), _rolling_sum(x, w)[:, first:])


def test_out_layouts_and_dtype(panel, panel_features):
    arr = arrays(panel)
    expected = panel_features.to_numpy()
    n, k = expected.shape
    c_order = np.empty((n, k))
    A.compute_alpha158(**arr, out=c_order)
    np.testing.assert_array_equal(c_order, expected)
    block = np.full((n, k + 4), -1.0, order="F")
    res = A.compute_alpha158(**arr, out=block[:, 2 : 2 + k])
    assert np.shares_memory(res, block)
    np.testing.assert_array_equal(block[:, 2 : 2 + k], expected)
    assert (block[:, :2] == -1).all() and (block[:, -2:] == -1).all()
    f32 = A.compute_alpha158(**arr, dtype=np.float32)
    assert f32.dtype == np.float32 and f32.flags.f_contiguous
    np.testing.assert_allclose(f32, expected, rtol=1e-6, equal_nan=True)
    with pytest.raises(ValueError):
        A.compute_alpha158(**arr, out=np.empty((n, k - 1)))


def test_missing_values_and_zero_prices():
    df = make_panel([120, 100], seed=5)
    df["volume"] = df["volume"].astype(float)
    base = compute(df)
    with_nan_volume = df.copy()
    with_nan_volume.loc[[10, 150], "volume"] = np.nan
    zero_volume = df.copy()
    zero_volume.loc[[10, 150], "volume"] = 0.0
    np.testing.assert_array_equal(compute(with_nan_volume).to_numpy(), compute(zero_volume).to_numpy())

    # a missing high makes every window holding it undefined, and nothing else
    bad = df.copy()
    bad.loc[50, "high"] = np.nan
    got = compute(bad)
    for d in WINDOWS:
        for op in ("max", "imax", "rsv", "qtlu", "rank", "corr"):
            column = f"a158_{op}_{d}"
            hit = got[column].iloc[50 : 50 + d]
            assert hit.isna().all(), column
            np.testing.assert_array_equal(got[column].iloc[50 + d : 120], base[column].iloc[50 + d : 120])

    # zero open/close: divisions by zero are NaN, never inf
    zeros = df.copy()
    zeros.loc[30, ["open", "close"]] = 0.0
    vals = compute(zeros).to_numpy()
    assert not np.isinf(vals).any()
    cols = A.alpha158_columns()
    undefined = {"kmid", "klen", "kup", "klow", "ksft", "open0", "high0", "low0"}  # over o or c
    assert {cols[j][5:] for j in np.flatnonzero(np.isnan(vals[30]))} >= undefined


def test_empty_and_bad_input():
    empty = {k: np.empty(0) for k in ("open", "high", "low", "close", "volume")}
    assert A.compute_alpha158(**empty, bounds=np.array([0])).shape == (0, 157)
    one = {k: np.ones(3) for k in ("open", "high", "low", "close", "volume")}
    with pytest.raises(ValueError):
        A.compute_alpha158(**one, bounds=np.array([0, 2]))
    with pytest.raises(ValueError):
        A.compute_alpha158(**{**one, "volume": np.ones(2)}, bounds=np.array([0, 3]))


def test_matches_reference_on_real_bars():
    """Real S&P 500 bars from the bundled sample, adjusted like the engine; one ticker gets a run of
    zero-volume days (as AMCR had before 2019) to exercise the volume operators' edge cases."""
    df = pd.read_csv(SAMPLE_PRICES, parse_dates=["date"])
    df = df[df["ticker"].isin(["AAPL", "AMZN", "GE", "NVDA", "WMT"])]
    df = df.sort_values(["ticker", "date"], ignore_index=True)
    factor = df["adj_close"] / df["close"]
    for k in ("open", "high", "low"):
        df[k] = df[k] * factor
    df["close"] = df["adj_close"]
    ge = np.flatnonzero(df["ticker"].to_numpy() == "GE")
    df.loc[ge[200:320], "volume"] = 0
    assert (df["volume"] == 0).sum() > 100
    assert_same(compute(df), reference(df))
