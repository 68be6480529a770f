"""Integer counters in the Django cache (request metrics, prediction-cache hits, throttles)."""

from __future__ import annotations

from typing import Any

from django.core.cache import cache as default_cache


def incr_counter(key: str, delta: int, *, ttl: float | None = None, cache: Any = None) -> int:
    """Add ``delta`` to the counter ``key``, creating it with ``ttl`` seconds to live (None: forever)
    when missing; returns the new value. Atomic on Redis; when two processes create the counter at
    once, ``add`` lets one win and the other increments."""
    cache = cache if cache is not None else default_cache
    try:
        return cache.incr(key, delta)
    except ValueError:  # missing: the first increment of this counter
        if cache.add(key, delta, ttl):
            return delta
        return cache.incr(key, delta)
