"""``POST /predict`` served in front of Django's request handler (the WSGI application wraps it).

A single prediction is the API's hot path: measured under load, Django's handler, its middleware
(sessions, messages, CSRF, URL resolution) and DRF's request machinery cost several times the model
call. Here the request goes through only what matters for it: the security and frame-options
middleware (HTTPS redirect, HSTS and the other headers, as for any response), ``views.fast_predict``
(the same token authentication, permission, throttles, limits, validation and service as the DRF
view) and the request-metrics record, then Django's request_finished signal (database connection
upkeep, the prediction-log flush); request_started is not sent, its receivers repeat what
request_finished did.

Whatever ``fast_predict`` declines (no or bad token, other methods, wrong content type, throttled,
too large) goes to the full Django application, unchanged, as does every other path.

As in Django, the Host header is checked against ALLOWED_HOSTS (``request.get_host()``) and every
exception of a layer becomes the response Django would give (``convert_exception_to_response``): a
bad host is Django's 400 (also where the HTTPS redirect reads the host first), never an exception
out of the WSGI callable; the database down is the API's 503 (``investml.errors``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware

from inference import signals
from inference.views import DECLINED, fast_predict, json_response
from investml.errors import DATABASE_ERRORS, database_unavailable_response

logger = logging.getLogger("django.request")

PATH = "/predict"
ENDPOINT = "POST /predict"  # the name RequestMetricsMiddleware gives the route


class _Declined(HttpResponse):
    """Marks a request the fast lane hands to Django."""


def _check_host(get_response: Any) -> Any:
    """What Django's CommonMiddleware does for every request: ``get_host()`` raises DisallowedHost
    (a 400 once converted) for a Host header that ALLOWED_HOSTS does not list."""

    def check(request: WSGIRequest) -> HttpResponse:
        request.get_host()
        return get_response(request)

    return check


def _handle(request: WSGIRequest) -> HttpResponse:
    try:
        return fast_predict(request) or _Declined()
    except DATABASE_ERRORS as exc:  # the database down: 503 with the reason, as on every API route
        return database_unavailable_response(exc, request.path)
    except Exception:  # as Django's handler: log it, answer 500 (no details in the body)
        logger.exception("Internal Server Error: %s", request.path)
        return json_response({"detail": "internal server error"}, 500)


class PredictFastLane:
    def __init__(self, application: Any) -> None:
        self.application = application
        # each layer wrapped as Django's handler wraps its middleware
        self.chain = convert_exception_to_response(SecurityMiddleware(convert_exception_to_response(
            XFrameOptionsMiddleware(convert_exception_to_response(_check_host(_handle))))))

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.application(environ, start_response)
        started = time.perf_counter()
        request = WSGIRequest(environ)
        response = self.chain(request)
        if isinstance(response, _Declined):
            environ[DECLINED] = True  # the view then skips fast_predict: no second token lookup
            return self.application(environ, start_response)
        try:  # counted by monitoring (the middleware that counts the other routes is skipped here)
            signals.request_served.send(sender=PredictFastLane, endpoint=ENDPOINT, status_code=response.status_code,
                                        duration_ms=(time.perf_counter() - started) * 1000)
        except Exception:  # noqa: BLE001 - monitoring must never fail a request
            pass
        # as django.core.handlers.wsgi.WSGIHandler: closing the response sends request_finished
        response._resource_closers.append(request.close)
        headers = [*response.items(), *(("Set-Cookie", c.output(header="")) for c in response.cookies.values())]
        start_response(f"{response.status_code} {response.reason_phrase}", headers)
        return response
