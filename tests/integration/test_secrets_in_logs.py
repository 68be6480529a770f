"""Secrets stay out of logs and terminals (issue 15, security item 9):

- a failed alert webhook logs the webhook's scheme and host only: Slack-style URLs carry their secret
  in the path (and some in the query), which must appear nowhere in the log records;
- ``manage.py ensure_admin`` prints the admin password and API token only when it creates them (or
  sets a given password), says where the password file is, and writes that file with mode 0600 from
  its first byte (never readable by others, not even for a moment)."""

from __future__ import annotations

import logging
import os
import stat
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from monitoring import notifications, services
from monitoring.alert_rules import AlertCondition

pytestmark = pytest.mark.django_db

SECRET = "T0SECRET/B0SECRET/xoxSECRETpart"


@pytest.fixture
def monitoring_settings(settings):
    caches = {name: dict(conf) for name, conf in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = f"test-secrets-{uuid.uuid4().hex[:10]}"
    settings.CACHES = caches
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.ALERT_EMAILS = []
    settings.ALERT_WEBHOOK_TIMEOUT_SECONDS = 1
    return settings


class _Refusing(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(403)
        self.end_headers()

    def log_message(self, *args):
        pass


def _alert(key: str):
    return services.raise_alert(condition=AlertCondition("high_latency", key, "critical", "slow", {})).alert


def _logged(caplog) -> str:
    """Everything the records would print: messages, arguments and tracebacks."""
    handler = logging.StreamHandler(StringIO())
    handler.setFormatter(logging.Formatter("%(message)s"))
    for record in caplog.records:
        handler.handle(record)
    return handler.stream.getvalue()


def test_a_failed_webhook_logs_its_host_not_its_secret_path(monitoring_settings, caplog):
    server = HTTPServer(("127.0.0.1", 0), _Refusing)
    port = server.server_port
    server.server_close()  # nothing listens on that port now: the POST fails to connect
    monitoring_settings.ALERT_WEBHOOK_URL = f"http://127.0.0.1:{port}/services/{SECRET}?token=qSECRETq"
    with caplog.at_level(logging.DEBUG):
        assert notifications.notify_alert(alert=_alert("GET /dead"))
    text = _logged(caplog)
    assert "alert webhook" in text and f"http://127.0.0.1:{port}" in text
    assert "SECRET" not in text, text


def test_a_webhook_answering_an_error_logs_its_host_not_its_secret_path(monitoring_settings, caplog):
    server = HTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monitoring_settings.ALERT_WEBHOOK_URL = f"http://127.0.0.1:{server.server_port}/services/{SECRET}"
        with caplog.at_level(logging.DEBUG):
            assert notifications.notify_alert(alert=_alert("GET /refused"))
    finally:
        server.shutdown()
        server.server_close()
    text = _logged(caplog)
    assert "HTTP 403" in text and f"127.0.0.1:{server.server_port}" in text
    assert "SECRET" not in text, text


@pytest.fixture
def admin_env(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.DJANGO_ADMIN_PASSWORD = ""
    settings.DJANGO_ADMIN_USER = f"admin-{uuid.uuid4().hex[:6]}"
    return tmp_path / "admin-password.txt"


def _run() -> str:
    out = StringIO()
    call_command("ensure_admin", stdout=out)
    return out.getvalue()


def test_ensure_admin_prints_the_credentials_only_when_it_creates_them(admin_env, settings):
    first = _run()
    user = get_user_model().objects.get(username=settings.DJANGO_ADMIN_USER)
    password = admin_env.read_text().strip()
    token = Token.objects.get(user=user).key
    assert user.is_superuser and user.check_password(password)
    assert password in first and token in first and str(admin_env) in first

    second = _run()  # every later `make run`
    assert password not in second and token not in second
    assert str(admin_env) in second  # it still says where the password is
    assert "already exists" in second


def test_ensure_admin_writes_the_password_file_with_mode_600_from_the_start(admin_env, monkeypatch):
    modes: list[int] = []
    real_open = os.open

    def watching_open(path, flags, mode=0o777, *args, **kwargs):
        fd = real_open(path, flags, mode, *args, **kwargs)
        if str(path) == str(admin_env):
            modes.append(stat.S_IMODE(os.fstat(fd).st_mode))  # the mode the file was born with
        return fd

    monkeypatch.setattr(os, "open", watching_open)
    old_umask = os.umask(0o022)  # a usual umask: a plain open() would make the file world-readable
    try:
        _run()
    finally:
        os.umask(old_umask)
    assert modes and all(mode == 0o600 for mode in modes), modes
    assert stat.S_IMODE(admin_env.stat().st_mode) == 0o600


def test_ensure_admin_with_a_given_password_sets_it_and_says_so(admin_env, settings):
    _run()
    settings.DJANGO_ADMIN_PASSWORD = "a-given-password-42"
    out = _run()
    user = get_user_model().objects.get(username=settings.DJANGO_ADMIN_USER)
    assert user.check_password("a-given-password-42")
    assert admin_env.read_text().strip() == "a-given-password-42"
    assert stat.S_IMODE(admin_env.stat().st_mode) == 0o600
    assert "a-given-password-42" not in out  # the operator chose it: no need to echo it back
    assert str(admin_env) in out
