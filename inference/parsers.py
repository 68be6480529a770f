"""Request parsing for the inference API."""

from __future__ import annotations

from rest_framework.parsers import JSONParser


class LenientJSONParser(JSONParser):
    """JSON that may contain ``NaN`` and ``Infinity`` literals: they are parsed, then rejected by the
    serializers with a message naming the field (strict parsing would fail the whole body first)."""

    strict = False
