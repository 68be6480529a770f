"""The benchmark protocol (training.report, yearly_splits) against small hand-computable examples."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from registry.metrics import daily_ic, decile_weights, long_short_returns, overlap_adjusted_tstat
from training.evaluation import yearly_splits
from training.report import (
    REPORT_ROW_KEYS,
    decile_book,
    per_year_rank_ic,
    rank_ic_tstat,
    report_row,
)
from training.report_table import format_report, report_from_tables
from training.walk_forward import BASELINE_NAMES

NAMES = [f"N{i}" for i in range(10)]
DAYS = pd.to_datetime(["2021-03-01", "2021-03-02", "2021-03-03"])


def _hand_book_inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """3 dates x 10 names; with quantile 0.2 each leg holds k = 2 names at 1/2 each.

    day 1: signal = i           -> long {N8, N9}, short {N0, N1}
    day 2: N7 and N8 swap ranks -> long {N9, N7}, short {N0, N1}  (one long name replaced)
    day 3: same signal as day 2 -> no trades
    next-day return of name i on day d: 0.001 * i * d
    """
    dates, tickers, signal, nxt = [], [], [], []
    for d, day in enumerate(DAYS, start=1):
        order = list(range(10))
        if d >= 2:
            order[7], order[8] = 8, 7
        for i, name in enumerate(NAMES):
            dates.append(day)
            tickers.append(name)
            signal.append(float(order[i]))
            nxt.append(0.001 * i * d)
    return np.array(dates), np.array(tickers), np.array(signal), np.array(nxt)


def test_decile_book_by_hand():
    dates, tickers, signal, nxt = _hand_book_inputs()
    book = decile_book(dates, tickers, signal, nxt, quantile=0.2, cost_bps=10.0)

    # gross: mean of the long leg's next returns minus the short leg's
    # day 1: (0.008 + 0.009) / 2 - (0 + 0.001) / 2 = 0.008
    # day 2: (0.018 + 0.014) / 2 - (0 + 0.002) / 2 = 0.015
    # day 3: (0.027 + 0.021) / 2 - (0 + 0.003) / 2 = 0.0225
    np.testing.assert_allclose(book.gross_returns.to_numpy(), [0.008, 0.015, 0.0225])
    # turnover = sum |w_t - w_{t-1}| / 2: opening 4 names at 1/2 -> 1; N8 sold, N7 bought -> 0.5; none -> 0
    np.testing.assert_allclose(book.turnover.to_numpy(), [1.0, 0.5, 0.0])
    # cost = traded weight (2 * turnover) * 10 bps: 0.002, 0.001, 0
    np.testing.assert_allclose(book.net_returns.to_numpy(), [0.008 - 0.002, 0.015 - 0.001, 0.0225])
    assert list(book.net_returns.index) == list(DAYS)
    assert book.mean_turnover == pytest.approx(0.5)

    net = np.array([0.006, 0.014, 0.0225])
    assert book.annual_return == pytest.approx(np.prod(1 + net) ** (252 / 3) - 1)
    assert book.gross_annual_return == pytest.approx(np.prod(1 + np.array([0.008, 0.015, 0.0225])) ** 84 - 1)
    assert book.information_ratio == pytest.approx(net.mean() / net.std(ddof=1) * math.sqrt(252))
    assert book.max_drawdown == 0.0  # the net curve only rises

    # costs scale linearly and a zero cost leaves the gross returns
    free = decile_book(dates, tickers, signal, nxt, quantile=0.2, cost_bps=0.0)
    np.testing.assert_allclose(free.net_returns.to_numpy(), free.gross_returns.to_numpy())
    dear = decile_book(dates, tickers, signal, nxt, quantile=0.2, cost_bps=25.0)
    np.testing.assert_allclose(dear.gross_returns - dear.net_returns, [0.005, 0.0025, 0.0])


def test_decile_book_held_for_the_horizon():
    """Rebalanced every 2 dates: day 2 keeps day 1's book (long N8, N9; short N0, N1), so it earns
    those names' day-2 returns and trades nothing; day 3 rebalances."""
    dates, tickers, signal, nxt = _hand_book_inputs()
    book = decile_book(dates, tickers, signal, nxt, quantile=0.2, cost_bps=10.0, hold_days=2)
    # day 2 with day 1's legs: (0.016 + 0.018) / 2 - (0 + 0.002) / 2 = 0.016
    np.testing.assert_allclose(book.gross_returns.to_numpy(), [0.008, 0.016, 0.0225])
    # day 3's book (N9, N7 long) differs from the held one (N8, N9) by one long name
    np.testing.assert_allclose(book.turnover.to_numpy(), [1.0, 0.0, 0.5])
    np.testing.assert_allclose(book.net_returns.to_numpy(), [0.006, 0.016, 0.0225 - 0.001])
    with pytest.raises(ValueError, match="hold_days"):
        decile_book(dates, tickers, signal, nxt, hold_days=0)


def test_decile_book_default_decile_and_drawdown():
    dates, tickers, signal, nxt = _hand_book_inputs()
    nxt = nxt.copy()
    nxt[(tickers == "N9") & (dates == DAYS[1])] = -0.05  # the long name crashes on day 2
    book = decile_book(dates, tickers, signal, nxt)  # quantile 0.1 -> k = 1: long N9, short N0
    # day 1: 0.009 - 0 - 20 bps opening; day 2: -0.05 - 0 (no trade); day 3: 0.027
    np.testing.assert_allclose(book.net_returns.to_numpy(), [0.009 - 0.002, -0.05, 0.027])
    np.testing.assert_allclose(book.turnover.to_numpy(), [1.0, 0.0, 0.0])
    assert book.max_drawdown == pytest.approx(-0.05)


def test_decile_book_matches_the_metrics_long_short_returns():
    """The book's legs are those of registry.metrics.long_short_returns, ties, NaNs and thin days included."""
    rng = np.random.default_rng(7)
    days = pd.bdate_range("2022-01-03", periods=12)
    dates = np.repeat(days.to_numpy(), 23)
    tickers = np.tile([f"T{i}" for i in range(23)], len(days))
    signal = np.round(rng.normal(size=len(dates)), 1)  # rounding makes ties at the decile edges
    nxt = rng.normal(0, 0.02, size=len(dates))
    signal[rng.random(len(dates)) < 0.1] = np.nan
    nxt[rng.random(len(dates)) < 0.05] = np.nan
    signal[dates == days[3]] = 0.5  # an all-equal forecast holds nothing
    thin = (dates == days[5]) & (np.arange(len(dates)) % 23 >= 4)
    signal[thin] = np.nan  # 4 names: no book that day

    book = decile_book(dates, tickers, signal, nxt)
    reference = long_short_returns(dates, signal, nxt)
    pd.testing.assert_series_equal(book.gross_returns, reference, check_names=False, check_index_type=False,
                                   check_freq=False)
    assert days[5] not in book.gross_returns.index
    assert book.gross_returns[days[3]] == 0.0
    weights = decile_weights(dates, tickers, signal, nxt)
    legs = weights.groupby("date")["weight"].agg(lambda w: (w[w > 0].sum(), w[w < 0].sum()))
    for day, (long_sum, short_sum) in legs.items():
        if day != days[3]:
            assert long_sum == pytest.approx(1.0) and short_sum == pytest.approx(-1.0)
    assert (weights.loc[weights["date"] == days[3], "weight"] == 0).all()
    # the day after the all-equal day reopens both legs from nothing
    assert book.turnover[days[4]] == pytest.approx(1.0)


def test_rank_ic_tstat_by_hand():
    daily = pd.Series([0.1, 0.2, 0.3, 0.4], index=pd.bdate_range("2020-01-01", periods=4))
    # mean 0.25, std (ddof 1) sqrt(0.05 / 3); with horizon 2 there are n / h = 2 independent days
    expected = 0.25 / (math.sqrt(0.05 / 3) / math.sqrt(4 / 2))
    assert rank_ic_tstat(daily, 2) == pytest.approx(expected)
    assert rank_ic_tstat(daily, 2) == pytest.approx(2.7386128, rel=1e-6)
    assert rank_ic_tstat(daily, 1) == pytest.approx(expected * math.sqrt(2))
    assert math.isnan(rank_ic_tstat(pd.Series([0.1]), 5))
    assert math.isnan(rank_ic_tstat(pd.Series([0.1, 0.1, 0.1]), 5))
    with_nan = pd.Series([0.1, np.nan, 0.2, 0.3, 0.4])
    assert overlap_adjusted_tstat(with_nan, overlap=2) == pytest.approx(expected)


def test_the_gate_uses_the_same_tstat():
    from registry.gate import skill_confidence

    series = pd.Series(np.random.default_rng(3).normal(0.02, 0.1, size=60))
    assert skill_confidence(series, overlap=5)["t"] == pytest.approx(rank_ic_tstat(series, 5))


def test_per_year_rank_ic_groups_by_calendar_year():
    index = pd.to_datetime(["2019-12-30", "2019-12-31", "2020-01-02", "2020-01-03", "2020-01-06"])
    daily = pd.Series([0.1, 0.3, -0.2, 0.0, np.nan], index=index)
    out = per_year_rank_ic(daily)
    assert list(out) == [2019, 2020]
    assert out[2019] == pytest.approx(0.2)
    assert out[2020] == pytest.approx(-0.1)
    assert per_year_rank_ic(pd.Series(dtype=float)) == {}


def _panel_table(days: pd.DatetimeIndex, n_names: int, *, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(days) * n_names
    realized = rng.normal(0, 0.03, size=n)
    return pd.DataFrame({
        "date": np.repeat(days.to_numpy(), n_names),
        "ticker": np.tile([f"T{i:02d}" for i in range(n_names)], len(days)),
        "expected_return": realized + rng.normal(0, 0.05, size=n),
        "prob_up": 0.5,
        "adj_close": 100.0,
        "realized": realized,
        "next_return": realized / 5 + rng.normal(0, 0.005, size=n),
        "momentum_20": rng.normal(size=n),
        "reversal_5": rng.normal(size=n),
    })


def test_report_row_fields():
    days = pd.bdate_range("2020-12-01", "2021-01-29")
    table = _panel_table(days, 12, seed=1)
    row = report_row(table, horizon=5, cost_bps=10.0)
    assert tuple(row) == REPORT_ROW_KEYS
    daily = daily_ic(table["date"], table["expected_return"], table["realized"], rank=True)
    assert row["rank_ic"] == pytest.approx(daily.mean())
    assert row["rank_ic_t"] == pytest.approx(rank_ic_tstat(daily, 5))
    assert row["rank_ic"] > 0.2  # the signal is the realized return plus noise
    assert set(row["per_year"]) == {2020, 2021} and row["n_dates"] == len(days)
    assert row["annual_return"] < row["gross_annual_return"]
    assert 0 < row["turnover"] <= 2 and row["max_drawdown"] <= 0
    free = report_row(table, horizon=5, cost_bps=0.0)
    assert free["annual_return"] == pytest.approx(free["gross_annual_return"])


def test_report_from_tables_adds_the_protocol_and_format_prints_it():
    days = pd.bdate_range("2020-12-01", "2021-01-29")
    table_a = _panel_table(days, 12, seed=1)
    table_b = table_a.assign(expected_return=_panel_table(days, 12, seed=2)["expected_return"])
    table_b.loc[table_b["date"] == days[0], "expected_return"] = np.nan  # b did not score the first day
    report = report_from_tables({"a": table_a, "b": table_b}, horizon=5, cost_bps=20.0)
    assert set(report) >= {"models", "baselines", "window", "horizon", "protocol", "cost_bps"}
    assert report["cost_bps"] == 20.0 and report["window"]["dates"] == len(days) - 1
    assert set(report["protocol"]["models"]) == {"a", "b"}
    assert set(report["protocol"]["baselines"]) == set(BASELINE_NAMES)
    assert report["protocol"]["models"]["a"]["n_dates"] == len(days) - 1
    assert report["protocol"]["models"]["a"]["rank_ic"] == pytest.approx(report["models"]["a"]["rank_ic"])

    text = format_report(report, markdown=True)
    assert ("| model | IC | ICIR | Rank IC | Rank ICIR | Rank IC t | Ann. return (net, 20 bps) | IR | Turnover "
            "| Max DD |") in text
    assert "| model | 2020 | 2021 |" in text
    assert "| baseline: momentum_20 |" in text
    plain = format_report(report)
    assert "Rank IC by year" in plain and "baseline: zero" in plain


def _business_days(start: str, end: str) -> np.ndarray:
    return pd.bdate_range(start, end).to_numpy()


def test_yearly_splits_invariants():
    dates = _business_days("2015-06-01", "2018-03-30")
    horizon, gap = 5, 5
    splits = yearly_splits(np.repeat(dates, 2), horizon=horizon, gap_days=gap, min_train_days=100)
    # 2015 starts the data (no training dates before it); 2016..2018 each have >= 105 dates before them
    assert [s.test_start.year for s in splits] == [2016, 2017, 2018]
    assert [s.fold for s in splits] == [0, 1, 2]
    for split in splits:
        years = pd.DatetimeIndex(split.test_dates).year
        assert (years == years[0]).all()
        whole_year = dates[pd.DatetimeIndex(dates).year == years[0]]
        np.testing.assert_array_equal(split.test_dates, whole_year)  # every date of the year in the data
        assert not np.isin(split.test_dates, split.train_dates).any()
        between = np.searchsorted(dates, split.test_dates[0]) - np.searchsorted(dates, split.train_dates[-1]) - 1
        assert between >= horizon and split.gap_days == gap
        assert split.train_dates[0] == dates[0]  # expanding window
        assert len(split.train_dates) >= 100
    assert splits[-1].test_end == pd.Timestamp("2018-03-30")  # the last year is partial where the data ends


def test_yearly_splits_needs_enough_history_and_a_purge():
    dates = _business_days("2015-06-01", "2017-03-30")
    first = yearly_splits(dates, horizon=5, gap_days=5, min_train_days=300)
    assert [s.test_start.year for s in first] == [2017]  # 2016 has only ~150 dates before it
    with pytest.raises(ValueError, match="no calendar year"):
        yearly_splits(dates, horizon=5, gap_days=5, min_train_days=1000)
    with pytest.raises(ValueError, match="shorter than the label horizon"):
        yearly_splits(dates, horizon=5, gap_days=3, min_train_days=100)
