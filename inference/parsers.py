"""Request parsing for the inference API."""

from __future__ import annotations

import json
from typing import Any

import orjson
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Python's json decoder recurses per nesting level: a deep enough body raises RecursionError,
# which is not a ValueError and would answer 500 with a traceback.
TOO_DEEP = "JSON parse error - the body is nested too deeply"


class LenientJSONParser(JSONParser):
    """JSON that may contain ``NaN`` and ``Infinity`` literals: they are parsed, then rejected by the
    serializers with a message naming the field (strict parsing would fail the whole body first).
    The same parsing as the /predict fast lane (``parse_json_body``); JSON is UTF-8 (RFC 8259)."""

    strict = False

    def parse(self, stream, media_type=None, parser_context=None):
        return parse_json_body(stream.read())


def parse_json_body(body: bytes) -> Any:
    """The body as the DRF views parse it, fast: orjson first, then the lenient parser (NaN and
    Infinity literals reach the serializers, which name the field). ``ParseError`` (400) for a body
    that is not JSON or is nested too deeply."""
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
