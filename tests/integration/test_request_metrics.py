"""Per-endpoint latency and error counts, shared through the cache, and the /metrics endpoint."""

import pytest
from django.core.cache import cache

from monitoring import request_metrics

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def clean_cache():
    cache.clear()
    yield
    cache.clear()


def test_window_counts_requests_errors_and_latency():
    now = 1_800_000_000.0
    for ms, status in ((100, 200), (300, 200), (200, 500)):
        request_metrics.record_request(endpoint="POST /predict", status_code=status, duration_ms=ms, now=now)
    request_metrics.record_request(endpoint="POST /predict", status_code=200, duration_ms=900, now=now - 3600)
    recent = request_metrics.window(minutes=5, now=now)["POST /predict"]
    assert (recent.requests, recent.errors) == (3, 1)
    assert recent.avg_ms == pytest.approx(200.0)
    assert recent.error_rate == pytest.approx(1 / 3)
    assert request_metrics.totals()["POST /predict"].requests == 4


def test_middleware_records_by_route_and_metrics_endpoint_exposes_it(client):
    for _ in range(3):
        assert client.get("/health").status_code == 200
    client.get("/no-such-page")
    body = client.get("/metrics").content.decode()
    assert 'investml_http_requests_total{endpoint="GET /health"} 3.0' in body
    assert 'endpoint="GET (unmatched)"' in body
    assert "investml_process_memory_rss_bytes" in body and "investml_system_cpu_utilization" in body


def test_invented_http_methods_fold_into_one_series(client):
    for i in range(300):
        client.generic(f"X{i:03d}", "/health")
    client.generic("PROPFIND", "/no-such-page")
    endpoints = request_metrics.known_endpoints()
    assert not any(e.startswith("X") for e in endpoints)
    assert {"OTHER /health", "OTHER (unmatched)"} <= set(endpoints)
    assert request_metrics.totals()["OTHER /health"].requests == 300
    body = client.get("/metrics").content.decode()
    series = [line for line in body.splitlines() if line.startswith("investml_http_requests_total{")]
    other = [line for line in series if 'endpoint="OTHER' in line]
    assert len(other) == 2, other  # OTHER /health and OTHER (unmatched): not 301 series
    assert not any('endpoint="X' in line or "PROPFIND" in line for line in series)
