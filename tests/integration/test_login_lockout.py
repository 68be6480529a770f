"""Failed sign-ins are limited (issue 15, security item 2): on the dashboard's and the admin's login
pages, repeated wrong passwords for one account from one address lock that pair out (429 and a page
that says why and for how long), so does a run of failures from one address over many accounts; the
same account from another address still signs in, and the lockout ends after the cool-off.

Through Django's test client against the real test database (django-axes keeps its records there)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db

PASSWORD = "lockout-test-pass-7"
ATTACKER = "203.0.113.9"  # documentation addresses: REMOTE_ADDR only, nothing is sent anywhere
OTHER = "198.51.100.4"
# the documented defaults (README, "Sign-in limits"): 5 failures per account and address, 20 per
# address over all accounts, 15 minutes of cool-off
PER_ACCOUNT = 5
PER_ADDRESS = 20
LOGIN_PAGES = ["/dashboard/login/", "/admin/login/"]


@pytest.fixture(autouse=True)
def _dashboard(dashboard_settings):
    # a fast hasher: some sixty sign-ins here; what is counted and locked does not depend on it
    dashboard_settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return dashboard_settings


@pytest.fixture
def people():
    model = get_user_model()
    viewer = model.objects.create_user("viewer", "viewer@example.com", PASSWORD)
    admin = model.objects.create_user("boss", "boss@example.com", PASSWORD, is_staff=True, is_superuser=True)
    return viewer, admin


def attempt(url: str, username: str, password: str, *, address: str = ATTACKER, client: Client | None = None):
    client = client or Client(REMOTE_ADDR=address)
    return client.post(url, {"username": username, "password": password, "next": ""})


def signed_in(response) -> bool:
    return response.status_code == 302 and "_auth_user_id" in response.wsgi_request.session


@pytest.mark.parametrize("url", LOGIN_PAGES)
def test_repeated_wrong_passwords_lock_the_account_out_from_that_address(people, url):
    viewer, admin = people
    user = admin if url.startswith("/admin/") else viewer
    statuses = [attempt(url, user.username, "wrong-password").status_code for _ in range(10)]
    # the failures before the limit get the login form again; the one that reaches it and every
    # later one are refused
    assert statuses[: PER_ACCOUNT - 1] == [200] * (PER_ACCOUNT - 1), statuses
    assert statuses[PER_ACCOUNT - 1:] == [429] * (10 - PER_ACCOUNT + 1), statuses

    locked = attempt(url, user.username, PASSWORD)  # the right password does not get through now
    assert locked.status_code == 429 and not signed_in(locked)
    page = locked.content.decode()
    assert "Too many failed sign-ins" in page and "15 minutes" in page and user.username in page

    # not a lockout for everyone: the account signs in from another address
    assert signed_in(attempt(url, user.username, PASSWORD, address=OTHER))


def test_a_run_of_failures_over_many_accounts_locks_the_address(people):
    viewer, _ = people
    model = get_user_model()
    for i in range(PER_ADDRESS):
        model.objects.create_user(f"spray-{i}", password=PASSWORD)
    statuses = [attempt("/dashboard/login/", f"spray-{i}", "Summer2024!").status_code for i in range(PER_ADDRESS + 2)]
    assert statuses[: PER_ADDRESS - 1] == [200] * (PER_ADDRESS - 1), statuses
    assert set(statuses[PER_ADDRESS - 1:]) == {429}, statuses
    # the address is locked for every account, even with a right password ...
    assert attempt("/dashboard/login/", viewer.username, PASSWORD).status_code == 429
    assert attempt("/admin/login/", viewer.username, PASSWORD).status_code == 429
    # ... other addresses are not
    assert signed_in(attempt("/dashboard/login/", viewer.username, PASSWORD, address=OTHER))


def test_the_lockout_ends_after_the_cool_off_and_a_success_clears_the_count(people):
    from axes.models import AccessAttempt

    viewer, _ = people
    for _ in range(PER_ACCOUNT):
        attempt("/dashboard/login/", viewer.username, "wrong-password")
    assert attempt("/dashboard/login/", viewer.username, PASSWORD).status_code == 429

    # 16 minutes later (the records' times moved back; the cool-off is 15 minutes)
    rows = AccessAttempt.objects.filter(ip_address=ATTACKER)
    assert rows.exists()
    for row in rows:
        row.attempt_time -= timedelta(minutes=16)
        row.save(update_fields=["attempt_time"])
    assert signed_in(attempt("/dashboard/login/", viewer.username, PASSWORD))

    # a successful sign-in forgets the earlier failures: four more mistakes are not a lockout
    for _ in range(PER_ACCOUNT - 1):
        assert attempt("/dashboard/login/", viewer.username, "wrong-password").status_code == 200
    assert signed_in(attempt("/dashboard/login/", viewer.username, PASSWORD))


def test_sign_in_still_works_and_unknown_accounts_count_too(people):
    viewer, _ = people
    assert signed_in(attempt("/dashboard/login/", viewer.username, PASSWORD))
    statuses = [attempt("/dashboard/login/", "nobody-here", "x").status_code for _ in range(PER_ACCOUNT)]
    assert statuses[-1] == 429 and statuses[:-1] == [200] * (PER_ACCOUNT - 1)
