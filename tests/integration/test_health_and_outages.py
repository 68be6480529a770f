"""``/health`` (what it says, and to whom), ``/predict``'s host check, and the API with
the database down: each against the real test database, the real WSGI application and, for the outage,
a real connection to a closed port (PostgreSQL) or to a file in a missing folder (SQLite)."""

from __future__ import annotations

import copy
import json
import os
import secrets
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.wsgi import get_wsgi_application
from django.db import connections
from django.test import Client, RequestFactory
from rest_framework.test import APIClient

from inference import authentication, selectors
from inference.model_manager import get_manager
from tests.integration.test_inference_api import _vector, make_client, make_token, served_registry
from tests.wsgi import call_wsgi

pytestmark = [pytest.mark.django_db]

REPO = Path(__file__).resolve().parents[2]
MODELS = ["ensemble", "lstm_predictor", "prophet_forecaster", "xgboost_classifier"]


@pytest.fixture
def served(settings, tmp_path, keep_test_connection):
    yield from served_registry(settings, tmp_path)


def call(application, method: str, path: str, *, body: object = None, token: str | None = None,
         host: str = "localhost", cookie: str = "") -> tuple[int, dict[str, str], bytes]:
    """One request through a WSGI application, as the server would pass it."""
    extra = {"HTTP_HOST": host}
    if token:
        extra["HTTP_AUTHORIZATION"] = f"Token {token}"
    if cookie:
        extra["HTTP_COOKIE"] = cookie
    data = json.dumps(body) if body is not None else ""
    environ = RequestFactory().generic(method, path, data=data, content_type="application/json", **extra).environ
    return call_wsgi(environ, application)


def wsgi(method: str, path: str, **kwargs) -> tuple[int, dict[str, str], bytes]:
    from investml.wsgi import application  # as served

    return call(application, method, path, **kwargs)


# --------------------------------------------------------------------------------------------------
# 5. /health


def test_health_is_degraded_while_active_versions_are_not_loaded(served, staff_client):
    """A worker that started before anything was promoted serves nothing: not "healthy"."""
    from registry.models import ModelVersion

    active = list(ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).values_list("pk", flat=True))
    assert len(active) == 4
    ModelVersion.objects.filter(pk__in=active).update(status=ModelVersion.Status.STAGING)
    get_manager().reset()
    assert staff_client.get("/health").json()["status"] == "degraded"  # nothing active; the worker has started
    ModelVersion.objects.filter(pk__in=active).update(status=ModelVersion.Status.ACTIVE)  # promoted since

    body = staff_client.get("/health").json()
    assert sorted(body["active_versions"]) == MODELS and body["models_loaded"] == 0
    assert body["status"] == "degraded", body
    for name in MODELS:
        assert any(r.startswith(f"{name}@1.0.0 is active but not loaded") for r in body["reasons"]), body["reasons"]

    # a prediction loads its model; health then names only the others
    features = _vector(served, "xgboost_classifier")
    user = make_client(staff=False)
    assert user.post("/predict", {"features": features, "model_name": "xgboost_classifier"},
                     format="json").status_code == 200
    body = staff_client.get("/health").json()
    assert body["status"] == "degraded" and body["models"] == ["xgboost_classifier"] and body["models_loaded"] == 1
    assert not any(r.startswith("xgboost_classifier@") for r in body["reasons"])
    assert any(r.startswith("lstm_predictor@1.0.0 is active but not loaded") for r in body["reasons"])

    get_manager().reset()  # a fresh worker loads every active version: healthy again
    body = staff_client.get("/health").json()
    assert body["status"] == "healthy" and body["models_loaded"] == 4 and body["reasons"] == []


@pytest.fixture
def staff_client(served):
    return make_client(staff=True)


def test_anonymous_health_shows_the_status_only(served, staff_client, settings):
    """No artifact paths, versions or error text to anonymous (or non-staff) callers; staff see it all."""
    version = served.versions["lstm_predictor"]
    path = django_settings.ML_MODELS_PATH / version.artifact_path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    get_manager().reset()

    for caller in (APIClient(), make_client(staff=False)):
        response = caller.get("/health")
        assert response.status_code == 200 and response.json() == {"status": "degraded"}, response.content
        assert str(settings.ML_MODELS_PATH) not in response.content.decode()
    bad_token = APIClient()
    bad_token.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    response = bad_token.get("/health")  # a probe must always get an answer
    assert response.status_code == 200 and response.json() == {"status": "degraded"}

    staff = staff_client.get("/health").json()
    assert staff["status"] == "degraded" and "database" in staff and "active_versions" in staff
    assert any(r.startswith("Failed to load model lstm_predictor@1.0.0") and "sha256" in r for r in staff["reasons"])
    assert staff["checks"] == {"database": "ok", "cache": "ok", "broker": "ok"}


def test_production_health_over_plain_http_is_not_redirected(tmp_path):
    """DJANGO_PRODUCTION=1 redirects plain HTTP to HTTPS (SECURE_SSL_REDIRECT), but not /health: the
    compose health check (plain HTTP inside the container) must see the database down as a 503, not a
    301 it would count as healthy. Real production settings, in a fresh process."""
    script = (
        "import json, django\n"
        "django.setup()\n"
        "from django.test import Client\n"
        "client = Client(raise_request_exception=False, HTTP_HOST='127.0.0.1:8001')\n"
        "health, models = client.get('/health'), client.get('/models')\n"
        "print(json.dumps({'health': [health.status_code, health.get('Content-Type'), health.content.decode()],\n"
        "                  'models': [models.status_code, models.get('Location')]}))\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "investml.settings",
        "DJANGO_PRODUCTION": "1",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1,ml-api",
        "DATABASE_URL": "postgres://investml:investml@127.0.0.1:1/investml",  # nothing listens there
        "INVESTML_VAR_DIR": str(tmp_path / "var"),
    }
    env.pop("DJANGO_DEBUG", None)
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    status, content_type, content = answers["health"]
    assert status == 503 and content_type == "application/json", answers
    assert json.loads(content) == {"status": "unhealthy"}
    assert answers["models"] == [301, "https://127.0.0.1:8001/models"]  # everything else still redirects


# --------------------------------------------------------------------------------------------------
# 6. /predict checks the Host header


def test_predict_refuses_a_host_not_in_allowed_hosts(served):
    token = make_token(staff=False)
    body = {"ticker": "AAPL", "model_name": "ensemble"}
    assert wsgi("POST", "/predict", body=body, token=token, host="localhost:8001")[0] == 200
    status, _, content = wsgi("POST", "/predict", body=body, token=token, host="evil.example")
    assert status == 400, content
    batch_status, _, batch_content = wsgi("POST", "/predict/batch", body={"model_name": "ensemble",
                                          "instances": ["AAPL"]}, token=token, host="evil.example")
    assert batch_status == 400 and content == batch_content  # Django's own answer (handler400)
    assert b"prediction" not in content
    for bad in ("evil.example:8001", "localhost.evil.example", "local host"):
        assert wsgi("POST", "/predict", body=body, token=token, host=bad)[0] == 400, bad


def test_predict_in_production_over_plain_http_redirects_or_answers_400(served, settings):
    """With SECURE_SSL_REDIRECT the security middleware reads the host itself: a bad one is a 400
    from Django's handler, never an exception out of the WSGI callable (a 500 with a traceback)."""
    settings.SECURE_SSL_REDIRECT = True
    application = get_wsgi_application()  # its middleware reads the setting when it is built
    token = make_token(staff=False)
    body = {"ticker": "AAPL", "model_name": "ensemble"}
    status, headers, _ = call(application, "POST", "/predict", body=body, token=token, host="localhost")
    assert status == 301 and headers["Location"] == "https://localhost/predict"
    status, _, content = call(application, "POST", "/predict", body=body, token=token, host="evil.example")
    assert status == 400 and b"Traceback" not in content and b"DisallowedHost" not in content


# --------------------------------------------------------------------------------------------------
# 10. the database down


@contextmanager
def database_down(tmp_path: Path):
    """Every query of this thread goes to a database that cannot be reached, through the real driver:
    PostgreSQL on a closed port, or SQLite on a file in a folder that does not exist. The test's own
    connection (and its transaction) is put back afterwards."""
    original = connections["default"]
    broken = copy.deepcopy(original.settings_dict)
    if original.vendor == "postgresql":
        broken.update(HOST="127.0.0.1", PORT="1")
    else:
        broken["NAME"] = str(tmp_path / "no-such-folder" / "investml.sqlite3")
    wrapper = original.__class__(broken, alias=original.alias)
    connections["default"] = wrapper
    try:
        yield
    finally:
        wrapper.close()
        connections["default"] = original


def _assert_database_unavailable(status: int, headers: dict[str, str], content: bytes, what: str) -> None:
    assert status == 503, (what, status, content[:300])
    assert headers["Content-Type"].startswith("application/json"), (what, headers)
    body = json.loads(content)
    assert body["reason"] == "database unavailable" and body["detail"], (what, body)
    assert b"Traceback" not in content and b"OperationalError" not in content, what


def test_api_routes_answer_503_json_while_the_database_is_down(tmp_path, keep_test_connection):
    token = make_token(staff=True)
    browser = Client()
    browser.force_login(get_user_model().objects.get(auth_token__key=token))
    session = f"{django_settings.SESSION_COOKIE_NAME}={browser.cookies[django_settings.SESSION_COOKIE_NAME].value}"
    authentication.forget_all()  # the token is not remembered: its lookup needs the database
    assert wsgi("GET", "/models/ensemble/versions", token=token)[0] in (200, 404)
    authentication.forget_all()

    with database_down(tmp_path):
        for method, path, body in [
            ("GET", "/models", None),
            ("GET", "/models/ensemble/versions", None),
            ("GET", "/recommendations", None),
            ("POST", "/predict", {"ticker": "AAPL", "model_name": "ensemble"}),
            ("POST", "/predict/batch", {"model_name": "ensemble", "instances": ["AAPL"]}),
            ("POST", "/retrain", {}),
        ]:
            _assert_database_unavailable(*wsgi(method, path, body=body, token=token), what=f"{method} {path}")

        # a page for people (the dashboard, signed in): a short HTML 503
        status, headers, content = wsgi("GET", "/dashboard/", cookie=session)
        assert status == 503 and headers["Content-Type"].startswith("text/html"), (status, content[:300])
        assert b"Traceback" not in content and b"OperationalError" not in content

        status, headers, content = wsgi("GET", "/health")
        assert status == 503 and json.loads(content) == {"status": "unhealthy"}
        body, code = selectors.health()  # what staff (and the logs) see
        assert code == 503 and body["status"] == "unhealthy"
        assert body["checks"]["database"].startswith("error") and body["checks"]["cache"] == "ok"
        assert body["checks"]["broker"] == "ok"
        assert "database unreachable" in body["reasons"]

    # back up: served again
    assert wsgi("GET", "/models", token=token)[0] == 200


def test_health_reports_the_cache_and_the_broker(settings, monkeypatch):
    from investml.celery import app

    body, code = selectors.health()
    assert body["checks"] == {"database": "ok", "cache": "ok", "broker": "ok"}

    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")  # nothing listens there
    body, code = selectors.health()
    assert code == 200 and body["status"] == "degraded"
    assert body["checks"]["broker"].startswith("error") and body["checks"]["cache"] == "ok"
    assert any(r.startswith("broker unreachable") for r in body["reasons"]), body["reasons"]
    monkeypatch.undo()

    caches = {name: dict(conf) for name, conf in settings.CACHES.items()}
    caches["default"] = {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                         "LOCATION": "redis://127.0.0.1:1/0"}
    settings.CACHES = caches
    body, code = selectors.health()
    assert code == 200 and body["status"] == "degraded"
    assert body["checks"]["cache"].startswith("error") and body["checks"]["broker"] == "ok"
    assert any(r.startswith("cache unreachable") for r in body["reasons"]), body["reasons"]
