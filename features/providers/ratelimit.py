"""Per-provider request rate limiting: requests per minute (token bucket) and per day (counter).

The per-minute limit is a token bucket refilled at ``per_minute / 60`` tokens per second with a
capacity of ``burst`` tokens (default 1: requests are evenly spaced, so N requests take at least
``(N - burst) * 60 / per_minute`` seconds). Each ``acquire`` reserves its slot under a lock and then
sleeps outside it, so several threads share one limiter fairly.

The per-day limit counts requests per calendar day (``today()``, UTC by default: Alpha Vantage and
Tiingo reset their daily quotas at midnight UTC/ET, close enough for a conservative count). When it is
used up ``acquire`` raises ``DailyLimitReached`` at once instead of sleeping until tomorrow.

Clock, sleep and today are injectable so tests can run on a fake clock.

``RateLimiter`` counts one process's requests. ``SharedRateLimiter`` keeps the same limits in a
``CounterStore`` every worker on every machine shares (``RedisCounterStore`` here; the database
store lives with the Django code in ``features.services.limits``), so two workers never make twice
the calls. The daily cost budget uses the same store (``features.providers.base.SharedBudget``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, Protocol

__all__ = ["CounterStore", "DailyLimitReached", "RateLimiter", "RedisCounterStore", "SharedRateLimiter",
           "get_limiter", "reset_limiters"]


class DailyLimitReached(Exception):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"daily request limit reached ({limit}/day)")


def _utc_today() -> date:
    return datetime.now(UTC).date()


class RateLimiter:
    def __init__(
        self,
        per_minute: float | None,
        per_day: int | None = None,
        *,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        today: Callable[[], date] = _utc_today,
    ) -> None:
        if per_minute is not None and per_minute <= 0:
            raise ValueError("per_minute must be positive (or None for no per-minute limit)")
        if per_day is not None and per_day < 0:
            raise ValueError("per_day must be >= 0 (or None for no daily limit)")
        self.per_minute = per_minute
        self.per_day = per_day
        self.burst = max(1.0, float(burst))
        self._clock = clock
        self._sleep = sleep
        self._today = today
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._updated = clock()
        self._day: date | None = None
        self._day_count = 0
        self.total_wait = 0.0
        self.acquired = 0

    @property
    def interval(self) -> float:
        return 0.0 if not self.per_minute else 60.0 / self.per_minute

    @property
    def used_today(self) -> int:
        with self._lock:
            return self._day_count if self._day == self._today() else 0

    def remaining_today(self) -> int | None:
        if self.per_day is None:
            return None
        return max(0, self.per_day - self.used_today)

    def _reserve(self) -> float:
        """Take one token (possibly going into debt) and return how long the caller must wait."""
        today = self._today()
        if self._day != today:
            self._day, self._day_count = today, 0
        if self.per_day is not None and self._day_count >= self.per_day:
            raise DailyLimitReached(self.per_day)
        self._day_count += 1
        self.acquired += 1
        if not self.per_minute:
            return 0.0
        now = self._clock()
        rate = self.per_minute / 60.0
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * rate)
        self._updated = now
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / rate

    def acquire(self) -> float:
        """Block until one request may go out; return the seconds waited. Raises DailyLimitReached."""
        with self._lock:
            wait = self._reserve()
            self.total_wait += wait
        if wait > 0:
            self._sleep(wait)
        return wait


_registry: dict[str, RateLimiter] = {}
_registry_lock = threading.Lock()


def get_limiter(name: str, per_minute: float | None, per_day: int | None = None) -> RateLimiter:
    """The process-wide limiter of provider ``name`` (created on first use; limits refreshed if changed)."""
    with _registry_lock:
        limiter = _registry.get(name)
        if limiter is None or limiter.per_minute != per_minute or limiter.per_day != per_day:
            limiter = RateLimiter(per_minute, per_day)
            _registry[name] = limiter
        return limiter


def reset_limiters() -> None:
    with _registry_lock:
        _registry.clear()


# --------------------------------------------------------------------------------------------------
# Limits shared by every process and machine
# --------------------------------------------------------------------------------------------------


class CounterStore(Protocol):
    """Atomic counters every worker sees (Redis, or the database: ``features.services.limits``)."""

    def reserve_slot(self, key: str, interval: float) -> float:
        """Take the next free send time of ``key`` (spaced ``interval`` seconds apart); return the
        seconds until it (0 when the slot is free now)."""

    def take(self, key: str, *, limit: float | None, amount: float = 1.0, floor: float = 0.0) -> float | None:
        """Add ``amount`` to the counter ``key`` (first raised to ``floor``) unless that would pass
        ``limit``; return the new total, or None when refused (nothing added)."""

    def value(self, key: str) -> float:
        """The counter's current total (0 when unset)."""


class SharedRateLimiter:
    """``RateLimiter``'s interface over a ``CounterStore``: N workers on M machines together send at
    most ``per_minute`` requests a minute (evenly spaced, as the local limiter) and ``per_day`` a
    day. ``used_before`` seeds today's count (requests recorded before the counter existed)."""

    def __init__(self, name: str, per_minute: float | None, per_day: int | None, *, store: CounterStore,
                 used_before: int = 0, sleep: Callable[[float], None] = time.sleep,
                 today: Callable[[], date] = _utc_today) -> None:
        if per_minute is not None and per_minute <= 0:
            raise ValueError("per_minute must be positive (or None for no per-minute limit)")
        self.name = name
        self.per_minute = per_minute
        self.per_day = per_day
        self.store = store
        self._floor = max(0, int(used_before))
        self._sleep = sleep
        self._today = today
        self.total_wait = 0.0
        self.acquired = 0

    def _day_key(self) -> str:
        return f"requests:{self.name}:{self._today().isoformat()}"

    @property
    def used_today(self) -> int:
        return int(max(self.store.value(self._day_key()), self._floor))

    def remaining_today(self) -> int | None:
        if self.per_day is None:
            return None
        return max(0, self.per_day - self.used_today)

    def acquire(self) -> float:
        if self.store.take(self._day_key(), limit=self.per_day, floor=self._floor) is None:
            raise DailyLimitReached(int(self.per_day or 0))
        self.acquired += 1
        if not self.per_minute:
            return 0.0
        wait = self.store.reserve_slot(f"slot:{self.name}", 60.0 / self.per_minute)
        if wait > 0:
            self.total_wait += wait
            self._sleep(wait)
        return wait


_RESERVE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
redis.call('SET', KEYS[1], string.format('%.6f', tat + tonumber(ARGV[1])), 'EX', ARGV[2])
return string.format('%.6f', tat - now)
"""
_TAKE = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[3])
if cur < floor then cur = floor end
local new = cur + tonumber(ARGV[1])
if ARGV[2] ~= '' and new > tonumber(ARGV[2]) + 1e-9 then return false end
redis.call('SET', KEYS[1], string.format('%.9f', new), 'EX', ARGV[4])
return string.format('%.9f', new)
"""


class RedisCounterStore:
    """``CounterStore`` in Redis: each operation is one Lua script (atomic on the server), with the
    server's clock, so machines with skewed clocks still space their requests correctly."""

    def __init__(self, client: Any, *, prefix: str = "investml:limits:", ttl_seconds: int = 3 * 86_400) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = int(ttl_seconds)
        self._reserve = client.register_script(_RESERVE_SLOT)
        self._take = client.register_script(_TAKE)

    def reserve_slot(self, key: str, interval: float) -> float:
        return float(self._reserve(keys=[self.prefix + key], args=[f"{interval:.6f}", max(60, int(interval) + 60)]))

    def take(self, key: str, *, limit: float | None, amount: float = 1.0, floor: float = 0.0) -> float | None:
        out = self._take(keys=[self.prefix + key],
                         args=[repr(float(amount)), "" if limit is None else repr(float(limit)), repr(float(floor)),
                               self.ttl])
        return None if out is None else float(out)

    def value(self, key: str) -> float:
        raw = self.client.get(self.prefix + key)
        return float(raw) if raw is not None else 0.0
