"""Provider limits and the API budget counted where every worker sees them.

With ``REDIS_URL`` the counters live in Redis (``RedisCounterStore``: one Lua script per operation);
without it, in the database (``DatabaseCounterStore``: single conditional UPDATE statements, atomic
on SQLite and PostgreSQL alike). Either way two workers, on one machine or several, never send
twice the configured requests or spend twice the day's budget.
"""

from __future__ import annotations

import time
from datetime import date, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from features.models import SharedCounter
from features.providers.base import SharedBudget
from features.providers.ratelimit import CounterStore, RedisCounterStore, SharedRateLimiter
from features.services.monthly_budget import MonthlyBudget, with_monthly_limit
from investml.ledger import api_calls_for_day, costs_by_category

KEEP_DAYS = 7  # day-keyed rows older than this are deleted as new days begin
_redis_clients: dict[str, object] = {}


class DatabaseCounterStore:
    """``CounterStore`` on the ``SharedCounter`` table."""

    def _row(self, key: str) -> None:
        if not SharedCounter.objects.filter(key=key).exists():
            try:
                with transaction.atomic():
                    SharedCounter.objects.create(key=key, value=0.0)
            except IntegrityError:  # another worker created it first
                pass
            cutoff = timezone.now() - timedelta(days=KEEP_DAYS)
            SharedCounter.objects.filter(updated_at__lt=cutoff).delete()

    def reserve_slot(self, key: str, interval: float) -> float:
        self._row(key)
        for _ in range(1000):
            tat = SharedCounter.objects.filter(key=key).values_list("value", flat=True).get()
            now = time.time()
            start = max(tat, now)
            # compare-and-set: only one of two racing workers moves the slot from ``tat``
            if SharedCounter.objects.filter(key=key, value=tat).update(value=start + interval):
                return start - now
        raise RuntimeError(f"could not reserve a request slot for {key!r}")  # pragma: no cover

    def take(self, key: str, *, limit: float | None, amount: float = 1.0, floor: float = 0.0) -> float | None:
        self._row(key)
        SharedCounter.objects.filter(key=key, value__lt=floor).update(value=floor)
        rows = SharedCounter.objects.filter(key=key)
        if limit is not None:
            rows = rows.filter(value__lte=limit - amount + 1e-9)
        if not rows.update(value=F("value") + amount):
            return None
        return self.value(key)

    def value(self, key: str) -> float:
        found = SharedCounter.objects.filter(key=key).values_list("value", flat=True).first()
        return float(found) if found is not None else 0.0


def counter_store() -> CounterStore:
    """Redis when ``REDIS_URL`` is set, else the database. Redis keys start with
    ``ML_SHARED_LIMITS_PREFIX`` (two deployments on one Redis keep apart)."""
    url = getattr(settings, "REDIS_URL", "")
    if not url:
        return DatabaseCounterStore()
    client = _redis_clients.get(url)
    if client is None:
        import redis

        client = _redis_clients[url] = redis.Redis.from_url(url)
    return RedisCounterStore(client, prefix=getattr(settings, "ML_SHARED_LIMITS_PREFIX", "investml:limits:"))


def shared_limiter(*, provider: str, per_minute: float | None, per_day: int | None,
                   day: date | None = None) -> SharedRateLimiter:
    """The provider's limiter over the shared store, seeded with today's recorded requests."""
    day = day or timezone.localdate()
    return SharedRateLimiter(provider, per_minute, per_day, store=counter_store(),
                             used_before=api_calls_for_day(day=day, source=provider), today=lambda: day)


def shared_budget(*, day: date | None = None) -> MonthlyBudget:
    """Today's API budget (``ML_DAILY_COST_LIMIT_USD``) over the shared store: the day's non-API
    costs from the cost records, the API spend from the shared counter (seeded from the records);
    behind the monthly limit (``ML_MONTHLY_COST_LIMIT_USD``, ``features.services.monthly_budget``),
    checked first. The ``SharedBudget``'s attributes are read through the wrapper."""
    day = day or timezone.localdate()
    costs = {category: float(usd) for category, usd in costs_by_category(day=day).items()}
    api = costs.pop("data_api", 0.0)
    daily = SharedBudget(limit_usd=float(settings.ML_DAILY_COST_LIMIT_USD), store=counter_store(),
                         key=f"spend:data_api:{day.isoformat()}", other_usd=sum(costs.values()), api_before_usd=api)
    return with_monthly_limit(daily, day=day)
