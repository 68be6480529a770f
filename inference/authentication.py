"""DRF token authentication with a short per-process memory of recent tokens.

DRF's ``TokenAuthentication`` runs one database query per request (token joined to its user): on the
embedded SQLite that was about a sixth of a ``POST /predict``'s server time. Here a token seen in
the last ``ML_API_TOKEN_CACHE_SECONDS`` (default 30; 0 turns the memory off) is answered from memory.

What that costs: a token deleted, or a user deactivated, in another process (admin, another gunicorn
worker) keeps working in this worker for at most that many seconds. In the process that deletes the
token or saves the user, the memory is cleared at once (signals below).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, post_save
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from inference import conf

MAX_REMEMBERED = 10_000

_lock = threading.Lock()
_remembered: OrderedDict[str, tuple[float, Any, Any]] = OrderedDict()  # key -> (expires, user, token)


class CachedTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        ttl = conf.token_cache_seconds()
        if ttl <= 0:
            return super().authenticate_credentials(key)
        now = time.monotonic()
        with _lock:
            hit = _remembered.get(key)
            if hit is not None and hit[0] > now:
                _remembered.move_to_end(key)
                return hit[1], hit[2]
        user, token = super().authenticate_credentials(key)  # raises AuthenticationFailed
        with _lock:
            _remembered[key] = (now + ttl, user, token)
            while len(_remembered) > MAX_REMEMBERED:
                _remembered.popitem(last=False)
        return user, token


def forget_all(**_: Any) -> None:
    with _lock:
        _remembered.clear()


def connect() -> None:
    """Clear the memory when a token is deleted or a user changes in this process."""
    post_delete.connect(forget_all, sender=Token, dispatch_uid="inference.authentication.token_deleted")
    post_save.connect(forget_all, sender=get_user_model(), dispatch_uid="inference.authentication.user_saved")
    post_delete.connect(forget_all, sender=get_user_model(), dispatch_uid="inference.authentication.user_deleted")
