"""The POST /predict hot path: one path, Django's handler with every middleware and the DRF view,
the same through the WSGI and the ASGI application; and the per-request shortcuts (token memory,
leased throttle blocks, request metrics summed in memory, local prediction cache) keep their
guarantees."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import cache
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from inference import cache as prediction_cache
from inference import prediction_log, throttling
from inference.models import PredictionLog
from monitoring import request_metrics
from tests.integration.test_inference_api import _vector, make_client, make_token, served_registry
from tests.wsgi import call_wsgi

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def served(settings, tmp_path, keep_test_connection):
    yield from served_registry(settings, tmp_path)


def wsgi_call(method: str, path: str, *, body: object = None, token: str | None = None,
              content_type: str = "application/json", **extra: str) -> tuple[int, dict[str, str], bytes]:
    """One request through ``investml.wsgi.application``, as a WSGI server passes it."""
    if token:
        extra["HTTP_AUTHORIZATION"] = f"Token {token}"
    data = body if isinstance(body, bytes | str) else json.dumps(body) if body is not None else ""
    environ = RequestFactory().generic(method, path, data=data, content_type=content_type, **extra).environ
    return call_wsgi(environ)


def asgi_call(method: str, path: str, *, body: object, token: str) -> tuple[int, dict[str, str], bytes]:
    """The same request through ``investml.asgi.application``, as an ASGI server passes it (header
    names in lower case)."""
    from investml.asgi import application

    data = json.dumps(body).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(data)).encode()),
                         (b"authorization", f"Token {token}".encode())]}
    received: list[dict] = []
    body_sent = False

    async def receive() -> dict:
        nonlocal body_sent
        if body_sent:  # the client stays connected: Django stops listening once it has answered
            await asyncio.Event().wait()
        body_sent = True
        return {"type": "http.request", "body": data, "more_body": False}

    async def send(message: dict) -> None:
        received.append(message)

    async_to_sync(application)(scope, receive, send)  # the sync view runs in this thread (its database connection)
    start = next(m for m in received if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in received if m["type"] == "http.response.body")
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, content


def test_predict_answers_json_with_the_security_headers(served):
    token = make_token(staff=False)
    vector = _vector(served, "xgboost_classifier")
    body = {"features": vector, "model_name": "xgboost_classifier", "reference_price": 100.0}
    status, headers, content = wsgi_call("POST", "/predict", body=body, token=token)
    assert status == 200, content
    served_answer = json.loads(content)
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
    assert served_answer["cached"] is False and served_answer["timestamp"].endswith("Z")

    # JSON whatever the client accepts (no browsable API on the prediction endpoint)
    status, headers, content = wsgi_call("POST", "/predict", body=body, token=token, HTTP_ACCEPT="text/html")
    assert status == 200 and headers["Content-Type"] == "application/json" and json.loads(content)["cached"]

    client = make_client(staff=False)
    view = client.post("/predict", body, format="json").json()  # the test client: the same answer
    assert set(served_answer) == set(view)
    for key in ("prediction", "expected_return", "prob_up", "confidence", "direction", "model_version",
                "prediction_type", "reference_price", "horizon_days"):
        assert served_answer[key] == view[key], key


def test_wsgi_and_asgi_answer_predict_alike(served):
    token = make_token(staff=False)
    cases = [
        {"ticker": "MSFT", "model_name": "ensemble"},
        {"features": [1.0, 2.0], "model_name": "xgboost_classifier"},  # 400, the field named
        {"ticker": "AAPL", "model_name": "no_such_model"},  # 404
    ]
    for body in cases:
        wsgi_status, wsgi_headers, wsgi_content = wsgi_call("POST", "/predict", body=body, token=token)
        asgi_status, asgi_headers, asgi_content = asgi_call("POST", "/predict", body=body, token=token)
        assert wsgi_status == asgi_status, (body, wsgi_content, asgi_content)
        for header in ("Content-Type", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy"):
            assert wsgi_headers[header] == asgi_headers[header.lower()], header
        wsgi_body, asgi_body = json.loads(wsgi_content), json.loads(asgi_content)
        for answer in (wsgi_body, asgi_body):
            answer.pop("timestamp", None)
            answer.pop("cached", None)  # the second of two equal predictions is a cache hit
        assert wsgi_body == asgi_body, body
    status, headers, _ = asgi_call("POST", "/predict", body=cases[0], token="bad")
    assert status == 401 and headers["www-authenticate"] == "Token"


def test_predict_errors_name_the_field_and_other_requests_get_drfs_answers(served):
    token = make_token(staff=False)
    status, _, content = wsgi_call("POST", "/predict", body={"features": [1.0, 2.0], "model_name": "xgboost_classifier"},
                                   token=token)
    assert status == 400 and "features" in json.loads(content)["errors"]
    status, _, content = wsgi_call("POST", "/predict", body='{"features": [NaN], "model_name": "xgboost_classifier"}',
                                   token=token)
    assert status == 400 and "item 0 must be a finite number, got NaN" in json.loads(content)["detail"]
    status, _, content = wsgi_call("POST", "/predict", body="{not json", token=token)
    assert status == 400 and json.loads(content)["detail"].startswith("JSON parse error")
    # nested past any parser's depth: 400, not 500 with a traceback (single and batch alike)
    deep = '{"ticker": ' + "[" * 100_000 + "]" * 100_000 + ', "model_name": "ensemble"}'
    status, _, content = wsgi_call("POST", "/predict", body=deep, token=token)
    assert status == 400 and "nested too deeply" in json.loads(content)["detail"]
    batch = '{"instances": ' + "[" * 100_000 + "]" * 100_000 + "}"
    status, _, content = wsgi_call("POST", "/predict/batch", body=batch, token=token)
    assert status == 400 and "nested too deeply" in json.loads(content)["detail"]
    status, _, content = wsgi_call("POST", "/predict", body={"ticker": "AAPL", "model_name": "no_such_model"},
                                   token=token)
    assert status == 404 and "model_name" in json.loads(content)["errors"]
    status, _, content = wsgi_call("POST", "/predict", body={"instances": [], "model_name": "ensemble"}, token=token)
    assert status == 400 and "/predict/batch" in json.loads(content)["detail"]

    status, headers, _ = wsgi_call("POST", "/predict", body={"ticker": "AAPL", "model_name": "ensemble"})
    assert status == 401 and headers["WWW-Authenticate"] == "Token"
    with CaptureQueriesContext(connection) as queries:
        status, _, _ = wsgi_call("POST", "/predict", body={"ticker": "AAPL", "model_name": "ensemble"}, token="bad")
    assert status == 401
    token_lookups = [q for q in queries.captured_queries if "authtoken_token" in q["sql"]]
    assert len(token_lookups) == 1
    status, _, _ = wsgi_call("GET", "/predict", token=token)
    assert status == 405
    status, _, _ = wsgi_call("POST", "/predict", body="ticker=AAPL", token=token, content_type="text/plain")
    assert status == 415
    status, _, content = wsgi_call("GET", "/health")
    assert status == 200 and json.loads(content)["status"] in ("healthy", "degraded")


def test_predict_records_metrics_and_the_prediction_log(served):
    token = make_token(staff=False)
    before = request_metrics.totals().get("POST /predict")
    for ticker in ("AAPL", "MSFT", "AAPL"):
        status, _, _ = wsgi_call("POST", "/predict", body={"ticker": ticker, "model_name": "ensemble"}, token=token)
        assert status == 200
    wsgi_call("POST", "/predict", body={"features": [1.0], "model_name": "xgboost_classifier"}, token=token)
    after = request_metrics.totals()["POST /predict"]
    assert after.requests - (before.requests if before else 0) == 4
    prediction_log.flush()
    rows = list(PredictionLog.objects.filter(model_name="ensemble").order_by("id"))
    assert [r.ticker for r in rows] == ["AAPL", "MSFT", "AAPL"] and [r.cached for r in rows] == [False, False, True]


def test_throttle_is_enforced_on_predict(served, monkeypatch, one_throttle_window):
    monkeypatch.setattr(throttling.FixedWindowUserThrottle, "THROTTLE_RATES", {"user": "5/minute", "anon": "5/minute"})
    throttling.reset_leases()
    token = make_token(staff=False)
    body = {"ticker": "AAPL", "model_name": "ensemble"}
    codes = [wsgi_call("POST", "/predict", body=body, token=token)[0] for _ in range(7)]
    status, headers, _ = wsgi_call("POST", "/predict", body=body, token=token)
    throttling.reset_leases()
    assert codes == [200] * 5 + [429] * 2 and status == 429 and int(headers["Retry-After"]) > 0


def test_leased_throttle_blocks_never_let_more_than_the_rate_through(served, monkeypatch, one_throttle_window):
    """Two processes (two lease tables) alternating on one common counter."""
    from types import SimpleNamespace

    monkeypatch.setattr(throttling.FixedWindowUserThrottle, "THROTTLE_RATES", {"user": "1000/minute"})
    request = SimpleNamespace(user=SimpleNamespace(is_authenticated=True, pk=987_654), META={})
    tables = [{}, {}]
    allowed = 0
    for i in range(1500):
        monkeypatch.setattr(throttling, "_leases", tables[i % 2])
        allowed += throttling.FixedWindowUserThrottle().allow_request(request, None)
    block = max(1, min(throttling.MAX_LEASE, int(1000 * throttling.LEASE_SHARE)))
    assert 1000 - block <= allowed <= 1000


def test_a_deleted_token_stops_working_at_once_in_this_process(served):
    token = make_token(staff=False)
    body = {"ticker": "AAPL", "model_name": "ensemble"}
    assert wsgi_call("POST", "/predict", body=body, token=token)[0] == 200  # now remembered
    Token.objects.filter(key=token).delete()  # queryset delete sends post_delete per row
    assert wsgi_call("POST", "/predict", body=body, token=token)[0] == 401


def test_request_metrics_are_written_to_the_cache_at_most_once_a_second():
    cache.clear()
    request_metrics.flush()
    request_metrics.record_request(endpoint="GET /probe", status_code=200, duration_ms=5.0)
    request_metrics.record_request(endpoint="GET /probe", status_code=503, duration_ms=7.0)
    key = f"reqm:total:{request_metrics._slug('GET /probe')}:count"
    assert cache.get(key) is None  # still summed in memory
    window = request_metrics.window(minutes=1)["GET /probe"]  # a read writes this process's sums first
    assert (window.requests, window.errors, window.total_ms) == (2, 1, 12.0) and cache.get(key) == 2


@pytest.mark.parametrize("cross_worker", [False, True])
def test_prediction_cache_is_per_worker_or_cross_worker(served, settings, cross_worker):
    settings.ML_PREDICTION_CACHE_SHARED = cross_worker
    client = make_client(staff=False)
    body = {"ticker": "JPM", "model_name": "xgboost_classifier"}
    assert client.post("/predict", body, format="json").json()["cached"] is False
    assert client.post("/predict", body, format="json").json()["cached"] is True  # memory
    prediction_cache.clear_local()  # as another worker: only the cross-worker level can answer
    assert client.post("/predict", body, format="json").json()["cached"] is cross_worker


def test_message_storage_is_built_only_when_used_and_messages_still_carry_to_the_next_request():
    from django.contrib import messages
    from django.contrib.sessions.middleware import SessionMiddleware
    from django.http import HttpResponse
    from django.utils.functional import empty

    from investml.middleware import LazyMessageMiddleware

    def through(request, view):
        SessionMiddleware(lambda r: LazyMessageMiddleware(view)(r))(request)
        return view.response

    class View:
        def __init__(self, act=lambda request: None):
            self.act, self.response = act, None

        def __call__(self, request):
            self.act(request)
            self.response = HttpResponse("ok")
            self.request = request
            return self.response

    untouched = View()
    response = through(RequestFactory().post("/predict"), untouched)
    assert untouched.request._messages._wrapped is empty  # no storage built for a request that never used it
    assert "messages" not in response.cookies

    adding = View(lambda request: messages.success(request, "model promoted"))
    cookie = through(RequestFactory().get("/admin/"), adding).cookies["messages"].value
    shown = []
    reading = View(lambda request: shown.extend(str(m) for m in messages.get_messages(request)))
    later = RequestFactory().get("/admin/")
    later.COOKIES["messages"] = cookie
    response = through(later, reading)
    assert shown == ["model promoted"]
    assert response.cookies["messages"].value == ""  # read once: the cookie is cleared
