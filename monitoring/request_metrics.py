"""Request latency and error counts per endpoint, shared by every web worker through the cache.

Counters live in per-minute buckets (for alert windows: "average latency over the last 5 minutes")
and in running totals (for Prometheus counters). Each process adds up its requests in memory and
writes the sums to the cache at most every ``FLUSH_SECONDS`` (and before it reads them, and at exit):
one cache write per counter and second instead of six per request, which on the embedded disk cache
was a large part of a prediction's server time. Readers in other processes see a request at most
that late. Redis increments are atomic; the file cache of the embedded mode may lose an increment
under concurrent writes, which is acceptable for monitoring.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from django.core.cache import cache

from investml.cache_counters import incr_counter
from investml.process_exit import at_process_exit

logger = logging.getLogger(__name__)

BUCKET_TTL_SECONDS = 2 * 3600
ENDPOINTS_KEY = "reqm:endpoints"
FLUSH_SECONDS = 1.0

_lock = threading.Lock()
_pending: dict[str, list[int | None]] = {}  # cache key -> [delta, ttl]
_seen_endpoints: set[str] = set()
_last_flush = time.monotonic()


@dataclass(frozen=True)
class EndpointWindow:
    endpoint: str
    requests: int
    errors: int
    total_ms: float

    @property
    def avg_ms(self) -> float:
        return self.total_ms / self.requests if self.requests else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def _minute(now: float | None = None) -> int:
    return int((now if now is not None else time.time()) // 60)


def _slug(endpoint: str) -> str:
    # cache keys must be plain ASCII without spaces (memcached rules, which Django warns about)
    return hashlib.sha1(endpoint.encode()).hexdigest()[:16]


def _add(key: str, delta: int, ttl: int | None) -> None:
    entry = _pending.get(key)
    if entry is None:
        _pending[key] = [delta, ttl]
    else:
        entry[0] += delta


def record_request(*, endpoint: str, status_code: int, duration_ms: float, now: float | None = None) -> None:
    minute = _minute(now)
    micros = int(duration_ms * 1000)
    slug = _slug(endpoint)
    with _lock:
        for scope, ttl in ((f"m{minute}", BUCKET_TTL_SECONDS), ("total", None)):
            _add(f"reqm:{scope}:{slug}:count", 1, ttl)
            _add(f"reqm:{scope}:{slug}:us", micros, ttl)
            if status_code >= 500:
                _add(f"reqm:{scope}:{slug}:errors", 1, ttl)
        _seen_endpoints.add(endpoint)
        due = time.monotonic() - _last_flush >= FLUSH_SECONDS
    if due:
        flush()


def flush() -> None:
    """Write this process's sums to the shared cache now."""
    global _last_flush
    with _lock:
        pending, endpoints = dict(_pending), set(_seen_endpoints)
        _pending.clear()
        _last_flush = time.monotonic()
    if not pending:
        return
    try:
        for key, (delta, ttl) in pending.items():
            incr_counter(key, delta, ttl=ttl)
        known = cache.get(ENDPOINTS_KEY) or []
        if not endpoints.issubset(known):
            cache.set(ENDPOINTS_KEY, sorted({*known, *endpoints}), None)
    except Exception as exc:  # noqa: BLE001 - monitoring must never fail a request; the sums are lost
        logger.warning("could not write request metrics to the cache: %s", exc)


at_process_exit(flush)


def discard() -> None:
    """Drop this process's unwritten sums (tests: one test's requests must not count in the next)."""
    with _lock:
        _pending.clear()


def known_endpoints() -> list[str]:
    flush()
    return list(cache.get(ENDPOINTS_KEY) or [])


def _read(scopes: Iterable[str], endpoint: str) -> EndpointWindow:
    slug = _slug(endpoint)
    keys = [f"reqm:{s}:{slug}:{f}" for s in scopes for f in ("count", "errors", "us")]
    values = cache.get_many(keys)
    total = {f: sum(int(values.get(k, 0)) for k in keys if k.endswith(f":{f}")) for f in ("count", "errors", "us")}
    return EndpointWindow(endpoint, total["count"], total["errors"], total["us"] / 1000.0)


def window(*, minutes: int = 5, now: float | None = None) -> dict[str, EndpointWindow]:
    """Requests per endpoint over the last ``minutes`` full and current minutes."""
    current = _minute(now)
    scopes = [f"m{m}" for m in range(current - minutes + 1, current + 1)]
    return {endpoint: _read(scopes, endpoint) for endpoint in known_endpoints()}


def totals() -> dict[str, EndpointWindow]:
    return {endpoint: _read(["total"], endpoint) for endpoint in known_endpoints()}
