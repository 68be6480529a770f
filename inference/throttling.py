"""Constant-time throttles for the inference API.

DRF's ``UserRateThrottle`` keeps every request timestamp of the window in one cache value, so at
100,000 requests a minute each request reads and writes a list of up to 100,000 floats. These
throttles count requests per fixed window instead, with the same scopes and rates
(``DEFAULT_THROTTLE_RATES["user"]`` and ``["anon"]``).

A process does not touch the shared counter on every request: it takes a block of up to
``LEASE_SHARE`` of the rate (at most ``MAX_LEASE`` requests) with one atomic ``incr`` and serves
from it. The total over every process never exceeds the rate; what a block costs is that a process
may hold requests it does not use while another is already refused, at most one block per other
process and window.
"""

from __future__ import annotations

import threading
import time

from rest_framework.throttling import SimpleRateThrottle

from investml.cache_counters import incr_counter

LEASE_SHARE = 0.01
MAX_LEASE = 50

_lock = threading.Lock()
_leases: dict[str, int] = {}  # "<key>:w<window>" -> requests left in this process's block


class _FixedWindowThrottle(SimpleRateThrottle):
    def allow_request(self, request, view):
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        self.now = self.timer()
        window = int(self.now // self.duration)
        self.key = f"{key}:w{window}"
        self._window_end = (window + 1) * self.duration
        with _lock:
            left = _leases.get(self.key, 0)
            if left > 0:
                _leases[self.key] = left - 1
                return True
            if left < 0:  # the window is used up (another block would be refused too)
                return False
        block = max(1, min(MAX_LEASE, int(self.num_requests * LEASE_SHARE)))
        try:  # the window's shared counter, created to outlive the window
            taken = incr_counter(self.key, block, ttl=self.duration + 1, cache=self.cache)
        except Exception:  # noqa: BLE001 - a cache outage must not refuse every request
            return True
        granted = max(0, min(block, self.num_requests - (taken - block)))
        with _lock:
            if len(_leases) > 10_000:  # old windows
                for stale in [k for k in _leases if not k.endswith(f":w{window}")]:
                    del _leases[stale]
            _leases[self.key] = granted - 1 if granted else -1
        return granted > 0

    def wait(self):
        return max(self._window_end - time.time(), 0.0)


def reset_leases() -> None:
    """Forget this process's blocks (tests)."""
    with _lock:
        _leases.clear()


class FixedWindowUserThrottle(_FixedWindowThrottle):
    scope = "user"

    def get_cache_key(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return None  # anonymous requests are the anon throttle's
        return f"throttle:fw:{self.scope}:{request.user.pk}"


class FixedWindowAnonThrottle(_FixedWindowThrottle):
    scope = "anon"

    def get_cache_key(self, request, view):
        if request.user and request.user.is_authenticated:
            return None
        return f"throttle:fw:{self.scope}:{self.get_ident(request)}"
