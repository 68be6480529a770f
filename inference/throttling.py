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

``FailedAuthThrottle`` counts what these never see, as DRF refuses it before throttling: requests
with a missing or bad token, per client address (``count_failed_auth``, ``refuse_failed_auth``).
"""

from __future__ import annotations

import threading
import time

from rest_framework import exceptions
from rest_framework.settings import api_settings
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


# --------------------------------------------------------------------------------------------------
# failed authentication, per client address

DEFAULT_FAILED_AUTH_RATE = "30/minute"
_FAILED = (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)


class FailedAuthThrottle(SimpleRateThrottle):
    """Requests with no, a malformed or a bad token, counted per client address in fixed windows
    (``DEFAULT_THROTTLE_RATES["failed_auth"]``, ``API_THROTTLE_FAILED_AUTH``, default 30 a minute).

    DRF authenticates (and refuses) before it throttles, so the anonymous throttle never sees these
    requests. Once an address has used up its failures of the window, every request from it that
    needs a token check is refused with 429 until the window ends, before the token is looked up (a
    token its worker already accepted keeps working). The address is ``REMOTE_ADDR`` unless
    ``API_NUM_PROXIES`` says how many proxies of this deployment append to ``X-Forwarded-For`` (a
    client's own ``X-Forwarded-For`` is never trusted)."""

    scope = "failed_auth"

    def get_rate(self):
        # read at every use, so settings changes (and tests' override_settings) apply
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope, DEFAULT_FAILED_AUTH_RATE) or None

    def get_cache_key(self, request, view=None):
        return f"throttle:fw:{self.scope}:{self.get_ident(request)}"

    def _window(self, request) -> tuple[str, float]:
        now = time.time()
        window = int(now // self.duration)
        return f"{self.get_cache_key(request)}:w{window}", (window + 1) * self.duration - now

    def refusal(self, request) -> float | None:
        """Seconds until this address may try again, or None while it has failures left."""
        if self.rate is None:
            return None
        key, left = self._window(request)
        try:
            used = self.cache.get(key) or 0
        except Exception:  # noqa: BLE001 - a cache outage must not refuse every request
            return None
        return max(left, 1.0) if used >= self.num_requests else None

    def record(self, request) -> float | None:
        """Count one failure; seconds to wait when it was over the limit, else None."""
        if self.rate is None:
            return None
        key, left = self._window(request)
        try:
            used = incr_counter(key, 1, ttl=self.duration + 1, cache=self.cache)
        except Exception:  # noqa: BLE001
            return None
        return max(left, 1.0) if used > self.num_requests else None


def _throttled(wait: float) -> exceptions.Throttled:
    return exceptions.Throttled(wait=wait, detail="Too many failed authentication attempts from this address.")


def refuse_failed_auth(request) -> None:
    """Raise ``Throttled`` (429) when ``request``'s address has used up its failed authentications of
    this window: called before a token is looked up."""
    wait = FailedAuthThrottle().refusal(request)
    if wait is not None:
        raise _throttled(wait)


def count_failed_auth(request, exc: Exception) -> Exception:
    """For an API view's exception: a failed authentication (401) is counted for the client's address,
    and becomes ``Throttled`` (429) once the address is over its limit; anything else is unchanged."""
    if not isinstance(exc, _FAILED):
        return exc
    wait = FailedAuthThrottle().record(request)
    return _throttled(wait) if wait is not None else exc
