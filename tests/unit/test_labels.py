"""Forward-return labels: t -> t+h of the same ticker, NaN where the future is unknown."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.engine import compute_features
from features.labels import compute_labels, cs_beats_median, cs_demean, cs_rank_norm, label_columns


def _bars() -> pd.DataFrame:
    dates = pd.bdate_range("2021-03-01", periods=8)
    a = pd.DataFrame({"ticker": "AAA", "date": dates, "adj_close": [10, 11, 12, 11, 11, 13, 14, 15.0]})
    b = pd.DataFrame({"ticker": "BBB", "date": dates[:6], "adj_close": [100, 90, 80, 85, 95, 100.0]})
    df = pd.concat([b, a], ignore_index=True)  # unsorted tickers on purpose
    for col in ("open", "high", "low", "close"):
        df[col] = df["adj_close"]
    df["volume"] = 1000
    return df


def test_columns_and_order():
    lab = compute_labels(_bars())
    assert list(lab.columns) == ["ticker", "date", *label_columns((1, 5))]
    assert list(lab["ticker"].unique()) == ["AAA", "BBB"]
    assert lab.groupby("ticker")["date"].apply(lambda s: s.is_monotonic_increasing).all()


def test_forward_returns_use_t_plus_h():
    lab = compute_labels(_bars(), horizons=(1, 5)).set_index(["ticker", "date"])
    a = lab.loc["AAA"]
    px = np.array([10, 11, 12, 11, 11, 13, 14, 15.0])
    np.testing.assert_allclose(a["fwd_ret_1"].to_numpy()[:-1], px[1:] / px[:-1] - 1)
    np.testing.assert_allclose(a["fwd_ret_5"].to_numpy()[:-5], px[5:] / px[:-5] - 1)
    assert a["fwd_dir_1"].tolist()[:7] == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]  # flat day -> 0
    # the last h rows are unknown
    assert a["fwd_ret_1"].isna().tolist() == [False] * 7 + [True]
    assert a["fwd_ret_5"].isna().sum() == 5 and a["fwd_ret_5"].iloc[-5:].isna().all()
    assert a["fwd_dir_5"].iloc[-5:].isna().all()


def test_no_cross_ticker_bleed():
    lab = compute_labels(_bars()).set_index(["ticker", "date"])
    # AAA's last rows must not look into BBB's (or the reverse), whatever the input order
    assert lab.loc["AAA", "fwd_ret_1"].iloc[-1:].isna().all()
    b = lab.loc["BBB"]
    assert b["fwd_ret_1"].iloc[-1:].isna().all()
    assert b["fwd_ret_5"].iloc[0] == pytest.approx(100 / 100 - 1)
    assert b["fwd_ret_5"].iloc[1:].isna().all()


def test_labels_line_up_with_features_and_ignore_later_truncation():
    bars = _bars()
    lab = compute_labels(bars)
    feats = compute_features(bars)
    assert (lab["date"].to_numpy() == feats["date"].to_numpy()).all()
    assert (lab["ticker"].to_numpy() == feats["ticker"].to_numpy()).all()
    # a label is only defined once its future exists
    short = compute_labels(bars[bars["date"] <= "2021-03-08"]).set_index(["ticker", "date"])
    full = lab.set_index(["ticker", "date"])
    t = pd.Timestamp("2021-03-05")
    assert short.loc[("AAA", t), "fwd_ret_1"] == full.loc[("AAA", t), "fwd_ret_1"]
    assert np.isnan(short.loc[("AAA", pd.Timestamp("2021-03-08")), "fwd_ret_1"])


def test_bad_horizon():
    with pytest.raises(ValueError):
        compute_labels(_bars(), horizons=(0,))


def test_cross_sectional_targets_by_hand():
    dates = np.repeat(np.array(["2021-03-01", "2021-03-02"], dtype="datetime64[ns]"), 6)
    ret = np.array([0.05, 0.04, 0.03, 0.02, 0.01, np.nan, 0.01, 0.01, 0.01, 0.02, 0.03, 0.04])
    rank = cs_rank_norm(dates, ret)
    # day 1: ranks 5,4,3,2,1 of 5 -> (rank - 0.5) / 5 - 0.5, times 3.46
    np.testing.assert_allclose(rank[:5], (np.array([5, 4, 3, 2, 1]) - 0.5) / 5 * 3.46 - 0.5 * 3.46)
    assert np.isnan(rank[5])
    # ties share their average rank
    assert rank[6] == rank[7] == rank[8]
    np.testing.assert_array_equal(cs_beats_median(dates, ret)[:6], [1, 1, 0.5, 0, 0, np.nan])
    np.testing.assert_array_equal(cs_beats_median(dates, ret)[6:], [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(cs_demean(dates, ret)[:5], [0.02, 0.01, 0.0, -0.01, -0.02], atol=1e-15)
    # a market-wide move changes none of them
    shifted = ret + 0.1
    np.testing.assert_allclose(cs_rank_norm(dates, shifted), rank)
    np.testing.assert_allclose(cs_demean(dates, shifted), cs_demean(dates, ret), atol=1e-15)


def test_cross_sectional_targets_need_two_names():
    one = np.array(["2021-03-01"], dtype="datetime64[ns]")
    assert np.isnan(cs_rank_norm(one, [0.1])).all() and np.isnan(cs_beats_median(one, [0.1])).all()
    two = np.repeat(one, 2)
    np.testing.assert_array_equal(cs_beats_median(two, [0.1, 0.3]), [0.0, 1.0])
