"""Limits on failed sign-ins (``/dashboard/login/``, ``/admin/login/``), kept by django-axes in the database.

Two limits within the cool-off (``LOGIN_COOLOFF_MINUTES``, 15):

- ``LOGIN_FAILURE_LIMIT`` (5) failures for one account from one address lock that account out *from
  that address* (guessing one password); the account still signs in from elsewhere, so a stranger
  cannot lock a user out of their own machine;
- ``LOGIN_FAILURE_LIMIT_PER_ADDRESS`` (20) failures from one address over all accounts lock the
  address out (trying one password on many accounts).

axes compares one number with ``AXES_FAILURE_LIMIT``: ``get_failures`` below puts the per-address count
on that scale, so the number reaches the limit exactly when either count reaches its own. A locked-out
request gets 429 and ``dashboard/locked_out.html``; ``python manage.py axes_reset`` (or
``axes_reset_username NAME``) lifts every lockout at once.
"""

from __future__ import annotations

from axes.attempts import get_cool_off_threshold
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username, get_failure_limit
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Sum
from django.http import HttpResponse
from django.shortcuts import render


class LoginLimitHandler(AxesDatabaseHandler):
    def get_failures(self, request, credentials: dict | None = None) -> int:
        recent = AccessAttempt.objects.all()
        if settings.AXES_COOLOFF_TIME is not None:
            recent = recent.filter(attempt_time__gte=get_cool_off_threshold(request))
        from_address = recent.filter(ip_address=request.axes_ip_address)
        username = get_client_username(request, credentials)

        def total(attempts) -> int:
            return attempts.aggregate(n=Sum("failures_since_start"))["n"] or 0

        per_account = total(from_address.filter(username=username))
        per_address = total(from_address)
        limit = get_failure_limit(request, credentials)
        address_limit = max(1, int(settings.LOGIN_FAILURE_LIMIT_PER_ADDRESS))
        # floor(per_address * limit / address_limit) >= limit  <=>  per_address >= address_limit
        return max(per_account, per_address * limit // address_limit)


def client_address(request) -> str | None:
    """The client's address as the API throttles see it: ``REMOTE_ADDR``, or the address the last of
    ``API_NUM_PROXIES`` proxies of this deployment put in ``X-Forwarded-For``."""
    from rest_framework.throttling import BaseThrottle

    return BaseThrottle().get_ident(request)


def lockout_response(request, original_response=None, credentials: dict | None = None) -> HttpResponse:
    """429 and a page that says why, for how long, and what to do."""
    return render(request, "dashboard/locked_out.html", {
        "username": get_client_username(request, credentials) or "",
        "minutes": int(settings.AXES_COOLOFF_TIME.total_seconds() // 60) if settings.AXES_COOLOFF_TIME else None,
        "per_account": settings.AXES_FAILURE_LIMIT,
        "per_address": settings.LOGIN_FAILURE_LIMIT_PER_ADDRESS,
    }, status=429)
