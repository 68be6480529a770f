import time

from monitoring.request_metrics import record_request


class RequestMetricsMiddleware:
    """Times every request and counts 5xx per endpoint (the URL pattern, not the raw path)."""

    SKIP_PREFIXES = ("/static/", "/metrics")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith(self.SKIP_PREFIXES):
            return self.get_response(request)
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)  # set by Django's URL resolution
        endpoint = f"{request.method} /{match.route}" if match is not None else f"{request.method} (unmatched)"
        try:
            record_request(endpoint=endpoint, status_code=response.status_code,
                           duration_ms=(time.perf_counter() - started) * 1000)
        except Exception:  # noqa: BLE001 - monitoring must never fail a request
            pass
        return response
