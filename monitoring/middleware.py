import time

from monitoring.request_metrics import record_request

# A client chooses the method string: anything else folds into one label, so invented methods
# cannot create metric series without bound (the paths already fold into routes / "(unmatched)").
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def endpoint_label(method: str, route: str | None) -> str:
    verb = method if method in HTTP_METHODS else "OTHER"
    return f"{verb} /{route}" if route is not None else f"{verb} (unmatched)"


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
        endpoint = endpoint_label(request.method, match.route if match is not None else None)
        try:
            record_request(endpoint=endpoint, status_code=response.status_code,
                           duration_ms=(time.perf_counter() - started) * 1000)
        except Exception:  # noqa: BLE001 - monitoring must never fail a request
            pass
        return response
