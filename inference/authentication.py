"""DRF token authentication with a short per-process memory of recent tokens, invalidated through the
shared cache, and failed authentication throttled per client address.

DRF's ``TokenAuthentication`` runs one database query per request (token joined to its user): on the
embedded SQLite that was about a sixth of a ``POST /predict``'s server time. Here a token seen in
the last ``ML_API_TOKEN_CACHE_SECONDS`` (default 30; 0 turns the memory off) is answered from memory.

Invalidation: saving or deleting a user (a deactivation, a removed staff flag, a new password) or a
token bumps a version key in the shared Django cache (at once and again when the transaction
commits); every worker reads that key on each request and forgets everything it remembered when it
changed. So such a change is seen by the next request in every worker, not up to 30 s later. With
the embedded disk cache (one machine) the version is a 16-byte file beside the cache instead, read
with one system call (reading the cache was a tenth of a request's time). Only a change that sends
no signal (``QuerySet.update``, raw SQL) waits for the memory's expiry; a version that cannot be
read turns the memory off. The memory answers "who is this token's user", never "may they":
staff actions re-read the user and its permissions from the database (``investml.permissions``).

Before a token that is not remembered is looked up, the client's address is checked against its
failed authentications (``inference.throttling.FailedAuthThrottle``): over the limit, 429.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.utils.translation import gettext_lazy as _
from rest_framework import HTTP_HEADER_ENCODING, exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from inference import conf, throttling
from investml.cache_serializers import PersistentDiskCache

logger = logging.getLogger(__name__)

MAX_REMEMBERED = 10_000
VERSION_KEY = "auth:credentials-version"  # in the shared cache: changes whenever a user or token does
VERSION_FILE = "auth-credentials-version"  # the same, beside the embedded disk cache (``_version_file``)
DISK_CACHE_BACKEND = f"{PersistentDiskCache.__module__}.{PersistentDiskCache.__qualname__}"

_lock = threading.Lock()
_remembered: OrderedDict[str, tuple[float, Any, Any]] = OrderedDict()  # key -> (expires, user, token)
_UNSEEN = object()
_seen: dict[str, Any] = {"version": _UNSEEN}  # the shared version this process's memory belongs to
_UNREADABLE = object()
_descriptors: dict[str, int] = {}  # version file path -> this process's descriptor


def _version_file() -> str | None:
    """Where the version is kept when the shared cache is this machine's disk cache: 16 bytes in a
    file beside it, read with one ``pread`` (a few microseconds; reading the disk cache cost about
    60 us of a 580 us ``POST /predict``). None with Redis, where the version stays in the cache."""
    default = settings.CACHES["default"]
    if default.get("BACKEND") != DISK_CACHE_BACKEND:
        return None
    return os.path.join(default["LOCATION"], VERSION_FILE)


def _descriptor(path: str) -> int:
    """This process's descriptor of the version file, reopened when the file was deleted or replaced
    (a descriptor of the old file would never see another bump)."""
    fd = _descriptors.get(path)
    if fd is not None and os.fstat(fd).st_nlink > 0:
        return fd
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _descriptors[path] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    if fd is not None:
        os.close(fd)
    return _descriptors[path]


def _shared_version() -> Any:
    try:
        path = _version_file()
        return cache.get(VERSION_KEY) if path is None else os.pread(_descriptor(path), 16, 0)
    except Exception:  # noqa: BLE001 - no shared version: no memory either (every request asks the database)
        return _UNREADABLE


def remembered(key: str) -> tuple[Any, Any] | None:
    """The (user, token) this process remembers for ``key``, if that memory is still valid: not
    expired, and no user or token changed anywhere since it was taken."""
    version = _shared_version()
    now = time.monotonic()
    with _lock:
        if version is _UNREADABLE or version != _seen["version"]:
            _remembered.clear()
            _seen["version"] = _UNSEEN if version is _UNREADABLE else version
            return None
        hit = _remembered.get(key)
        if hit is None or hit[0] <= now:
            return None
        _remembered.move_to_end(key)
        return hit[1], hit[2]


class CachedTokenAuthentication(TokenAuthentication):
    def authenticate(self, request):
        """DRF's header parsing (its messages), then ``authenticate_credentials`` with the request.
        The header is read from ``META``: DRF's ``get_authorization_header`` goes through
        ``request.headers``, which builds a mapping of every header on each request."""
        auth = request.META.get("HTTP_AUTHORIZATION", b"")
        if isinstance(auth, str):
            auth = auth.encode(HTTP_HEADER_ENCODING)
        auth = auth.split()
        if not auth or auth[0].lower() != self.keyword.lower().encode():
            return None
        if len(auth) == 1:
            throttling.refuse_failed_auth(request)
            raise exceptions.AuthenticationFailed(_("Invalid token header. No credentials provided."))
        if len(auth) > 2:
            throttling.refuse_failed_auth(request)
            raise exceptions.AuthenticationFailed(_("Invalid token header. Token string should not contain spaces."))
        try:
            key = auth[1].decode()
        except UnicodeError:
            throttling.refuse_failed_auth(request)
            raise exceptions.AuthenticationFailed(
                _("Invalid token header. Token string should not contain invalid characters.")
            ) from None
        return self.authenticate_credentials(key, request=request)

    def authenticate_credentials(self, key: str, request: Any = None) -> tuple[Any, Any]:
        """The token's (user, token); raises ``AuthenticationFailed``, or ``Throttled`` when
        ``request``'s address has used up its failures and the token is not remembered."""
        ttl = conf.token_cache_seconds()
        if ttl > 0:
            hit = remembered(key)
            if hit is not None:
                return hit
        if request is not None:
            throttling.refuse_failed_auth(request)
        version = _seen["version"]
        user, token = super().authenticate_credentials(key)  # raises AuthenticationFailed
        if ttl > 0:
            with _lock:
                if _seen["version"] is version and version is not _UNSEEN:  # nothing changed meanwhile
                    _remembered[key] = (time.monotonic() + ttl, user, token)
                    while len(_remembered) > MAX_REMEMBERED:
                        _remembered.popitem(last=False)
        return user, token


def forget_all(**_: Any) -> None:
    """Forget every remembered token in this process (tests; other processes use ``invalidate``)."""
    with _lock:
        _remembered.clear()


def _bump() -> None:
    try:
        path = _version_file()
        if path is None:
            cache.set(VERSION_KEY, uuid.uuid4().hex, None)
        else:  # in place, so every reader's descriptor sees it
            os.pwrite(_descriptor(path), uuid.uuid4().bytes, 0)
    except Exception as exc:  # noqa: BLE001 - the user's or token's save goes on; the error says what it costs
        logger.error("could not publish a credentials change to the other workers (they may accept a "
                     "changed token for up to ML_API_TOKEN_CACHE_SECONDS): %s", exc)


def invalidate(**_: Any) -> None:
    """A user or token changed: every worker forgets its remembered tokens on its next request. The
    version is bumped now and again after the commit, so a worker that read the old rows in between
    does not keep them."""
    forget_all()
    _bump()
    transaction.on_commit(_bump)


def _user_saved(sender: Any, update_fields: Any = None, **kwargs: Any) -> None:
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return  # a sign-in: nothing a token's authentication depends on
    invalidate()


def connect() -> None:
    """Invalidate every worker's memory when a token or a user changes."""
    user_model = get_user_model()
    post_save.connect(invalidate, sender=Token, dispatch_uid="inference.authentication.token_saved")
    post_delete.connect(invalidate, sender=Token, dispatch_uid="inference.authentication.token_deleted")
    post_save.connect(_user_saved, sender=user_model, dispatch_uid="inference.authentication.user_saved")
    post_delete.connect(invalidate, sender=user_model, dispatch_uid="inference.authentication.user_deleted")
