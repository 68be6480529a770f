"""Provider limits and the API budget shared by every worker (features.services.limits).

Each test builds two limiters or budgets over the store the settings select (the database here; Redis
when REDIS_URL is set, as on CI's second pass), standing for two workers on two machines: what one
takes, the other cannot.
"""

from __future__ import annotations

import uuid
from datetime import date

import pytest

from features.providers.base import BudgetExceededError, CallRecord
from features.providers.ratelimit import DailyLimitReached
from features.services.limits import counter_store, shared_budget, shared_limiter
from monitoring.services import record_api_calls, record_cost

pytestmark = pytest.mark.django_db
DAY = date(2024, 7, 1)


def _name() -> str:
    return f"prov-{uuid.uuid4().hex[:8]}"


def test_two_workers_share_the_daily_request_quota_seeded_from_todays_records():
    name = _name()
    record_api_calls(records=[CallRecord(provider=name, endpoint="daily", symbol="AAPL", status=200, bytes=10,
                                         seconds=0.1, cost_usd=0.0, attempt=1)], day=DAY)
    a = shared_limiter(provider=name, per_minute=None, per_day=5, day=DAY)
    b = shared_limiter(provider=name, per_minute=None, per_day=5, day=DAY)
    assert a.used_today == 1 and b.remaining_today() == 4  # the recorded request counts
    taken = 0
    for limiter in (a, b, a, b):
        limiter.acquire()
        taken += 1
    assert a.used_today == b.used_today == 5
    for limiter in (a, b):
        with pytest.raises(DailyLimitReached):
            limiter.acquire()
    assert taken == 4 and b.remaining_today() == 0
    # another day starts from zero
    assert shared_limiter(provider=name, per_minute=None, per_day=5, day=date(2024, 7, 2)).used_today == 0


def test_two_workers_space_their_requests_as_one():
    name = _name()
    waits: list[float] = []
    a = shared_limiter(provider=name, per_minute=600, per_day=None, day=DAY)  # one request per 0.1 s
    b = shared_limiter(provider=name, per_minute=600, per_day=None, day=DAY)
    for limiter in (a, b):
        limiter._sleep = waits.append  # record the waits instead of sleeping them
    for limiter in (a, b, a, b):
        limiter.acquire()
    # the first goes at once (no wait); each later one waits behind every earlier reservation,
    # whichever worker made it
    assert waits == pytest.approx([0.1, 0.2, 0.3], abs=0.05)


def test_two_workers_share_the_days_budget():
    limit = 0.05
    from django.test import override_settings

    with override_settings(ML_DAILY_COST_LIMIT_USD=limit):
        day = date(2024, 7, 3 + uuid.uuid4().int % 20)
        record_cost(day=day, category="compute", source="training", detail="run 1", units=60, unit="cpu_second",
                    cost_usd=0.02)
        a, b = shared_budget(day=day), shared_budget(day=day)
        for budget in (a, b, a):  # 0.02 + 3 x 0.01 = 0.05: exactly the limit
            budget.check(0.01)
        with pytest.raises(BudgetExceededError, match=r"^Daily cost limit exceeded: \$0\.06 > \$0\.05$"):
            b.check(0.01)
        with pytest.raises(BudgetExceededError):
            a.check(0.01)
        assert counter_store().value(a.key) == pytest.approx(0.03)
