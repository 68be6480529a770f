"""The dashboard through Django's test client: login required, every page renders with data and
empty, alert actions by POST with CSRF, promote and rollback for operators only (staff with the model
permissions, tests/integration/test_operator_permissions.py has the full table), the plotly static file."""

from __future__ import annotations

import re

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import reverse

from monitoring.models import Alert
from registry.models import DeploymentEvent, ModelVersion
from tests.browser.dashboard_seed import PASSWORD, seed, users

pytestmark = pytest.mark.django_db

PAGES = ["overview", "alerts", "costs", "models", "drift", "runs"]


@pytest.fixture(autouse=True)
def _dashboard(dashboard_settings):
    return dashboard_settings


@pytest.fixture
def people():
    return users()


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def all_urls(data=None) -> list[str]:
    urls = [reverse(f"dashboard:{p}") for p in PAGES]
    if data:
        urls += [reverse("dashboard:model", args=["xgboost_classifier"]), reverse("dashboard:run", args=[data["ok_run"].pk]),
                 reverse("dashboard:drift") + "?model=lstm_predictor", reverse("dashboard:alerts") + "?state=all"]
    return urls


def test_root_redirects_to_the_dashboard_and_anonymous_users_to_login(people):
    assert Client().get("/").url == "/dashboard/"
    for url in all_urls():
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith("/dashboard/login/?next="), url


def test_login_page_signs_a_non_staff_user_in(people):
    client = Client()
    assert client.get(reverse("dashboard:login")).status_code == 200
    response = client.post(reverse("dashboard:login"), {"username": "viewer", "password": PASSWORD, "next": "/dashboard/costs/"})
    assert response.status_code == 302 and response["Location"] == "/dashboard/costs/"
    assert client.get("/dashboard/costs/").status_code == 200


def test_every_page_renders_empty_states(people):
    client = login(people[0])
    expected = {"overview": "No active model yet", "alerts": "No alerts match", "costs": "No costs recorded",
                "models": "No model registered yet", "drift": "No drift reports yet", "runs": "No training runs yet"}
    for page, text in expected.items():
        response = client.get(reverse(f"dashboard:{page}"))
        assert response.status_code == 200, page
        assert text in response.content.decode(), page
    assert "No pipeline runs yet" in client.get(reverse("dashboard:runs")).content.decode()


def test_every_page_renders_with_data_and_charts(people):
    data = seed()
    client = login(people[0])
    for url in all_urls(data):
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        # no asset from elsewhere (a CSRF token may spell "cdn" by chance: look for hosts, not letters)
        assert not re.search(r"(src|href)=[\"'](https?:)?//", html) and "https://" not in html, url
        if "data-chart=" in html:
            assert "/static/investml/vendor/plotly.min.js" in html, url
    overview = client.get("/dashboard/").content.decode()
    assert "xgboost_classifier" in overview and "pill failed" in overview
    assert 'data-chart="overview-cost"' in overview and "of $10.00 daily limit" in overview
    costs = client.get("/dashboard/costs/").content.decode()
    assert 'data-chart="cost-chart"' in costs and "Daily limit ($10.00)" in costs
    model = client.get("/dashboard/models/xgboost_classifier/").content.decode()
    assert 'data-chart="perf-chart"' in model and 'data-chart="validated-chart"' in model
    assert "v1.0.0" in model and "v1.2.0" in model and "run #" in model
    # the active version's feature importance, highest gain first
    importance = model[model.index('id="feature-importance"'):]
    assert importance.index("vol_20") < importance.index("ret_5") < importance.index("rsi_14")
    assert "0.600" in importance and "0.0123" in importance
    drift = client.get("/dashboard/drift/?model=xgboost_classifier").content.decode()
    assert 'data-chart="drift-heatmap"' in drift and "vol_20" in drift
    runs = client.get("/dashboard/runs/").content.decode()
    assert "Pipeline runs" in runs and "update_market_data" in runs and "2 tickers" in runs
    assert "ProviderError: alphavantage answered 503" in runs
    assert f'href="{reverse("dashboard:run", args=[data["ok_run"].pk])}"' in runs
    run = client.get(reverse("dashboard:run", args=[data["ok_run"].pk])).content.decode()
    assert 'data-chart="stage-chart"' in run
    assert client.get("/dashboard/models/nope/").status_code == 404
    assert client.get("/dashboard/drift/?model=nope").status_code == 404


def test_alert_filters_acknowledge_and_resolve(people):
    seed()
    client = login(people[1])  # the operator: staff with monitoring.change_alert
    html = client.get("/dashboard/alerts/?severity=critical").content.decode()
    assert "<strong>run_failed</strong>" in html and "<strong>high_latency</strong>" not in html
    assert "<strong>high_resource_usage</strong>" not in client.get("/dashboard/alerts/").content.decode()  # resolved
    assert "<strong>high_resource_usage</strong>" in client.get("/dashboard/alerts/?state=resolved").content.decode()
    alert = Alert.objects.get(kind="high_latency")
    assert client.get(reverse("dashboard:acknowledge", args=[alert.pk])).status_code == 405  # POST only
    response = client.post(reverse("dashboard:acknowledge", args=[alert.pk]), {"next": "/dashboard/alerts/?kind=high_latency"})
    assert response.status_code == 302 and response["Location"] == "/dashboard/alerts/?kind=high_latency"
    alert.refresh_from_db()
    assert alert.acknowledged and alert.acknowledged_by == "operator"
    response = client.post(reverse("dashboard:resolve", args=[alert.pk]), {"next": "https://evil.example/"})
    assert response["Location"] == "/dashboard/alerts/"  # no open redirect
    alert.refresh_from_db()
    assert alert.resolved


def test_alert_actions_need_the_csrf_token(people):
    seed()
    client = Client(enforce_csrf_checks=True)
    client.force_login(people[1])
    alert = Alert.objects.get(kind="data_drift")
    assert client.post(reverse("dashboard:resolve", args=[alert.pk])).status_code == 403
    page = client.get("/dashboard/alerts/")
    token = page.cookies["csrftoken"].value
    assert client.post(reverse("dashboard:resolve", args=[alert.pk]), {"csrfmiddlewaretoken": token}).status_code == 302


def test_promote_and_rollback_are_for_staff_only(people):
    viewer, staff = people
    data = seed()
    url = "/dashboard/models/xgboost_classifier/"
    as_viewer = login(viewer)
    html = as_viewer.get(url).content.decode()
    assert "promote-button" not in html and "rollback-button" not in html
    promote_url = reverse("dashboard:promote", args=["xgboost_classifier", data["xgb_staging"].pk])
    assert as_viewer.post(promote_url, {"force": "1"}).status_code == 403
    assert as_viewer.post(reverse("dashboard:rollback", args=["xgboost_classifier"])).status_code == 403

    as_staff = login(staff)
    html = as_staff.get(url).content.decode()
    assert "promote-button" in html and "Roll back to v1.0.0" in html
    response = as_staff.post(promote_url, {"force": "1"}, follow=True)
    assert "is now active" in response.content.decode()
    staging = ModelVersion.objects.get(pk=data["xgb_staging"].pk)
    assert staging.status == "active"
    assert DeploymentEvent.objects.filter(version=staging, action="promote", actor="operator").exists()

    response = as_staff.post(reverse("dashboard:rollback", args=["xgboost_classifier"]), follow=True)
    assert "Rolled back xgboost_classifier to v1.1.0" in response.content.decode()
    assert ModelVersion.objects.get(pk=data["xgb_active"].pk).status == "active"


def test_plotly_is_served_from_the_installed_package():
    found = finders.find("investml/vendor/plotly.min.js")
    assert found and found.endswith("plotly/package_data/plotly.min.js")
    listed = [path for finder in finders.get_finders() for path, _ in finder.list([])]
    assert "plotly.min.js" in listed
