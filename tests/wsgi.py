"""One request through ``investml.wsgi.application`` (Django's handler and every middleware), as a
WSGI server runs it."""

from __future__ import annotations


def call_wsgi(environ: dict, application=None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of ``environ`` through ``application`` (default: the served one);
    the response is closed as a server closes it (which fires ``request_finished``: the
    prediction-log flush check)."""
    if application is None:
        from investml.wsgi import application

    answer: dict = {}

    def start_response(status, headers, exc_info=None):
        answer["status"], answer["headers"] = int(status.split()[0]), dict(headers)

    response = application(environ, start_response)
    try:
        content = b"".join(response)
    finally:
        response.close()
    return answer["status"], answer["headers"], content
