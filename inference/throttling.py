"""Constant-time throttles for the inference API.

DRF's ``UserRateThrottle`` keeps every request timestamp of the window in one cache value, so at
100,000 requests a minute each request reads and writes a list of up to 100,000 floats. These
throttles count requests per fixed window with one atomic ``incr`` instead, with the same scopes
and rates (``DEFAULT_THROTTLE_RATES["user"]`` and ``["anon"]``).
"""

from __future__ import annotations

import time

from rest_framework.throttling import SimpleRateThrottle


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
        try:
            count = self.cache.incr(self.key)
        except ValueError:  # first request of the window
            if self.cache.add(self.key, 1, self.duration + 1):
                count = 1
            else:
                count = self.cache.incr(self.key)
        except Exception:  # noqa: BLE001 - a cache outage must not refuse every request
            return True
        return count <= self.num_requests

    def wait(self):
        return max(self._window_end - time.time(), 0.0)


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
