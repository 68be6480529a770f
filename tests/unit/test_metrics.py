"""Metrics against small hand-computable examples."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from registry.metrics import (
    METRIC_KEYS,
    compute_metrics,
    daily_ic,
    direction_metrics,
    hit_rate,
    ic_metrics,
    long_short_returns,
    max_drawdown,
    metrics_from_frame,
    portfolio_metrics,
    price_errors,
    relative_to_median,
)


def _panel(n_dates: int, n_tickers: int) -> tuple[np.ndarray, np.ndarray]:
    dates = np.repeat(pd.bdate_range("2020-01-01", periods=n_dates).to_numpy(), n_tickers)
    tickers = np.tile(np.arange(n_tickers), n_dates)
    return dates, tickers


def test_direction_metrics_by_hand():
    out = direction_metrics([1, 1, 0, 0], [1, 0, 1, 0])
    assert out == {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5}
    out = direction_metrics([1, 1, 1, 0], [1, 1, 0, 0])
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == 1.0
    assert out["f1"] == pytest.approx(0.8)
    # nothing predicted up: precision and f1 are 0, not a division error
    out = direction_metrics([0, 0], [1, 0])
    assert out == {"accuracy": 0.5, "precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_price_errors_by_hand():
    # predicted 110 and 95, realized 100 and 100
    out = price_errors([0.10, -0.05], [100.0, 100.0], [0.0, 0.0])
    assert out["mae"] == pytest.approx(7.5)
    assert out["rmse"] == pytest.approx(math.sqrt((100 + 25) / 2))
    assert out["mape"] == pytest.approx(0.075)


def test_hit_rate_counts_a_forecast_on_its_median_as_half():
    # sides relative to the day's medians: +1 above, -1 below, 0 on it
    assert hit_rate([1, -1, 0, 1], [1, 1, 1, -1]) == pytest.approx(0.375)
    assert hit_rate(np.zeros(7), np.sign(np.linspace(-1, 1, 7))) == 0.5


def test_relative_to_median_per_date_and_thin_dates_left_out():
    dates, _ = _panel(2, 5)
    values = np.array([1, 2, 3, 4, 5, 5, 5, 5, 1, np.nan], dtype=float)
    side = relative_to_median(dates, values)
    np.testing.assert_array_equal(side[:5], [-1, -1, 0, 1, 1])
    # the second date has 4 values (< 5 names): no side
    assert np.isnan(side[5:]).all()


def test_ic_of_perfect_reversed_monotone_and_constant_signals():
    dates, _ = _panel(3, 10)
    rng = np.random.default_rng(0)
    realized = rng.standard_normal(len(dates))
    perfect = ic_metrics(dates, realized, realized)
    assert perfect["ic"] == pytest.approx(1.0)
    assert perfect["rank_ic"] == pytest.approx(1.0)
    assert perfect["icir"] == 0.0  # every day the same IC: zero spread, reported as 0
    assert ic_metrics(dates, -realized, realized)["rank_ic"] == pytest.approx(-1.0)
    monotone = ic_metrics(dates, np.exp(5 * realized), realized)
    assert monotone["rank_ic"] == pytest.approx(1.0)
    assert monotone["ic"] < 0.99
    constant = ic_metrics(dates, np.full(len(dates), 0.3), realized)
    assert constant == {"ic": 0.0, "icir": 0.0, "rank_ic": 0.0, "rank_icir": 0.0}


def test_icir_is_mean_over_std_of_daily_ic():
    dates, tickers = _panel(2, 5)
    realized = np.tile(np.arange(5.0), 2)
    # day 1: perfect (+1); day 2: ranks 0,1,2,4,3 -> Spearman 0.9
    signal = np.concatenate([np.arange(5.0), [0.0, 1.0, 2.0, 4.0, 3.0]])
    series = daily_ic(dates, signal, realized, rank=True)
    assert series.to_numpy() == pytest.approx([1.0, 0.9])
    out = ic_metrics(dates, signal, realized)
    assert out["rank_ic"] == pytest.approx(0.95)
    assert out["rank_icir"] == pytest.approx(0.95 / np.std([1.0, 0.9], ddof=1))


def test_dates_with_fewer_than_five_tickers_are_skipped():
    dates, _ = _panel(2, 4)
    values = np.arange(8.0)
    assert daily_ic(dates, values, values).empty
    assert math.isnan(ic_metrics(dates, values, values)["ic"])
    assert daily_ic(dates, values, values, min_names=4).to_numpy() == pytest.approx([1.0, 1.0])


def test_max_drawdown_of_known_curves():
    # equity 1 -> 1.1 -> 0.55 -> 0.66: peak 1.1, trough 0.55
    assert max_drawdown([0.1, -0.5, 0.2]) == pytest.approx(-0.5)
    # the starting capital counts as a peak
    assert max_drawdown([-0.1, 0.05]) == pytest.approx(-0.1)
    assert max_drawdown([0.01, 0.02]) == 0.0


def test_portfolio_metrics_by_hand():
    out = portfolio_metrics(np.full(252, 0.001))
    assert out["annual_return"] == pytest.approx(1.001**252 - 1)
    assert out["sharpe"] == 0.0  # no variance: reported as 0, not inf
    assert out["max_drawdown"] == 0.0
    r = np.array([0.01, -0.01, 0.02, 0.0])
    assert portfolio_metrics(r)["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))


def test_long_short_decile_book():
    dates, tickers = _panel(2, 10)
    signal = tickers.astype(float)
    next_ret = tickers * 0.01
    book = long_short_returns(dates, signal, next_ret)
    # top decile of 10 names = 1 name (ret 0.09), bottom = 1 name (ret 0.0)
    assert book.to_numpy() == pytest.approx([0.09, 0.09])
    # an all-equal forecast holds nothing
    assert long_short_returns(dates, np.ones(20), next_ret).to_numpy() == pytest.approx([0.0, 0.0])
    # ties at the edge join the leg: the two best names share the top
    signal_tied = signal.copy()
    signal_tied[tickers == 8] = 9.0
    assert long_short_returns(dates, signal_tied, next_ret).to_numpy() == pytest.approx([0.085, 0.085])


def test_compute_metrics_keys_and_fallback_to_scaled_horizon_return():
    dates, tickers = _panel(4, 10)
    rng = np.random.default_rng(1)
    realized = rng.standard_normal(len(dates)) * 0.02
    kwargs = dict(
        dates=dates,
        expected_return=realized,
        prob_up=None,
        adj_close=np.full(len(dates), 50.0),
        realized_return=realized,
    )
    out = compute_metrics(**kwargs, horizon=5)
    assert tuple(out) == METRIC_KEYS
    assert out["ic"] == pytest.approx(1.0) and out["accuracy"] == 1.0 and out["mae"] == pytest.approx(0.0)
    # portfolio used fwd_ret_5 / 5 as the next-day return; with explicit fwd_ret_1 it changes
    explicit = compute_metrics(**kwargs, next_day_return=realized, horizon=5)
    assert explicit["annual_return"] > out["annual_return"] > 0
    # NaN forecasts are dropped, not scored
    er = realized.copy()
    er[:10] = np.nan
    partial = compute_metrics(**{**kwargs, "expected_return": er}, horizon=1)
    assert partial["accuracy"] == 1.0


def test_direction_is_cross_sectional_not_the_market_direction():
    """A day on which every stock rose: the absolute direction is all "up", but the classes that
    matter for a ranking are above / below the day's median."""
    dates, tickers = _panel(1, 6)
    frame = pd.DataFrame(
        {
            "date": dates,
            "ticker": tickers,
            "adj_close": 10.0,
            "fwd_ret_1": [0.01, 0.02, 0.03, 0.04, 0.05, 0.06],
            "expected_return": [0.06, 0.05, 0.04, 0.03, 0.02, 0.01],  # ranks them backwards
            "prob_up": [0.9] * 6,  # "up" for all: right about the market, says nothing per stock
        }
    )
    out = metrics_from_frame(frame, horizon=1)
    assert out["accuracy"] == 0.0
    assert out["hit_rate"] == 0.0
    assert out["rank_ic"] == pytest.approx(-1.0)
    right = metrics_from_frame(frame.assign(expected_return=frame["fwd_ret_1"] - 0.5), horizon=1)
    assert right["accuracy"] == 1.0 and right["precision"] == 1.0 and right["recall"] == 1.0
