"""Failed API authentication is throttled per client address (issue 15, security item 2).

DRF authenticates before it throttles, so ``API_THROTTLE_ANON`` never sees a request with a missing or
bad token. Here, from one address, the first ``API_THROTTLE_FAILED_AUTH`` failures of a window (30 a
minute by default) get 401 and every later request 429 with ``Retry-After``, whether the token is
wrong or missing, on every DRF view (``POST /predict`` through the served WSGI application); a spoofed
``X-Forwarded-For`` does not reset the count; other addresses and good tokens are not affected."""

from __future__ import annotations

import json
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.test import RequestFactory
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from inference import authentication, throttling
from tests.wsgi import call_wsgi

pytestmark = pytest.mark.django_db

LIMIT = 30  # the documented default of API_THROTTLE_FAILED_AUTH (30/minute)
ATTACKER = "203.0.113.7"  # documentation addresses, as REMOTE_ADDR only
NEIGHBOUR = "198.51.100.8"


@pytest.fixture(autouse=True)
def own_cache(settings, keep_test_connection, one_throttle_window):
    """A cache namespace of its own: the counters of other tests (and runs) never mix in."""
    caches = {name: dict(conf) for name, conf in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = f"test-failauth-{uuid.uuid4().hex[:10]}"
    settings.CACHES = caches
    throttling.reset_leases()
    authentication.forget_all()
    yield
    throttling.reset_leases()
    authentication.forget_all()


def good_token() -> str:
    user = get_user_model().objects.create_user(f"u-{uuid.uuid4().hex[:6]}")
    return Token.objects.create(user=user).key


def client_from(address: str, token: str | None = None, **extra) -> APIClient:
    client = APIClient(REMOTE_ADDR=address, **extra)
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def wsgi_predict(address: str, token: str | None) -> tuple[int, dict, bytes]:
    """POST /predict through ``investml.wsgi.application``, as a WSGI server passes it."""
    extra = {"HTTP_AUTHORIZATION": f"Token {token}"} if token else {}
    environ = RequestFactory().generic("POST", "/predict", data=json.dumps({"ticker": "AAPL"}),
                                       content_type="application/json", REMOTE_ADDR=address, **extra).environ
    return call_wsgi(environ)


def test_bad_tokens_from_one_address_get_429_after_the_limit():
    attacker = client_from(ATTACKER, "0" * 40)
    statuses = [attacker.get("/models").status_code for _ in range(LIMIT + 5)]
    assert statuses[:LIMIT] == [401] * LIMIT, statuses
    assert statuses[LIMIT:] == [429] * 5, statuses
    refused = attacker.get("/models")
    assert refused.status_code == 429 and 1 <= int(refused["Retry-After"]) <= 60
    assert "failed authentication" in refused.json()["detail"]

    # a new made-up token, no token, or another forwarded-for address: still this address, still 429
    assert client_from(ATTACKER, "f" * 40).get("/models").status_code == 429
    assert client_from(ATTACKER).get("/recommendations").status_code == 429
    spoofed = client_from(ATTACKER, "1" * 40, HTTP_X_FORWARDED_FOR=f"192.0.2.{uuid.uuid4().int % 250}")
    assert spoofed.get("/models").status_code == 429

    # another address is not affected: its bad token is a plain 401, its good token works
    assert client_from(NEIGHBOUR, "0" * 40).get("/models").status_code == 401
    assert client_from(NEIGHBOUR, good_token()).get("/models").status_code == 200


def test_missing_tokens_count_as_failures():
    anonymous = client_from(ATTACKER)
    statuses = [anonymous.post("/predict/batch", {}, format="json").status_code for _ in range(LIMIT + 3)]
    assert statuses[:LIMIT] == [401] * LIMIT and statuses[LIMIT:] == [429] * 3, statuses
    # malformed Authorization headers are failures as well (and refused now)
    assert client_from(ATTACKER, HTTP_AUTHORIZATION="Token").get("/models").status_code == 429
    # /health stays open to probes from anywhere
    assert client_from(ATTACKER).get("/health").status_code in (200, 503)


def test_predict_through_the_served_application_is_throttled_too():
    statuses = [wsgi_predict(ATTACKER, "0" * 40)[0] for _ in range(LIMIT + 3)]
    assert statuses[:LIMIT] == [401] * LIMIT and statuses[LIMIT:] == [429] * 3, statuses
    status, headers, content = wsgi_predict(ATTACKER, "e" * 40)
    assert status == 429 and "Retry-After" in headers and b"failed authentication" in content
    status, _, _ = wsgi_predict(ATTACKER, None)
    assert status == 429
    assert wsgi_predict(NEIGHBOUR, "0" * 40)[0] == 401


def test_good_requests_do_not_count(settings):
    token = good_token()
    good = client_from(ATTACKER, token)
    for _ in range(LIMIT + 10):
        assert good.get("/models").status_code == 200
    # ... and a few failures after them are still 401, not 429
    assert client_from(ATTACKER, "0" * 40).get("/models").status_code == 401
