"""Request parsing for the inference API."""

from __future__ import annotations

import json

import orjson
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Python's json decoder recurses per nesting level: a deep enough body raises RecursionError,
# which is not a ValueError and would answer 500 with a traceback.
TOO_DEEP = "JSON parse error - the body is nested too deeply"


class LenientJSONParser(JSONParser):
    """JSON that may contain ``NaN`` and ``Infinity`` literals: they are parsed, then rejected by the
    serializers with a message naming the field (strict parsing would fail the whole body first).
    orjson first (fast, strict), then Python's lenient parser for what orjson refuses. JSON is UTF-8
    (RFC 8259). ``ParseError`` (400) for a body that is not JSON or is nested too deeply."""

    def parse(self, stream, media_type=None, parser_context=None):
        body = stream.read()
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        try:
            return json.loads(body.decode("utf-8"))
        except RecursionError:
            raise ParseError(TOO_DEEP) from None
        except ValueError as exc:  # as DRF's JSONParser words it
            raise ParseError(f"JSON parse error - {exc}") from None
