"""The monthly cost limit on data-provider requests, around whatever enforces the daily one.

``with_monthly_limit(budget)`` wraps a provider budget (``DailyBudget``, ``SharedBudget``...): each
request is first checked against ``ML_MONTHLY_COST_LIMIT_USD`` (the month-to-date from the cost
records when the budget was made, plus what went through this budget since), then against the
wrapped daily budget. Past the monthly limit the request is refused with
``MonthlyLimitExceededError``, a ``BudgetExceededError`` (so every caller stops exactly as at the
daily limit) whose message names the monthly limit: ``Monthly cost limit exceeded: $51.20 > $50.00``.

Every other attribute (``limit_usd``, ``spent_usd``, ``other_usd``...) is the wrapped budget's.
Two workers each see the month-to-date of when their budget was made: the monthly limit can be
passed by at most what runs concurrently, the daily limit (shared counter) stays exact.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from django.utils import timezone

from features.providers.base import Budget, BudgetExceededError, monthly_limit_message
from investml import ledger


class MonthlyLimitExceededError(BudgetExceededError):
    """``str()`` is ``Monthly cost limit exceeded: $51.20 > $50.00`` (month-to-date + cost vs limit)."""

    def __init__(self, spent_plus_cost: float, limit: float, *, symbol: str | None = None,
                 provider: str | None = None):
        super().__init__(spent_plus_cost, limit, symbol=symbol, provider=provider,
                         message=monthly_limit_message(spent_plus_cost, limit))


@dataclass
class MonthlyBudget:
    inner: Budget
    month_limit_usd: float
    month_spent_usd: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def check(self, cost_usd: float) -> None:
        total = self.month_spent_usd + cost_usd
        if round(total, 9) > round(self.month_limit_usd, 9):
            raise MonthlyLimitExceededError(total, self.month_limit_usd)
        self.inner.check(cost_usd)

    def charge(self, cost_usd: float) -> None:
        with self._lock:
            self.month_spent_usd += cost_usd
        self.inner.charge(cost_usd)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("inner", "month_limit_usd", "month_spent_usd", "_lock"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def with_monthly_limit(budget: Budget, *, day: date | None = None) -> MonthlyBudget:
    """``budget`` (today's) with the monthly limit in front of it, seeded with the month-to-date."""
    day = day or timezone.localdate()
    return MonthlyBudget(budget, ledger.monthly_cost_limit(), float(ledger.cost_for_month(day=day)))
