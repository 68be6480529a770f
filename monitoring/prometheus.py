"""Prometheus exposition of request metrics (shared across workers) and this process's CPU and memory."""

from __future__ import annotations

import psutil
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from monitoring import request_metrics


class InvestMLCollector:
    def collect(self):
        requests = CounterMetricFamily("investml_http_requests", "HTTP requests by endpoint", labels=["endpoint"])
        errors = CounterMetricFamily("investml_http_errors", "HTTP 5xx responses by endpoint", labels=["endpoint"])
        seconds = CounterMetricFamily(
            "investml_http_request_duration_seconds", "Total time spent serving requests", labels=["endpoint"]
        )
        recent = GaugeMetricFamily(
            "investml_http_latency_avg_5m_ms", "Average latency over the last 5 minutes", labels=["endpoint"]
        )
        for endpoint, total in request_metrics.totals().items():
            requests.add_metric([endpoint], total.requests)
            errors.add_metric([endpoint], total.errors)
            seconds.add_metric([endpoint], total.total_ms / 1000.0)
        for endpoint, win in request_metrics.window(minutes=5).items():
            if win.requests:
                recent.add_metric([endpoint], win.avg_ms)
        yield from (requests, errors, seconds, recent)

        process = psutil.Process()
        with process.oneshot():
            cpu = process.cpu_times()
            yield GaugeMetricFamily("investml_process_cpu_seconds", "CPU seconds of this process",
                                    value=cpu.user + cpu.system)
            yield GaugeMetricFamily("investml_process_memory_rss_bytes", "Resident memory of this process",
                                    value=process.memory_info().rss)
        yield GaugeMetricFamily("investml_system_cpu_utilization", "Machine CPU utilization (0-1)",
                                value=psutil.cpu_percent(interval=None) / 100.0)
        yield GaugeMetricFamily("investml_system_memory_utilization", "Machine memory utilization (0-1)",
                                value=psutil.virtual_memory().percent / 100.0)


def render() -> bytes:
    registry = CollectorRegistry()
    registry.register(InvestMLCollector())
    return generate_latest(registry)
