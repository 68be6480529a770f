"""Probe a running InvestML server for the holes of issue 15, as an outsider, a user and an operator.

    .venv/bin/python tests/probe/security_probe.py http://127.0.0.1:8001 --user-token T1 --staff-token T2 \\
        [--login-user NAME]

Each check prints ``PASS``/``FAIL <what was seen>``; the exit status is the number of failures.
It needs nothing from the project (``requests`` only), so it runs from any machine that reaches the
server. It sends a few hundred requests and locks ``--login-user`` (default ``probe-nobody``) out
of sign-in from the probe's address for the cool-off period: point it at a throwaway account.

Checked (issue 15's numbering): 2 failed sign-ins and bad tokens are slowed down (429), 3 invented
HTTP methods do not grow /metrics, 4 a non-staff token cannot retrain, load or unload, 5 anonymous
/health shows the status only, 6 a foreign Host header is refused, 7 deeply nested JSON is a 400.
Items 1 (secret key), 8 (revocation), 9 (logs) and 10 (database down) need the server's side and
are covered by the test suite.
"""

from __future__ import annotations

import argparse
import re
import sys
import uuid
from collections.abc import Callable

import requests

TIMEOUT = 10


def check_health_is_status_only(base: str, **_) -> str | None:
    body = requests.get(f"{base}/health", timeout=TIMEOUT).json()
    return None if set(body) <= {"status"} else f"anonymous /health shows {sorted(body)}"


def check_foreign_host_is_refused(base: str, **_) -> str | None:
    # without the Host check these answer 200 and 401: only the check makes them 400
    for method, path in (("GET", "/health"), ("POST", "/predict")):
        r = requests.request(method, f"{base}{path}", json={"ticker": "AAPL"} if method == "POST" else None,
                             headers={"Host": "evil.example"}, timeout=TIMEOUT)
        if r.status_code != 400:
            return f"Host: evil.example answered {r.status_code} on {method} {path}"
    return None


def check_nested_json_is_400(base: str, user_token: str, **_) -> str | None:
    body = '{"features": ' + "[" * 20_000 + "]" * 20_000 + ', "model_name": "xgboost_classifier"}'
    for path in ("/predict", "/predict/batch"):
        r = requests.post(f"{base}{path}", data=body, timeout=TIMEOUT,
                          headers={"Content-Type": "application/json", "Authorization": f"Token {user_token}"})
        if r.status_code != 400:
            return f"nested JSON on {path} answered {r.status_code}"
    return None


def check_invented_methods_do_not_grow_metrics(base: str, **_) -> str | None:
    marker = f"PROBE{uuid.uuid4().hex[:6].upper()}"
    for i in range(30):
        requests.request(f"{marker}{i}", f"{base}/health", timeout=TIMEOUT)
    text = requests.get(f"{base}/metrics", timeout=TIMEOUT).text
    return f"/metrics holds series named after invented methods ({marker}*)" if marker in text else None


def check_user_cannot_operate(base: str, user_token: str, **_) -> str | None:
    auth = {"Authorization": f"Token {user_token}"}
    for method, path in (("POST", "/retrain"), ("POST", "/models/xgboost_classifier/load"),
                         ("DELETE", "/models/xgboost_classifier")):
        r = requests.request(method, f"{base}{path}", headers=auth, timeout=TIMEOUT)
        if r.status_code != 403:
            return f"a non-staff token got {r.status_code} on {method} {path}"
    return None


def check_bad_tokens_are_throttled(base: str, **_) -> str | None:
    for i in range(200):
        r = requests.get(f"{base}/models", headers={"Authorization": f"Token probe{uuid.uuid4().hex}"},
                         timeout=TIMEOUT)
        if r.status_code == 429:
            return None
        if r.status_code != 401:
            return f"bad token number {i + 1} answered {r.status_code}"
    return "200 requests with bad tokens, none slowed down (no 429)"


def check_failed_logins_lock_out(base: str, login_user: str, **_) -> str | None:
    session = requests.Session()
    page = f"{base}/dashboard/login/"
    for i in range(30):
        form = session.get(page, timeout=TIMEOUT)
        if form.status_code == 429:
            return None
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        data = {"username": login_user, "password": f"wrong-{i}",
                "csrfmiddlewaretoken": found.group(1) if found else ""}
        r = session.post(page, data=data, headers={"Referer": page}, timeout=TIMEOUT, allow_redirects=False)
        if r.status_code == 429:
            return None
    return "30 wrong passwords in a row, never locked out (no 429)"


CHECKS: list[tuple[str, Callable[..., str | None]]] = [
    ("5 anonymous /health shows the status only", check_health_is_status_only),
    ("6 a foreign Host header is refused", check_foreign_host_is_refused),
    ("7 deeply nested JSON is a 400", check_nested_json_is_400),
    ("3 invented HTTP methods do not grow /metrics", check_invented_methods_do_not_grow_metrics),
    ("4 a non-staff token cannot retrain, load or unload", check_user_cannot_operate),
    ("2 bad tokens are throttled by address", check_bad_tokens_are_throttled),
    ("2 failed sign-ins lock out", check_failed_logins_lock_out),
]


def probe(base: str, *, user_token: str, staff_token: str, login_user: str = "probe-nobody",
          say: Callable[[str], None] = print) -> int:
    base = base.rstrip("/")
    failures = 0
    # the operator's token must work, or the non-staff 403s would prove nothing
    staff = requests.get(f"{base}/models", headers={"Authorization": f"Token {staff_token}"}, timeout=TIMEOUT)
    if staff.status_code != 200:
        say(f"FAIL setup: the staff token got {staff.status_code} on /models")
        return 1
    for name, check in CHECKS:
        try:
            problem = check(base, user_token=user_token, staff_token=staff_token, login_user=login_user)
        except requests.RequestException as exc:
            problem = f"{exc.__class__.__name__}: {exc}"
        failures += problem is not None
        say(f"{'PASS' if problem is None else 'FAIL'} {name}{'' if problem is None else ': ' + problem}")
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base_url")
    parser.add_argument("--user-token", required=True)
    parser.add_argument("--staff-token", required=True)
    parser.add_argument("--login-user", default="probe-nobody")
    args = parser.parse_args()
    sys.exit(probe(args.base_url, user_token=args.user_token, staff_token=args.staff_token,
                   login_user=args.login_user))


if __name__ == "__main__":
    main()
