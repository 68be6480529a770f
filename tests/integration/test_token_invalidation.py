"""A worker's memory of checked API tokens never outlives a change made in another worker (issue 15,
security item 8): deactivating a user, deleting a token or taking away the staff flag is seen by the
next request in every worker, through a version key in the shared Django cache; staff authorization
is never taken from that memory at all.

Two workers are simulated in one process: "worker A" is this process's token memory as it stood
before the change (saved, then put back after the change, as if the change's signals had run in
another process: the only thing that reaches worker A is the shared cache)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from inference import authentication, throttling
from investml.cache_serializers import JSONCounterDisk

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def own_cache(settings, monkeypatch):
    caches = {name: dict(conf) for name, conf in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = f"test-tokmemo-{uuid.uuid4().hex[:10]}"
    settings.CACHES = caches
    settings.ML_API_TOKEN_CACHE_SECONDS = 30
    monkeypatch.setattr("training.orchestrator.dispatch.start_chain", lambda *, run_id, generation: f"task-{run_id}")
    throttling.reset_leases()
    authentication.forget_all()
    yield
    authentication.forget_all()


def make_user(*, staff: bool = False):
    user = get_user_model().objects.create_user(f"u-{uuid.uuid4().hex[:6]}", is_staff=staff)
    if staff:  # what POST /retrain needs besides staff status
        user.user_permissions.add(Permission.objects.get(content_type__app_label="training", codename="add_pipelinerun"))
    token = Token.objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return user, token, client


def worker_a_memory() -> dict:
    """What worker A remembers now (its token memory)."""
    return dict(authentication._remembered)


def restore(memory: dict) -> None:
    """Worker A after a change made elsewhere: its own memory, untouched by the change's signals."""
    authentication._remembered.update(memory)


def test_a_deactivated_user_is_refused_at_once_in_other_workers():
    user, _, client = make_user()
    assert client.get("/models").status_code == 200  # worker A checks the token and remembers it
    memory = worker_a_memory()
    assert memory, "the token should be remembered"

    user.is_active = False
    user.save()  # in worker B
    restore(memory)
    assert client.get("/models").status_code == 401


def test_a_deleted_token_is_refused_at_once_in_other_workers():
    _, token, client = make_user()
    assert client.get("/models").status_code == 200
    memory = worker_a_memory()
    token.delete()  # in worker B
    restore(memory)
    assert client.get("/models").status_code == 401


def test_a_removed_staff_flag_stops_staff_actions_at_once_in_other_workers():
    user, _, client = make_user(staff=True)
    assert client.get("/models").status_code == 200
    assert client.post("/retrain").status_code == 202
    memory = worker_a_memory()
    user.is_staff = False
    user.save()  # in worker B
    restore(memory)
    assert client.post("/retrain").status_code == 403


def test_staff_authorization_is_never_remembered():
    """Changes that send no signal at all (a bulk update, a permission taken away) still count for
    staff actions on the next request, while the token itself may stay remembered."""
    user, _, client = make_user(staff=True)
    assert client.post("/retrain").status_code == 202
    get_user_model().objects.filter(pk=user.pk).update(is_staff=False)  # no save(), no signal
    assert client.get("/models").status_code == 200  # the token is still good (the memory may say so)
    assert client.post("/retrain").status_code == 403

    other, _, other_client = make_user(staff=True)
    assert other_client.post("/retrain").status_code == 202
    other.user_permissions.clear()
    assert other_client.post("/retrain").status_code == 403


def test_an_unrelated_sign_in_does_not_empty_the_memory():
    """Only changes that matter invalidate: a dashboard sign-in (last_login) leaves every worker's
    memory in use, so the next request needs no token query."""
    from django.contrib.auth.models import update_last_login
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    _, _, client = make_user()
    someone = get_user_model().objects.create_user(f"s-{uuid.uuid4().hex[:6]}")
    assert client.get("/models").status_code == 200
    memory = worker_a_memory()
    update_last_login(None, someone)  # in worker B
    restore(memory)
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/models").status_code == 200
    assert not [q for q in queries.captured_queries if "authtoken_token" in q["sql"]]


BUMP_ELSEWHERE = """
import django, sys
django.setup()
from inference import authentication
before = authentication._shared_version()
authentication._bump()
print(f"{before.hex()}:{authentication._shared_version().hex()}")
"""


def test_with_the_disk_cache_another_process_bump_reaches_this_one(settings, tmp_path):
    """One machine, the embedded disk cache: the version is a file beside the cache; another
    process's bump empties this one's memory, also after the file was deleted and made again."""
    settings.CACHES = {"default": {"BACKEND": authentication.DISK_CACHE_BACKEND, "LOCATION": str(tmp_path / "cache"),
                                   "TIMEOUT": None, "SHARDS": 1, "OPTIONS": {"disk": JSONCounterDisk}}}
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(INVESTML_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="investml.settings")

    def bump_elsewhere() -> tuple[str, str]:
        out = subprocess.run([sys.executable, "-c", BUMP_ELSEWHERE], env=env, capture_output=True, text=True,
                             timeout=120, check=True)
        seen, bumped = out.stdout.split()[-1].split(":")
        return seen, bumped

    def remember() -> None:
        authentication._seen["version"] = authentication._shared_version()
        authentication._remembered["key"] = (time.monotonic() + 30, "user", "token")
        assert authentication.remembered("key") == ("user", "token")

    authentication._bump()  # this process writes...
    remember()
    seen_there, bumped_there = bump_elsewhere()
    assert seen_there == authentication._seen["version"].hex()  # ...the other reads the same version
    assert authentication.remembered("key") is None  # and its bump empties this memory
    assert authentication._shared_version().hex() == bumped_there

    remember()
    os.remove(tmp_path / "cache" / authentication.VERSION_FILE)  # deleted: the next bump makes a new file
    bump_elsewhere()
    assert authentication.remembered("key") is None
