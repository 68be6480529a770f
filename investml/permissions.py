"""Who may run the operator actions: staff status and a Django model permission, both read afresh from
the database at every check (never from the API's token memory, never cached on a user object), so a
removed staff flag or permission counts from the next request in every worker. Superusers hold every
permission; grant the others per user or through a group in the admin (Users / Groups).

| action | where | permission |
| --- | --- | --- |
| acknowledge, resolve an alert | dashboard | ``monitoring.change_alert`` |
| promote, force-promote, roll back | dashboard (and the admin's actions) | ``registry.change_modelversion`` |
| load, unload a model | ``POST /models/{name}/load``, ``DELETE /models/{name}`` | ``registry.change_registeredmodel`` |
| retrain | ``POST /retrain`` | ``training.add_pipelinerun`` |
| push intraday quotes | ``POST /quotes`` | ``features.add_pricebar`` |
"""

from __future__ import annotations

from functools import wraps
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

ACKNOWLEDGE_ALERTS = "monitoring.change_alert"
PROMOTE = "registry.change_modelversion"  # promote, force-promote, roll back
SERVE = "registry.change_registeredmodel"  # load, unload
RETRAIN = "training.add_pipelinerun"
PUSH_QUOTES = "features.add_pricebar"  # the session's bar so far: price data, as the price table's rows
OPERATOR_PERMISSIONS = (ACKNOWLEDGE_ALERTS, PROMOTE, SERVE, RETRAIN, PUSH_QUOTES)


def refusal(perm: str) -> str:
    return f"This action needs staff status and the {perm} permission."


def allowed(user: Any, perm: str) -> bool:
    """``user`` is active, staff and holds ``perm``, as the database says now."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.pk:
        return False
    fresh = get_user_model().objects.filter(pk=user.pk, is_active=True, is_staff=True).first()
    return fresh is not None and fresh.has_perm(perm)


def require(perm: str) -> type[BasePermission]:
    """A DRF permission class for ``perm`` (403 with the permission named)."""

    class RequiresPermission(BasePermission):
        message = refusal(perm)

        def has_permission(self, request, view) -> bool:
            return allowed(request.user, perm)

    RequiresPermission.__name__ = RequiresPermission.__qualname__ = f"Requires_{perm.replace('.', '_')}"
    return RequiresPermission


def permission_required(perm: str):
    """A view decorator (after ``login_required``): 403 unless ``allowed(request.user, perm)``."""

    def decorator(func):
        @wraps(func)
        def wrapper(request, *args, **kwargs):
            if not allowed(request.user, perm):
                raise PermissionDenied(refusal(perm))
            return func(request, *args, **kwargs)

        return wrapper

    return decorator
