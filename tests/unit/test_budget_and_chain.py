"""Framework-free parts of issue 16 items 3 and 4: the month-end projection (``monitoring.budget``),
the monthly limit in front of a provider budget, and the compliance records' hash chain
(``inference.records_chain``)."""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np
import pytest

from features.providers.base import BudgetExceededError, DailyBudget, monthly_limit_message
from features.services.monthly_budget import MonthlyBudget, MonthlyLimitExceededError
from inference.records_chain import GENESIS_HASH, Entry, canonical_output, chain, record_hash, verify
from monitoring.alert_rules import monthly_cost_conditions
from monitoring.budget import month_key, project_month_end, rate_window

# --------------------------------------------------------------------------------------------------
# the month-end projection


def test_projection_uses_the_recent_daily_rate_for_today_and_the_days_left():
    # 10 August: $14.00 spent before today, $0.50 so far today; the last 7 complete days cost $2/day
    p = project_month_end(day=date(2025, 8, 10), month_to_date_usd=14.5, today_usd=0.5,
                          recent_daily_usd=[2.0] * 7, limit_usd=50.0)
    # today counts at least at the rate ($2), then 21 days left at $2
    assert p.projected_usd == pytest.approx(14.0 + 2.0 + 21 * 2.0)
    assert p.days_left == 21 and p.rate_days == 7 and p.month == "2025-08"
    assert p.over_limit and not p.month_to_date_over_limit
    assert "average of the last 7 complete days" in p.method


def test_a_day_that_already_spent_more_than_the_rate_keeps_what_it_spent():
    p = project_month_end(day=date(2025, 2, 27), month_to_date_usd=30.0, today_usd=12.0,
                          recent_daily_usd=[1.0, 1.0], limit_usd=50.0)
    assert p.projected_usd == pytest.approx(18.0 + 12.0 + 1 * 1.0)  # February 2025: 28 days
    assert not p.over_limit


def test_without_history_the_projection_is_linear_on_the_elapsed_days():
    p = project_month_end(day=date(2025, 8, 4), month_to_date_usd=8.0, today_usd=3.0, recent_daily_usd=[],
                          limit_usd=50.0)
    assert p.projected_usd == pytest.approx(8.0 / 4 * 31) and p.rate_days == 0
    assert p.over_limit and "elapsed days" in p.method


def test_the_rate_window_does_not_reach_before_the_first_record_nor_include_today():
    assert rate_window(date(2025, 8, 10), first_recorded=date(2025, 7, 1)) == (date(2025, 8, 3), date(2025, 8, 9))
    assert rate_window(date(2025, 8, 1), first_recorded=date(2025, 7, 29)) == (date(2025, 7, 29), date(2025, 7, 31))
    assert rate_window(date(2025, 8, 10), first_recorded=date(2025, 8, 10)) is None
    assert rate_window(date(2025, 8, 10), first_recorded=None) is None


def test_monthly_alert_conditions_are_keyed_by_month():
    over = project_month_end(day=date(2025, 8, 20), month_to_date_usd=51.2, today_usd=1.0,
                             recent_daily_usd=[1.0], limit_usd=50.0)
    (exceeded,) = monthly_cost_conditions(over)
    assert exceeded.kind == "cost_limit_exceeded" and exceeded.key == "2025-08"
    assert exceeded.message == "Monthly cost limit exceeded: $51.20 > $50.00"
    projected = project_month_end(day=date(2025, 8, 20), month_to_date_usd=40.0, today_usd=1.0,
                                  recent_daily_usd=[2.0], limit_usd=50.0)
    (warning,) = monthly_cost_conditions(projected)
    assert warning.kind == "cost_projection" and warning.key == "2025-08" and warning.severity == "warning"
    assert warning.message.startswith("Projected month-end cost $63.00 > monthly limit $50.00")  # 39 + 2 + 11 x 2
    calm = project_month_end(day=date(2025, 8, 20), month_to_date_usd=10.0, today_usd=0.5,
                             recent_daily_usd=[0.5], limit_usd=50.0)
    assert monthly_cost_conditions(calm) == [] and month_key(date(2025, 1, 31)) == "2025-01"


def test_the_monthly_limit_stops_a_provider_budget_with_its_own_message():
    budget = MonthlyBudget(DailyBudget(10.0, 1.0), month_limit_usd=50.0, month_spent_usd=49.99)
    budget.check(0.01)  # exactly the limit: allowed
    budget.charge(0.01)
    assert budget.spent_usd == pytest.approx(1.01)  # the daily budget's attributes are the wrapped one's
    with pytest.raises(BudgetExceededError) as caught:
        budget.check(1.21)
    assert isinstance(caught.value, MonthlyLimitExceededError)
    assert str(caught.value) == monthly_limit_message(51.21, 50.0) == "Monthly cost limit exceeded: $51.21 > $50.00"
    assert caught.value.reason == "budget_exceeded"
    # under the monthly limit, the daily one still applies, with the daily message
    daily_first = MonthlyBudget(DailyBudget(10.0, 9.99), month_limit_usd=50.0, month_spent_usd=20.0)
    with pytest.raises(BudgetExceededError, match=r"^Daily cost limit exceeded: \$10\.99 > \$10\.00$"):
        daily_first.check(1.0)


# --------------------------------------------------------------------------------------------------
# the hash chain


def _entries(n: int) -> list[Entry]:
    start = datetime(2025, 8, 1, 14, 30, tzinfo=UTC)
    return [Entry(kind="prediction", created_at=start + timedelta(seconds=i), model_name="ensemble",
                  model_version="1.0.0", model_version_ref=7, ticker=f"T{i:02d}", input_hash=f"{i:064x}",
                  output=canonical_output({"prediction": 100.0 + i, "expected_return": 0.01 * i, "prob_up": 0.5}),
                  requester="u-abc") for i in range(n)]


def test_chain_links_each_record_to_the_previous_hash_and_verifies():
    rows = list(chain(_entries(5), last_seq=0, last_hash=GENESIS_HASH))
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5] and rows[0]["prev_hash"] == GENESIS_HASH
    assert all(rows[i]["prev_hash"] == rows[i - 1]["record_hash"] for i in range(1, 5))
    result = verify(rows, head_seq=5, head_hash=rows[-1]["record_hash"])
    assert result.ok and result.checked == 5 and result.last_hash == rows[-1]["record_hash"]


def test_an_edited_record_is_reported_once_by_its_id():
    rows = list(chain(_entries(5), last_seq=0, last_hash=GENESIS_HASH))
    rows[2] = {**rows[2], "output": rows[2]["output"].replace("102.0", "999.0")}
    result = verify(rows, head_seq=5, head_hash=rows[-1]["record_hash"])
    assert [(p.seq, p.kind) for p in result.problems] == [(3, "changed")]
    # rewriting the hash too breaks the next record's link
    rows[2] = {**rows[2], "record_hash": record_hash(**{k: rows[2][k] for k in (
        "prev_hash", "seq", "kind", "created_at", "model_name", "model_version", "model_version_ref", "ticker",
        "input_hash", "output", "requester")})}
    result = verify(rows, head_seq=5, head_hash=rows[-1]["record_hash"])
    assert [(p.seq, p.kind) for p in result.problems] == [(4, "broken_link")]


def test_deleted_records_are_reported_by_their_ids_in_the_middle_and_at_the_end():
    rows = list(chain(_entries(6), last_seq=0, last_hash=GENESIS_HASH))
    head = rows[-1]["record_hash"]
    result = verify([r for r in rows if r["seq"] != 4], head_seq=6, head_hash=head)
    assert [(p.seq, p.kind) for p in result.problems] == [(4, "missing")] and "record 4 missing" in result.problems[0].message
    result = verify(rows[:4], head_seq=6, head_hash=head)
    assert [(p.seq, p.kind) for p in result.problems] == [(5, "missing")] and "records 5..6" in result.problems[0].message


def test_verification_starts_from_a_checkpoint():
    rows = list(chain(_entries(6), last_seq=0, last_hash=GENESIS_HASH))
    kept = rows[3:]
    assert verify(kept, start_seq=3, start_hash=rows[2]["record_hash"], head_seq=6, head_hash=rows[-1]["record_hash"]).ok
    assert not verify(kept, head_seq=6).ok  # without the checkpoint, records 1..3 are missing


def test_canonical_output_is_stable_and_rejects_nothing_finite():
    assert canonical_output({"b": 1.5, "a": date(2025, 8, 1), "n": float("nan")}) == '{"a":"2025-08-01","b":1.5,"n":null}'
    # every kind a prediction record carries, builtin and numpy, nested: the same text each way in
    mixed = {"f": np.float64(0.25), "inf": np.float64("inf"), "i": np.int64(3), "b": True, "z": False, "none": None,
             "t": (1, 2.5, "x"), "nested": OrderedDict(k=[float("-inf"), date(2025, 8, 1)]), 7: "seven",
             "at": datetime(2025, 8, 1, 16, 0, tzinfo=timezone(timedelta(hours=-4))), "n": 5, "s": "AAPL"}
    assert canonical_output(mixed) == (
        '{"7":"seven","at":"2025-08-01T20:00:00.000000+00:00","b":true,"f":0.25,"i":3,"inf":null,"n":5,'
        '"nested":{"k":[null,"2025-08-01"]},"none":null,"s":"AAPL","t":[1,2.5,"x"],"z":false}')
    with pytest.raises(ValueError):
        record_hash(prev_hash=GENESIS_HASH, seq=1, kind="prediction", created_at=datetime(2025, 8, 1),
                    model_name="m", model_version="1", model_version_ref=None, ticker="T", input_hash="h",
                    output="{}", requester="r")
