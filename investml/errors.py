"""The database down: API routes answer 503 JSON ``{"detail": ..., "reason": "database unavailable"}``,
never a 500 (HTML on DRF routes) with the driver's error.

One answer for every place a request can meet the outage: DRF's exception handler (``REST_FRAMEWORK
["EXCEPTION_HANDLER"]``: authentication and views of DRF routes) and ``DatabaseUnavailableMiddleware``
(any other view). The error itself is logged, without a traceback, never sent.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger("investml.outage")

DATABASE_ERRORS = (OperationalError, InterfaceError)
RETRY_AFTER_SECONDS = 5
# pages for people, not API clients: an HTML 503 there
NON_API_PREFIXES = ("/admin/", "/dashboard/")


def database_unavailable_body() -> dict[str, str]:
    return {"detail": "The service cannot reach its database; retry shortly.", "reason": "database unavailable"}


def _log(exc: BaseException, path: str) -> None:
    logger.warning("database unavailable (%s) serving %s: %s", exc.__class__.__name__, path,
                   str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "")


def database_unavailable_response(exc: BaseException, path: str) -> HttpResponse:
    """The 503 for ``path``: JSON on API routes, a short HTML page on the admin and dashboard."""
    _log(exc, path)
    if path.startswith(NON_API_PREFIXES):
        response = HttpResponse("<h1>Service unavailable (503)</h1><p>The database cannot be reached; "
                                "retry shortly.</p>", status=503)
    else:
        response = JsonResponse(database_unavailable_body(), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus: a database outage is a 503 with a reason."""
    if isinstance(exc, DATABASE_ERRORS):
        request = context.get("request")
        _log(exc, getattr(request, "path", "?"))
        return Response(database_unavailable_body(), status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    return drf_exception_handler(exc, context)


class DatabaseUnavailableMiddleware:
    """A view (DRF or not) that met a database outage answers 503, not Django's 500."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, DATABASE_ERRORS):
            return database_unavailable_response(exception, request.path)
        return None
