"""Feature engine: TA-Lib equality, no look-ahead, incremental == full, point-in-time joins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib

from features import engine as E
from features import feature_sets
from features.synthetic import generate_market

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"  # the bundled real sample (PROVENANCE.md there)
PRICES_FILE = SAMPLE / "prices" / "sp500_sample_2013-05-21_2018-05-18.csv.gz"
FUND_DIR = SAMPLE / "fundamentals"
TICKERS = [
    "AAPL", "MSFT", "AMZN", "JPM", "XOM", "GE", "KO", "NVDA", "GOOGL", "BAC",
    "T", "PFE", "WMT", "INTC", "CSCO", "CVX", "MMM", "BA", "DIS",
]  # fmt: skip
# Every sample ticker trades on all 1,259 days with volume: SHORT is F's real bars from SHORT_FROM on
# (a late listing), with the volume of ZERO_VOLUME_DAYS of them set to 0 (an untraded day).
SHORT, SHORT_SOURCE, SHORT_FROM = "SHORT", "F", "2017-06-01"
ZERO_VOLUME_DAYS = [0, 1, 2, 30, 31, 100]


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def real_bars() -> pd.DataFrame:
    """19 real tickers and SHORT (short history with zero-volume days), read once per module."""
    raw = pd.read_csv(PRICES_FILE, parse_dates=["date"])
    short = raw[(raw["ticker"] == SHORT_SOURCE) & (raw["date"] >= SHORT_FROM)].reset_index(drop=True)
    short["ticker"] = SHORT
    short.loc[ZERO_VOLUME_DAYS, "volume"] = 0
    df = pd.concat([raw[raw["ticker"].isin(TICKERS)], short], ignore_index=True)
    assert df["ticker"].nunique() == len(TICKERS) + 1
    assert 200 < (df["ticker"] == SHORT).sum() < feature_sets.MAX_LOOKBACK
    return df


@pytest.fixture(scope="module")
def real_fundamentals() -> pd.DataFrame:
    """Real snapshots 2014..2017 (one layout): P/E, EPS, market cap (USD bn), dividend yield (%)."""
    parts = []
    for path in sorted(FUND_DIR.glob("constituents-financials_201[4-7]-*.csv")):
        as_of = pd.Timestamp(path.stem.rsplit("_", 1)[1])
        raw = pd.read_csv(path)
        raw = raw[raw["Symbol"].isin(TICKERS)]
        parts.append(
            pd.DataFrame(
                {
                    "ticker": raw["Symbol"].to_numpy(),
                    "as_of": as_of,
                    "pe_ratio": pd.to_numeric(raw["Price/Earnings"], errors="coerce").to_numpy(),
                    "eps": pd.to_numeric(raw["Earnings/Share"], errors="coerce").to_numpy(),
                    "market_cap": pd.to_numeric(raw["Market Cap"], errors="coerce").to_numpy() * 1e9,
                    "dividend_yield": pd.to_numeric(raw["Dividend Yield"], errors="coerce").to_numpy()
                    / 100.0,
                }
            )
        )
    out = pd.concat(parts, ignore_index=True)
    assert len(out) > 100
    return out


@pytest.fixture(scope="module")
def spy() -> pd.Series:
    s = pd.read_csv(SAMPLE / "benchmarks" / "SPY_returns.csv")
    # "2013-01-02 00:00:00+00:00": tz-aware UTC midnights; the engine accepts them as they are
    return pd.Series(s["return"].to_numpy(), index=pd.to_datetime(s["date"], utc=True))


def _random_sentiment(bars: pd.DataFrame, seed: int, frac: float = 0.15) -> pd.DataFrame:
    """Daily news on random calendar days (weekends included) within each ticker's range."""
    rng = np.random.default_rng(seed)
    rows = []
    for tick, g in bars.groupby("ticker", observed=True):
        days = pd.date_range(g["date"].min() - pd.Timedelta(days=10), g["date"].max() + pd.Timedelta(days=10))
        pick = days[rng.random(len(days)) < frac]
        rows.append(
            pd.DataFrame(
                {
                    "ticker": tick,
                    "date": pick,
                    "score": rng.uniform(-1, 1, len(pick)),
                    "count": rng.integers(1, 5, len(pick)),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def _synthetic_fundamentals(bars: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for tick, g in bars.groupby("ticker", observed=True):
        dates = pd.date_range(g["date"].min() - pd.Timedelta(days=40), g["date"].max(), freq="37D")
        rows.append(
            pd.DataFrame(
                {
                    "ticker": tick,
                    "as_of": dates,
                    "pe_ratio": rng.uniform(5, 40, len(dates)),
                    "eps": rng.uniform(-2, 8, len(dates)),
                    "market_cap": np.exp(rng.uniform(20, 27, len(dates))),
                    "dividend_yield": rng.uniform(0, 0.05, len(dates)),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def synth_bars() -> pd.DataFrame:
    # 5 years: long enough for an incremental run (MAX_LOOKBACK bars + new days)
    return generate_market(12, 5, seed=7, late_listing=0.3, early_delisting=0.2)


# ------------------------------------------------------------------------------ helpers


def _assert_frames_close(a: pd.DataFrame, b: pd.DataFrame, columns, tol: float, what: str) -> None:
    assert len(a) == len(b), what
    assert (a["ticker"].astype(str).to_numpy() == b["ticker"].astype(str).to_numpy()).all(), what
    assert (a["date"].to_numpy() == b["date"].to_numpy()).all(), what
    bad = []
    for col in columns:
        x = a[col].to_numpy(dtype=np.float64)
        y = b[col].to_numpy(dtype=np.float64)
        same_nan = np.isnan(x) == np.isnan(y)
        both = ~np.isnan(x) & ~np.isnan(y)
        err = np.abs(x[both] - y[both]) / np.maximum(1.0, np.abs(y[both]))
        if not same_nan.all() or (err.size and err.max() > tol):
            bad.append((col, int((~same_nan).sum()), float(err.max()) if err.size else 0.0))
    assert not bad, f"{what}: (column, NaN mismatches, max rel err) {bad}"


def _adjusted(g: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f = (g["adj_close"] / g["close"]).to_numpy()
    return (
        (g["high"].to_numpy() * f).astype(np.float64),
        (g["low"].to_numpy() * f).astype(np.float64),
        g["adj_close"].to_numpy(dtype=np.float64),
    )


# ------------------------------------------------------------------------------ spec


def test_feature_columns_and_spec():
    assert len(feature_sets.FEATURE_COLUMNS) == len(set(feature_sets.FEATURE_COLUMNS))
    for col in (
        "rsi_14", "macd_hist_12_26_9", "bb_pctb_20_2", "sma_200", "ema_50", "close_to_sma_50",
        "ret_20", "atr_14", "obv_20", "vol_60", "volume_z_20", "beta_60", "corr_60", "rel_ret_20",
        "pe_ratio", "earnings_yield", "log_market_cap", "dividend_yield", "sent_mean_5",
        "sent_mean_20", "news_count_5", "has_news", "day_of_week", "month",
    ):  # fmt: skip
        assert col in feature_sets.FEATURE_COLUMNS
    assert feature_sets.FEATURE_COLUMNS == [c for g in feature_sets.FEATURE_GROUPS.values() for c in g]
    assert feature_sets.MAX_LOOKBACK >= 900
    h = feature_sets.DEFAULT_SPEC.version_hash()
    assert h == feature_sets.FeatureSpec.from_params({}).version_hash()
    assert h != feature_sets.FeatureSpec.from_params({"rsi_period": 10}).version_hash()
    assert "rsi_10" in feature_sets.FeatureSpec.from_params({"rsi_period": 10}).columns()
    with pytest.raises(ValueError):
        feature_sets.FeatureSpec.from_params({"nope": 1})


# ------------------------------------------------------------------------------ TA-Lib equality


def test_talib_equality_on_adjusted_real_prices(real_bars):
    feats = E.compute_features(real_bars)
    assert list(feats.columns) == ["ticker", "date", *feature_sets.FEATURE_COLUMNS]
    assert len(feats) == len(real_bars)
    checked = 0
    for tick, g in real_bars.groupby("ticker"):
        g = g.sort_values("date")
        high, low, close = _adjusted(g)
        f = feats[feats["ticker"] == tick]
        assert (f["date"].to_numpy() == g["date"].to_numpy()).all()
        macd, sig, hist = talib.MACD(close, 12, 26, 9)
        up, mid, lo = talib.BBANDS(close, 20, 2.0, 2.0, 0)
        band = np.where(up - lo > 1e-9 * np.abs(mid), up - lo, 0.0)  # flat windows: zero width
        band[np.isnan(mid)] = np.nan
        expected = {
            "rsi_14": talib.RSI(close, 14),
            "macd_12_26_9": macd,
            "macd_signal_12_26_9": sig,
            "macd_hist_12_26_9": hist,
            "bb_upper_20_2": up,
            "bb_middle_20_2": mid,
            "bb_lower_20_2": lo,
            "bb_pctb_20_2": (close - lo) / np.where(band > 0, band, np.nan),
            "bb_width_20_2": band / mid,
            "sma_20": talib.SMA(close, 20),
            "sma_200": talib.SMA(close, 200),
            "ema_50": talib.EMA(close, 50),
            "atr_14": talib.ATR(high, low, close, 14),
        }
        for col, exp in expected.items():
            got = f[col].to_numpy()
            np.testing.assert_array_equal(np.isnan(got), np.isnan(exp), err_msg=f"{tick} {col}")
            ok = ~np.isnan(exp)
            np.testing.assert_allclose(got[ok], exp[ok], rtol=1e-9, atol=1e-9, err_msg=f"{tick} {col}")
        checked += 1
    assert checked == len(TICKERS) + 1


def test_windowed_features_match_pandas_reference(real_bars, spy):
    """Independent pandas formulation of the non-TA-Lib features on a few tickers."""
    feats = E.compute_features(real_bars, market_returns=spy)
    mkt = spy.copy()
    mkt.index = mkt.index.tz_convert(None) if mkt.index.tz is not None else mkt.index
    for tick in ["AAPL", SHORT, "GE"]:
        g = real_bars[real_bars["ticker"] == tick].sort_values("date").reset_index(drop=True)
        f = feats[feats["ticker"] == tick].reset_index(drop=True)
        c = g["adj_close"]
        v = g["volume"].astype(float)
        lr = np.log(c).diff()
        r = c.pct_change()
        ref = {
            "ret_5": c / c.shift(5) - 1,
            "vol_20": lr.rolling(20).std() * np.sqrt(252),
            "vol_60": lr.rolling(60).std() * np.sqrt(252),
            "volume_ratio_20": v / v.rolling(20).mean(),
            "volume_z_20": (v - v.rolling(20).mean()) / v.rolling(20).std(),
            "obv_20": (np.sign(c.diff()) * v).rolling(20).sum() / v.rolling(20).sum(),
            "close_to_sma_50": c / c.rolling(50).mean() - 1,
        }
        m = pd.Series(mkt.reindex(g["date"].to_numpy()).to_numpy())
        pair = pd.DataFrame({"r": r, "m": m})
        cov = pair["r"].rolling(60, min_periods=48).cov(pair["m"])
        ref["beta_60"] = cov / pair["m"].where(pair["r"].notna()).rolling(60, min_periods=48).var()
        ref["corr_60"] = pair["r"].rolling(60, min_periods=48).corr(pair["m"])
        for col, exp in ref.items():
            exp = exp.replace([np.inf, -np.inf], np.nan).to_numpy()
            got = f[col].to_numpy()
            ok = ~np.isnan(exp) & ~np.isnan(got)
            # pandas' online rolling variance is noisier than ours: compare at 1e-6
            np.testing.assert_allclose(got[ok], exp[ok], rtol=1e-6, atol=1e-9, err_msg=f"{tick} {col}")
            if col not in ("volume_z_20", "volume_ratio_20", "beta_60", "corr_60", "obv_20"):
                np.testing.assert_array_equal(np.isnan(got), np.isnan(exp), err_msg=f"{tick} {col}")
            assert ok.sum() > 0.5 * len(g) or tick == SHORT, (tick, col)


# ------------------------------------------------------------------------------ look-ahead


def _truncation_check(bars, cut, *, market=None, fundamentals=None, sentiment=None, what=""):
    full = E.compute_features(bars, market_returns=market, fundamentals=fundamentals, sentiment=sentiment)
    cut = pd.Timestamp(cut)
    later = bars[bars["date"] <= cut + pd.Timedelta(days=30)]
    upto = bars[bars["date"] <= cut]
    market_cut = None if market is None else market[market.index <= cut.tz_localize(market.index.tz)]
    a = E.compute_features(upto, market_returns=market_cut, fundamentals=fundamentals, sentiment=sentiment)
    b = E.compute_features(later, market_returns=market, fundamentals=fundamentals, sentiment=sentiment)
    b = b[b["date"] <= cut].reset_index(drop=True)
    f = full[full["date"] <= cut].reset_index(drop=True)
    _assert_frames_close(a, b, feature_sets.FEATURE_COLUMNS, 1e-12, f"{what} ends at t vs t+30d")
    _assert_frames_close(a, f, feature_sets.FEATURE_COLUMNS, 1e-12, f"{what} ends at t vs full")
    at_t = a[a["date"] == cut]
    assert len(at_t) > 0
    return at_t


def test_no_lookahead_real_data(real_bars, real_fundamentals):
    sent = _random_sentiment(real_bars, seed=1)
    for cut in ("2015-03-13", "2016-06-24"):
        at_t = _truncation_check(
            real_bars, cut, fundamentals=real_fundamentals, sentiment=sent, what=f"real {cut}"
        )
        # the joins and the equal-weighted market features are really exercised
        for col in ("pe_ratio", "earnings_yield", "log_market_cap", "beta_60", "corr_60", "sent_mean_20"):
            assert at_t[col].notna().any(), col
        assert (at_t["news_count_5"] >= 0).all()


def test_no_lookahead_real_data_with_spy(real_bars, spy):
    at_t = _truncation_check(real_bars, "2017-02-15", market=spy, what="real+SPY")
    assert at_t["beta_60"].notna().sum() >= 15


def test_no_lookahead_synthetic(synth_bars):
    sent = _random_sentiment(synth_bars, seed=2, frac=0.3)
    fund = _synthetic_fundamentals(synth_bars, seed=3)
    dates = np.sort(synth_bars["date"].unique())
    for cut in (dates[300], dates[-200]):
        _truncation_check(synth_bars, cut, fundamentals=fund, sentiment=sent, what="synthetic")


# ------------------------------------------------------------------------------ incremental


@pytest.mark.parametrize("source", ["real", "synthetic"])
def test_incremental_equals_full(source, real_bars, synth_bars, real_fundamentals):
    bars = real_bars if source == "real" else synth_bars
    fund = real_fundamentals if source == "real" else _synthetic_fundamentals(bars, seed=5)
    sent = _random_sentiment(bars, seed=6)
    k = 40
    dates = np.sort(bars["date"].unique())
    since = dates[-k]
    # history used by the incremental run must be shorter than the full one
    assert len(dates) > feature_sets.MAX_LOOKBACK + k
    full = E.compute_features(bars, fundamentals=fund, sentiment=sent)
    full = full[full["date"] >= since].reset_index(drop=True)
    tm = {}
    inc = E.compute_features_incremental(bars, since, fundamentals=fund, sentiment=sent, timings=tm)
    assert tm["total"] >= tm["talib"] > 0
    _assert_frames_close(inc, full, feature_sets.FEATURE_COLUMNS, 1e-9, f"{source} incremental")
    # the caller-side recipe: last MAX_LOOKBACK bars before since + new days
    sub = E.select_lookback(bars, since)
    assert sub.groupby("ticker", observed=True).size().max() <= feature_sets.MAX_LOOKBACK + k
    inc2 = E.compute_features(sub, fundamentals=fund, sentiment=sent)
    inc2 = inc2[inc2["date"] >= since].reset_index(drop=True)
    _assert_frames_close(inc2, full, feature_sets.FEATURE_COLUMNS, 1e-9, f"{source} select_lookback")


def test_incremental_with_market_series(real_bars, spy):
    since = np.sort(real_bars["date"].unique())[-60]
    full = E.compute_features(real_bars, market_returns=spy)
    full = full[full["date"] >= since].reset_index(drop=True)
    inc = E.compute_features_incremental(real_bars, since, market_returns=spy)
    _assert_frames_close(inc, full, feature_sets.FEATURE_COLUMNS, 1e-9, "incremental SPY")


def test_alpha158_feature_set_no_lookahead_and_incremental(synth_bars):
    """The ``alpha158`` set (default features + Qlib's Alpha158 family) through the engine: a value
    at t is the same whether the bars end at t, at t+30 days or run to the end, and an incremental
    run equals the full build."""
    spec = feature_sets.FEATURE_SETS["alpha158"]
    columns = spec.columns()
    assert len(spec.groups()["alpha158"]) == 157 and columns[: len(feature_sets.FEATURE_COLUMNS)] == feature_sets.FEATURE_COLUMNS
    full = E.compute_features(synth_bars, params=spec)
    dates = np.sort(synth_bars["date"].unique())
    for cut in (pd.Timestamp(dates[300]), pd.Timestamp(dates[-200])):
        a = E.compute_features(synth_bars[synth_bars["date"] <= cut], params=spec)
        b = E.compute_features(synth_bars[synth_bars["date"] <= cut + pd.Timedelta(days=30)], params=spec)
        b = b[b["date"] <= cut].reset_index(drop=True)
        f = full[full["date"] <= cut].reset_index(drop=True)
        _assert_frames_close(a, b, columns, 1e-12, f"alpha158 ends at {cut.date()} vs t+30d")
        _assert_frames_close(a, f, columns, 1e-12, f"alpha158 ends at {cut.date()} vs full")
        assert a.loc[a["date"] == cut, "a158_corr_60"].notna().any()
    since = dates[-40]
    inc = E.compute_features_incremental(synth_bars, since, params=spec)
    _assert_frames_close(inc, full[full["date"] >= since].reset_index(drop=True), columns, 1e-9, "alpha158 incremental")
    # the default set's version hash does not change with the family's existence
    assert "alpha158_windows" not in feature_sets.DEFAULT_SPEC.to_dict()
    assert feature_sets.DEFAULT_SPEC.version_hash() != spec.version_hash()


# ------------------------------------------------------------------------------ joins


def _toy_bars(n=30, tickers=("AAA", "BBB"), seed=0):
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2020-01-01", periods=n)
    parts = []
    for t in tickers:
        c = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        parts.append(
            pd.DataFrame(
                {
                    "ticker": t,
                    "date": dates,
                    "open": c,
                    "high": c * 1.01,
                    "low": c * 0.99,
                    "close": c,
                    "adj_close": c,
                    "volume": rng.integers(1000, 5000, n),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def test_fundamentals_join_strictly_before():
    bars = _toy_bars()
    t = pd.Timestamp("2020-01-15")
    fund = pd.DataFrame(
        {
            "ticker": ["AAA", "AAA", "AAA", "BBB"],
            "as_of": [t - pd.Timedelta(days=3), t, t + pd.Timedelta(days=1), t + pd.Timedelta(days=2)],
            "pe_ratio": [10.0, 20.0, 30.0, 40.0],
            "eps": [1.0, 2.0, 3.0, 4.0],
            "market_cap": [1e9, 2e9, 3e9, 4e9],
            "dividend_yield": [0.01, 0.02, 0.03, 0.04],
        }
    )
    f = E.compute_features(bars, fundamentals=fund).set_index(["ticker", "date"])
    assert f.loc[("AAA", t), "pe_ratio"] == 10.0  # not the snapshot dated t, nor t+1
    assert f.loc[("AAA", t + pd.Timedelta(days=1)), "pe_ratio"] == 20.0
    assert f.loc[("AAA", t + pd.Timedelta(days=2)), "pe_ratio"] == 30.0
    assert f.loc[("AAA", pd.Timestamp("2020-01-13")), "pe_ratio"] == 10.0  # as_of Sunday 12th
    assert np.isnan(f.loc[("AAA", pd.Timestamp("2020-01-10")), "pe_ratio"])
    assert np.isnan(f.loc[("BBB", t + pd.Timedelta(days=2)), "pe_ratio"])  # as_of Friday 17th
    assert f.loc[("BBB", pd.Timestamp("2020-01-20")), "pe_ratio"] == 40.0
    row = f.loc[("AAA", t)]
    close = bars.set_index(["ticker", "date"]).loc[("AAA", t), "close"]
    assert row["earnings_yield"] == pytest.approx(1.0 / close)
    assert row["log_market_cap"] == pytest.approx(np.log(1e9))
    assert row["dividend_yield"] == 0.01

    # same as pandas merge_asof(allow_exact_matches=False) on a random case
    rng = np.random.default_rng(3)
    fund2 = pd.DataFrame(
        {
            "ticker": rng.choice(["AAA", "BBB", "ZZZ"], 40),
            "as_of": pd.Timestamp("2019-12-20") + pd.to_timedelta(rng.integers(0, 50, 40), unit="D"),
            "pe_ratio": rng.uniform(1, 50, 40),
            "eps": 1.0,
            "market_cap": 1e9,
            "dividend_yield": 0.0,
        }
    ).drop_duplicates(["ticker", "as_of"])
    got = E.compute_features(bars, fundamentals=fund2)[["ticker", "date", "pe_ratio"]]
    ref = pd.merge_asof(
        bars[["ticker", "date"]].sort_values("date"),
        fund2.sort_values("as_of"),
        left_on="date",
        right_on="as_of",
        by="ticker",
        allow_exact_matches=False,
    ).sort_values(["ticker", "date"])
    np.testing.assert_array_equal(got["pe_ratio"].to_numpy(), ref["pe_ratio"].to_numpy())


def test_joins_before_1970():
    bars = _toy_bars(n=10, tickers=("AAA", "BBB"))
    bars["date"] = bars["date"] - pd.DateOffset(years=55)  # 1965
    d = np.sort(bars["date"].unique())
    fund = pd.DataFrame(
        {"ticker": ["AAA", "BBB"], "as_of": [d[2], d[4]], "pe_ratio": [11.0, 12.0], "eps": 1.0}
    )
    sent = pd.DataFrame({"ticker": ["BBB"], "date": [d[5]], "score": [0.4], "count": [2]})
    f = E.compute_features(bars, fundamentals=fund, sentiment=sent).set_index(["ticker", "date"])
    assert np.isnan(f.loc[("AAA", d[2]), "pe_ratio"]) and f.loc[("AAA", d[3]), "pe_ratio"] == 11.0
    assert np.isnan(f.loc[("BBB", d[4]), "pe_ratio"]) and f.loc[("BBB", d[5]), "pe_ratio"] == 12.0
    assert f.loc[("BBB", d[5]), "has_news"] == 1 and f.loc[("AAA", d[5]), "has_news"] == 0
    assert np.isnan(f.loc[("BBB", d[5]), "dividend_yield"])  # column absent from the snapshots


def test_sentiment_features():
    bars = _toy_bars(n=30)
    dates = pd.bdate_range("2020-01-01", periods=30)
    sat = pd.Timestamp("2020-01-11")  # Saturday -> Monday 2020-01-13
    sent = pd.DataFrame(
        {
            "ticker": ["AAA", "AAA", "AAA", "AAA"],
            "date": [pd.Timestamp("2019-12-20"), dates[7], sat, dates[20]],
            "score": [0.9, 0.5, -0.1, 0.3],
            "count": [7, 2, 1, 3],
        }
    )
    f = E.compute_features(bars, sentiment=sent).set_index(["ticker", "date"])
    a = f.loc["AAA"]
    mon = pd.Timestamp("2020-01-13")
    assert mon == dates[8]
    assert a.loc[dates[7], "has_news"] == 1 and a.loc[mon, "has_news"] == 1
    assert a.loc[dates[6], "has_news"] == 0
    assert a.loc[dates[7], "news_count_5"] == 2  # the news before the first bar is dropped
    assert a.loc[mon, "news_count_5"] == 3
    assert a.loc[mon, "sent_mean_5"] == pytest.approx((0.5 - 0.1) / 2)
    # a window without news is 0 / 0, not NaN; warm-up is NaN
    assert a.loc[dates[27], "sent_mean_5"] == 0 and a.loc[dates[27], "news_count_5"] == 0
    assert np.isnan(a.loc[dates[2], "sent_mean_5"])
    assert a.loc[dates[25], "sent_mean_20"] == pytest.approx((0.5 - 0.1 + 0.3) / 3)
    assert (f.loc["BBB", "news_count_5"].dropna() == 0).all()
    # without a sentiment source the columns are unknown (NaN)
    g = E.compute_features(bars)
    assert g[feature_sets.FEATURE_GROUPS["sentiment"]].isna().all().all()
    assert g[feature_sets.FEATURE_GROUPS["fundamentals"]].isna().all().all()


# ------------------------------------------------------------------------------ edge cases


def test_degenerate_inputs_give_nan_not_inf():
    bars = _toy_bars(n=80)
    flat = bars["ticker"] == "BBB"
    bars.loc[flat, ["open", "high", "low", "close", "adj_close"]] = 20.0
    bars.loc[flat, "volume"] = 0
    bars = bars.sample(frac=1.0, random_state=0)  # unsorted input is fine
    f = E.compute_features(bars)
    vals = f[feature_sets.FEATURE_COLUMNS].to_numpy(dtype=float)
    assert not np.isinf(vals).any()
    b = f[f["ticker"] == "BBB"].iloc[70:]
    assert b["vol_20"].eq(0).all()  # constant price: zero volatility
    for col in ("volume_ratio_20", "volume_z_20", "obv_20", "corr_60", "bb_pctb_20_2"):
        assert b[col].isna().all(), col
    assert b["beta_60"].eq(0).all()  # no co-movement with a moving market
    a = f[f["ticker"] == "AAA"]
    assert a["beta_60"].iloc[70:].notna().all()  # equal-weighted market of two tickers
    # single-bar and tiny tickers are fine
    tiny = E.compute_features(bars[bars["ticker"] == "AAA"].head(3))
    assert len(tiny) == 3 and tiny["rsi_14"].isna().all()
    with pytest.raises(ValueError):
        E.compute_features(pd.concat([bars, bars.head(1)]))


def test_float32_output_and_categorical_tickers():
    bars = _toy_bars(n=60)
    bars["ticker"] = bars["ticker"].astype("category")
    f64 = E.compute_features(bars)
    f32 = E.compute_features(bars, dtype=np.float32)
    assert isinstance(f32["ticker"].dtype, pd.CategoricalDtype)
    assert f32[feature_sets.FEATURE_COLUMNS].dtypes.eq(np.float32).all()
    np.testing.assert_allclose(
        f32["sma_20"].to_numpy(dtype=float), f64["sma_20"].to_numpy(), rtol=1e-6, equal_nan=True
    )


def test_rank_normalize():
    df = pd.DataFrame(
        {
            "date": ["d1"] * 4 + ["d2"] * 2,
            "x": [3.0, 1.0, np.nan, 2.0, 5.0, 5.0],
            "y": [1.0, 2.0, 3.0, 4.0, 7.0, np.nan],
        }
    )
    out = rank_normalized = E.rank_normalize(df, ["x", "y"])
    assert rank_normalized is not df
    np.testing.assert_allclose(out["x"].to_numpy(), [0.5, -0.5, np.nan, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(out["y"].to_numpy(), [-0.5, -1 / 6, 1 / 6, 0.5, 0.0, np.nan])
