"""Operator actions need staff status and a Django model permission (issue 15, security item 4):

| action | permission |
| --- | --- |
| acknowledge, resolve an alert (dashboard) | ``monitoring.change_alert`` |
| promote, force-promote, roll back (dashboard) | ``registry.change_modelversion`` |
| load, unload a model (API) | ``registry.change_registeredmodel`` |
| retrain (API) | ``training.add_pipelinerun`` |

A signed-in user without them, staff or not, gets 403 and no buttons; superusers and staff holding
them keep working. Against the real test database, through Django's and DRF's test clients."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from inference import authentication, throttling
from inference.model_manager import get_manager
from monitoring.models import Alert
from registry.models import DeploymentEvent, ModelVersion, RegisteredModel
from tests.browser.dashboard_seed import seed

pytestmark = pytest.mark.django_db

OPERATOR_PERMISSIONS = ("monitoring.change_alert", "registry.change_modelversion",
                        "registry.change_registeredmodel", "training.add_pipelinerun")


def grant(user, *perms: str) -> None:
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


@pytest.fixture(autouse=True)
def _own_cache(dashboard_settings):
    get_manager().reset()
    throttling.reset_leases()
    authentication.forget_all()
    yield dashboard_settings
    get_manager().reset()
    authentication.forget_all()


def make_user(kind: str, *perms: str):
    model = get_user_model()
    name = f"{kind}-{uuid.uuid4().hex[:6]}"
    if kind == "superuser":
        return model.objects.create_superuser(name, f"{name}@example.com", "pw-super-9x")
    user = model.objects.create_user(name, f"{name}@example.com", "pw-user-9x", is_staff=kind.startswith("staff"))
    grant(user, *perms)
    return user


@pytest.fixture
def people():
    return {
        "viewer": make_user("viewer"),
        "staff": make_user("staff"),  # staff, no permission
        "viewer+perms": make_user("viewer", *OPERATOR_PERMISSIONS),  # permission, not staff
        "operator": make_user("staff-operator", *OPERATOR_PERMISSIONS),
        "superuser": make_user("superuser"),
    }


def dashboard(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


DENIED = ("viewer", "staff", "viewer+perms")
ALLOWED = ("operator", "superuser")


def test_acknowledging_and_resolving_alerts_needs_the_alert_permission(people):
    seed()
    for who in DENIED:
        client = dashboard(people[who])
        alert = Alert.objects.filter(resolved=False, acknowledged=False).first()
        assert client.post(reverse("dashboard:acknowledge", args=[alert.pk])).status_code == 403, who
        assert client.post(reverse("dashboard:resolve", args=[alert.pk])).status_code == 403, who
        alert.refresh_from_db()
        assert not alert.acknowledged and not alert.resolved, who
        page = client.get(reverse("dashboard:alerts")).content.decode()
        assert ">Acknowledge</button>" not in page and ">Resolve</button>" not in page, who

    for who in ALLOWED:
        client = dashboard(people[who])
        assert ">Acknowledge</button>" in client.get(reverse("dashboard:alerts")).content.decode(), who
        alert = Alert.objects.filter(resolved=False, acknowledged=False).first()
        assert client.post(reverse("dashboard:acknowledge", args=[alert.pk])).status_code == 302, who
        assert client.post(reverse("dashboard:resolve", args=[alert.pk])).status_code == 302, who
        alert.refresh_from_db()
        assert alert.acknowledged_by == people[who].username and alert.resolved, who


def test_promote_force_promote_and_rollback_need_the_model_version_permission(people):
    data = seed()
    url = reverse("dashboard:model", args=["xgboost_classifier"])
    promote = reverse("dashboard:promote", args=["xgboost_classifier", data["xgb_staging"].pk])
    rollback = reverse("dashboard:rollback", args=["xgboost_classifier"])
    for who in DENIED:
        client = dashboard(people[who])
        html = client.get(url).content.decode()
        assert "promote-button" not in html and "rollback-button" not in html, who
        assert client.post(promote).status_code == 403, who
        assert client.post(promote, {"force": "1"}).status_code == 403, who
        assert client.post(rollback).status_code == 403, who
    assert ModelVersion.objects.get(pk=data["xgb_staging"].pk).status == "staging"
    assert not DeploymentEvent.objects.filter(actor__in=[people[w].username for w in DENIED]).exists()

    operator = dashboard(people["operator"])
    assert "promote-button" in operator.get(url).content.decode()
    assert "is now active" in operator.post(promote, {"force": "1"}, follow=True).content.decode()
    assert ModelVersion.objects.get(pk=data["xgb_staging"].pk).status == "active"
    boss = dashboard(people["superuser"])
    assert "rollback-button" in boss.get(url).content.decode()
    assert "Rolled back xgboost_classifier" in boss.post(rollback, follow=True).content.decode()
    assert ModelVersion.objects.get(pk=data["xgb_active"].pk).status == "active"


def test_retrain_load_and_unload_need_their_permissions(people, monkeypatch):
    from training.models import PipelineRun

    monkeypatch.setattr("training.orchestrator.dispatch.start_chain", lambda *, run_id, generation: f"task-{run_id}")
    RegisteredModel.objects.create(name="xgboost_classifier", model_type="tree_ensemble")  # no active version
    calls = [("post", "/retrain"), ("post", "/models/xgboost_classifier/load"), ("delete", "/models/xgboost_classifier")]
    for who in DENIED:
        client = api(people[who])
        for method, path in calls:
            response = getattr(client, method)(path)
            assert response.status_code == 403, (who, path, response.content)
            assert "permission" in response.json()["detail"], (who, path)
    assert not PipelineRun.objects.exists()

    for who in ALLOWED:
        client = api(people[who])
        assert client.post("/retrain").status_code == 202, who
        assert client.delete("/models/xgboost_classifier").status_code == 200, who
        # allowed, and the registry answers: nothing active to load
        assert client.post("/models/xgboost_classifier/load").status_code == 409, who
    assert PipelineRun.objects.filter(trigger="api").exists()


def test_each_action_needs_its_own_permission(people):
    """A staff user holding only the alert permission can acknowledge, not retrain or promote."""
    data = seed()
    alerts_only = make_user("staff-alerts", "monitoring.change_alert")
    client = dashboard(alerts_only)
    alert = Alert.objects.filter(resolved=False, acknowledged=False).first()
    assert client.post(reverse("dashboard:acknowledge", args=[alert.pk])).status_code == 302
    promote = reverse("dashboard:promote", args=["xgboost_classifier", data["xgb_staging"].pk])
    assert client.post(promote).status_code == 403
    assert api(alerts_only).post("/retrain").status_code == 403
