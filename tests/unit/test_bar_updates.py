"""features.bar_updates without Django: what the daily bar update asks for and how a gap's splits and
dividends move stored history (the service around it: tests/integration/test_market_updates.py)."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from features.bar_updates import (
    bulk_window,
    freshness_probe,
    gap_adjustment,
    is_quota_failure,
    normalize_symbols,
    rows_after,
    stale_tickers,
    tickers_split_after,
)


def test_symbols_stale_tickers_and_the_freshness_probe():
    assert normalize_symbols([" aapl", "MSFT", "", "aapl ", "  "]) == ["AAPL", "MSFT"]
    last = {"A": date(2024, 6, 27), "B": date(2024, 6, 28), "C": date(2024, 6, 26)}
    assert stale_tickers(symbols=["A", "B", "C", "NEW"], last=last, as_of=date(2024, 6, 28)) == ["A", "C", "NEW"]
    assert freshness_probe(todo=["A", "C", "NEW"], last=last) == "A"  # the newest stored bar
    assert freshness_probe(todo=["A"], last=last) is None  # alone: nothing to save by probing
    assert freshness_probe(todo=["NEW", "OTHER"], last=last) is None  # no stored bar to compare with


def test_quota_failures_are_the_daily_ones():
    assert is_quota_failure("rate_limited", "Daily request limit reached")
    assert not is_quota_failure("rate_limited", "too many requests per minute")
    assert not is_quota_failure("bad_response", "daily quota")


def test_bulk_window_leaves_stragglers_to_a_backfill():
    as_of = date(2024, 7, 1)  # a Monday
    last = {f"T{i}": date(2024, 6, 27) for i in range(20)} | {"OLD": date(2024, 3, 1)}
    window = bulk_window(stale=[*sorted(last), "NEW"], last=last, as_of=as_of)
    assert window.behind == ["OLD"] and "OLD" not in window.tickers and "NEW" in window.tickers
    assert window.first == date(2024, 6, 28)
    assert window.days == [date(2024, 6, 28), date(2024, 7, 1)]  # the weekend is no trading day
    # a gap the whole universe shares is filled
    shared = bulk_window(stale=["A", "B"], last={"A": date(2024, 5, 1), "B": date(2024, 5, 2)}, as_of=as_of)
    assert shared.behind == [] and shared.first == date(2024, 5, 2)
    assert bulk_window(stale=["NEW"], last={}, as_of=as_of).days == [as_of]


def test_rows_after_keeps_the_new_rows_and_every_row_of_a_new_ticker():
    bars = pd.DataFrame({"ticker": ["A", "A", "B"], "date": pd.to_datetime(["2024-06-27", "2024-06-28", "2024-06-01"])})
    assert rows_after(bars, {"A": date(2024, 6, 27), "B": None}).index.tolist() == [1, 2]


def test_gap_adjustment_of_a_split_and_a_dividend():
    new_bars = pd.DataFrame({"date": pd.to_datetime(["2024-06-28", "2024-07-01"]), "close": [51.0, 52.0]})
    splits = pd.DataFrame({"date": pd.to_datetime(["2024-07-01", "2024-06-20"]), "split_from": [1, 1],
                           "split_to": [2, 4]})
    dividends = pd.DataFrame({"date": pd.to_datetime(["2024-07-01"]), "cash_amount": [1.0]})
    gap = gap_adjustment(new_bars=new_bars, splits=splits, dividends=dividends, stored_last=date(2024, 6, 27),
                         last_close=100.0, recorded=set())
    assert gap.price_ratio == 0.5  # 2:1 on Jul 1; the split before the last stored bar is history
    assert gap.splits == [(date(2024, 7, 1), 2.0)] and gap.dividends == [(date(2024, 7, 1), 1.0)]
    drop = 1.0 - 1.0 / 51.0  # the ex-day's dividend over the previous close
    assert gap.adj_ratio == pytest.approx(0.5 * drop)
    assert gap.new_adj_close.tolist() == pytest.approx([51.0 * drop, 52.0])  # the newest bar's is its close

    again = gap_adjustment(new_bars=new_bars, splits=splits, dividends=dividends, stored_last=date(2024, 6, 27),
                           last_close=100.0, recorded={(date(2024, 7, 1), "split"), (date(2024, 7, 1), "dividend")})
    assert (again.price_ratio, again.adj_ratio, again.splits, again.dividends) == (1.0, 1.0, [], [])


def test_tickers_split_after_their_last_stored_bar():
    actions = pd.DataFrame({"ticker": ["A", "B", "C"], "date": [date(2024, 7, 1), date(2024, 6, 1), date(2024, 7, 1)],
                            "kind": ["split", "split", "dividend"]})
    last = {"A": date(2024, 6, 28), "B": date(2024, 6, 28), "C": date(2024, 6, 28)}
    assert tickers_split_after(actions, last) == {"A"}
    assert tickers_split_after(actions.iloc[:0], last) == set()
