"""Synthetic market generator: determinism, valid bars, stylized facts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.synthetic import BAR_COLUMNS, generate_market


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    return generate_market(40, 4, seed=11)


def _log_returns(df: pd.DataFrame) -> pd.Series:
    return np.log(df["adj_close"]).groupby(df["ticker"], observed=True).diff().dropna()


def test_shape_and_columns(market):
    assert list(market.columns) == BAR_COLUMNS
    days = pd.bdate_range("2010-01-04", periods=4 * 252)
    assert market["ticker"].nunique() == 40
    assert set(market["ticker"].astype(str)) == {f"SYN{i:04d}" for i in range(1, 41)}
    assert market["date"].isin(days).all()
    assert (market["date"].dt.dayofweek < 5).all()
    per = market.groupby("ticker", observed=True).size()
    assert per.max() == len(days) and len(market) <= 40 * len(days)
    assert len(market) > 0.8 * 40 * len(days)
    assert not market.duplicated(["ticker", "date"]).any()
    assert market["volume"].dtype == np.int64
    # no gaps inside a ticker's range
    for _, g in market.groupby("ticker", observed=True):
        assert g["date"].is_monotonic_increasing
        lo, hi = days.get_loc(g["date"].iloc[0]), days.get_loc(g["date"].iloc[-1])
        assert len(g) == hi - lo + 1
    no_ragged = generate_market(5, 1, seed=1, late_listing=0, early_delisting=0)
    assert len(no_ragged) == 5 * 252


def test_deterministic_per_seed(market):
    again = generate_market(40, 4, seed=11)
    pd.testing.assert_frame_equal(market, again)
    other = generate_market(40, 4, seed=12)
    assert not np.allclose(other["adj_close"].to_numpy()[:500], market["adj_close"].to_numpy()[:500])
    # a ticker's path does not depend on how many tickers or which chunking
    small = generate_market(7, 4, seed=11, chunk_size=3)
    sub = market[market["ticker"].astype(str).isin(small["ticker"].astype(str).unique())]
    np.testing.assert_array_equal(small["adj_close"].to_numpy(), sub["adj_close"].to_numpy())
    np.testing.assert_array_equal(small["volume"].to_numpy(), sub["volume"].to_numpy())


def test_valid_bars(market):
    o, h, lo, c, a = (market[k].to_numpy() for k in ("open", "high", "low", "close", "adj_close"))
    assert (h >= np.maximum(o, c)).all()
    assert (lo <= np.minimum(o, c)).all()
    assert (np.stack([o, h, lo, c, a]) > 0).all()
    assert np.isfinite(np.stack([o, h, lo, c, a])).all()
    assert (market["volume"] >= 0).all()


def test_dividends_make_adj_close_differ(market):
    diff = ~np.isclose(market["close"], market["adj_close"], rtol=1e-12)
    assert 0.05 < diff.mean() < 0.95
    assert (market["adj_close"] <= market["close"] * (1 + 1e-12)).all()


def test_fat_tails_and_volatility_clustering(market):
    r = _log_returns(market)
    z = (r - r.mean()) / r.std()
    kurt = float((z**4).mean())
    assert kurt > 3.0, kurt
    acfs = []
    for _, g in r.groupby(market.loc[r.index, "ticker"], observed=True):
        x = np.abs(g.to_numpy())
        x = x - x.mean()
        acfs.append(float((x[1:] * x[:-1]).mean() / (x * x).mean()))
    assert np.median(acfs) > 0.05, np.median(acfs)
    # per-ticker excess kurtosis too, not only from mixing volatilities across tickers
    per = r.groupby(market.loc[r.index, "ticker"], observed=True).apply(
        lambda s: float((((s - s.mean()) / s.std()) ** 4).mean())
    )
    assert (per > 3.0).mean() > 0.8


def test_market_factor_and_volume_correlation(market):
    r = _log_returns(market)
    wide = pd.DataFrame({"r": r, "t": market.loc[r.index, "ticker"], "d": market.loc[r.index, "date"]})
    wide = wide.pivot(index="d", columns="t", values="r")
    corr = wide.corr().to_numpy()
    off = corr[~np.eye(len(corr), dtype=bool)]
    assert np.nanmean(off) > 0.1  # a common factor
    v = np.log1p(market.loc[r.index, "volume"].to_numpy())
    # within ticker: big moves come with more volume
    cors = []
    for _, g in pd.DataFrame({"a": np.abs(r.to_numpy()), "v": v, "t": market.loc[r.index, "ticker"]}).groupby(
        "t", observed=True
    ):
        cors.append(np.corrcoef(g["a"], g["v"])[0, 1])
    assert np.nanmedian(cors) > 0.1


def test_actions_list_splits_and_dividends():
    bars, actions = generate_market(200, 3, seed=5, return_actions=True)
    assert list(actions.columns) == ["ticker", "date", "kind", "value"]
    assert set(actions["kind"]) <= {"split", "dividend"}
    assert (actions["kind"] == "split").any()
    assert (actions["value"] > 0).all()
    # split-adjusted output: no jump on a split day
    split = actions[actions["kind"] == "split"].iloc[0]
    g = bars[bars["ticker"] == split["ticker"]].set_index("date")["close"]
    pos = g.index.get_loc(split["date"])
    jump = g.iloc[pos] / g.iloc[pos - 1]
    assert 0.6 < jump < 1.6
    # a dividend ex-date: close falls relative to adj_close
    div = actions[actions["kind"] == "dividend"].iloc[0]
    g = bars[bars["ticker"] == div["ticker"]].set_index("date")
    pos = g.index.get_loc(div["date"])
    ratio_before = g["close"].iloc[pos - 1] / g["adj_close"].iloc[pos - 1]
    ratio_on = g["close"].iloc[pos] / g["adj_close"].iloc[pos]
    assert ratio_before > ratio_on
    assert div["value"] == pytest.approx(g["close"].iloc[pos - 1] * (1 - ratio_on / ratio_before), rel=1e-9)
