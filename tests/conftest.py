"""Shared fixtures. Tests run on SQLite by default, on PostgreSQL/Redis when DATABASE_URL/REDIS_URL are set.

Tests read only data the repository ships: sample_data/ (the bundled real sample) and tests/data/ (see
their PROVENANCE.md), never the data folder beside the checkout (only tests/benchmarks/ scripts may)."""

from __future__ import annotations

import time

import pytest


@pytest.fixture(autouse=True)
def no_request_metrics_from_other_tests():
    """Request metrics are summed in memory and written at most once a second: drop what an earlier
    test left unwritten, or it would land in this test's cache."""
    from monitoring import request_metrics

    request_metrics.discard()


@pytest.fixture
def one_throttle_window():
    """The API throttles count requests per fixed clock minute: a test that counts up to a limit
    starts early in a minute, so that its requests (a second or so, even on a loaded machine) fall in
    one window instead of being split by the minute's end."""
    left = 60 - time.time() % 60
    if left < 20:
        time.sleep(left + 0.05)


@pytest.fixture
def keep_test_connection(monkeypatch):
    """For requests through the real WSGI or ASGI application: keep Django's request_started and
    request_finished receivers from closing the test's database connection (as Django's test client
    does for its own requests; it reconnects them afterwards, so disconnecting them here would not last)."""
    from django.db import connections

    for connection in connections.all():
        monkeypatch.setattr(connection, "close_if_unusable_or_obsolete", lambda: None)


@pytest.fixture
def dashboard_settings(settings):
    """The dashboard on its own cache namespace, with plotly.min.js served from the wheel and a $10
    daily cost limit (the figures the dashboard tests expect)."""
    import uuid

    caches = {name: dict(conf) for name, conf in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = f"test-dash-{uuid.uuid4().hex[:10]}"
    settings.CACHES = caches
    settings.STATICFILES_FINDERS = [
        "django.contrib.staticfiles.finders.FileSystemFinder",
        "django.contrib.staticfiles.finders.AppDirectoriesFinder",
        "monitoring.staticfinders.PackageAssetsFinder",
    ]
    settings.ML_DAILY_COST_LIMIT_USD = 10.0
    return settings


@pytest.fixture(autouse=True)
def shared_limits_of_this_test_only(settings):
    """Provider limits and spend live in Redis on CI's second pass, which no test rollback resets:
    each test counts under its own key prefix."""
    import uuid

    settings.ML_SHARED_LIMITS_PREFIX = f"investml-test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server on loopback (moto's standalone server in a subprocess, tests/s3server.py);
    this process's AWS_* variables point at it for the rest of the session."""
    import os

    from tests.s3server import start_s3_server

    server = start_s3_server(tmp_path_factory.mktemp("s3") / "moto.log")
    saved = {key: os.environ.get(key) for key in server.env}
    os.environ.update(server.env)
    try:
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh bucket on the loopback S3 server; its name."""
    return s3_server.new_bucket()
