"""The security probe (tests/probe/security_probe.py) against a live server of this code: it finds
none of the holes it looks for."""

from __future__ import annotations

import pytest

from tests.integration.test_inference_api import make_token
from tests.probe.security_probe import CHECKS, probe

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_probe_finds_no_hole(live_server, settings, dashboard_settings):
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
    lines: list[str] = []
    failures = probe(live_server.url, user_token=make_token(staff=False), staff_token=make_token(staff=True),
                     say=lines.append)
    assert failures == 0, "\n".join(lines)
    assert len(lines) == len(CHECKS) and all(line.startswith("PASS") for line in lines)


def test_the_probe_sees_a_hole_when_one_is_opened(live_server, settings, dashboard_settings):
    settings.ALLOWED_HOSTS = ["*"]  # any Host header served: item 6's hole
    lines: list[str] = []
    failures = probe(live_server.url, user_token=make_token(staff=False), staff_token=make_token(staff=True),
                     say=lines.append)
    assert failures == 1, "\n".join(lines)
    assert [line for line in lines if line.startswith("FAIL")] == [
        "FAIL 6 a foreign Host header is refused: Host: evil.example answered 200 on GET /health"]
