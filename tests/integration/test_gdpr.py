"""GDPR (issue 16, item 3) on the real test database: ``export_user_data`` returns everything stored
about an API user and lists every table it read; ``erase_user`` leaves no row that names the user,
and their compliance records stay, pseudonymized, with the chain still verifying."""

from __future__ import annotations

import io
import json

import pytest
from django.apps import apps
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.models import Session
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token

from inference import compliance, prediction_log
from inference.models import ComplianceRecord, PredictionLog, RequesterPseudonym
from monitoring import services as monitoring_services
from monitoring.alert_rules import AlertCondition
from registry.models import DeploymentEvent, ModelVersion, RegisteredModel
from training.models import PipelineRun, RetrainTrigger, TrainingRun

pytestmark = pytest.mark.django_db

NAME = "gdpr-frank-2049"
EMAIL = "frank.2049@example.org"


@pytest.fixture(autouse=True)
def empty_buffer():
    prediction_log.discard()
    yield
    prediction_log.discard()


def _serve(user, n: int, ticker: str = "AAPL") -> None:
    now = timezone.now()
    for i in range(n):
        prediction_log.record(model_name="ensemble", model_version_id=None, input_hash=f"{i:064x}",
                              prediction=10.0 + i, expected_return=0.01, confidence=0.3, latency_ms=2.0, cached=False,
                              created_at=now, ticker=ticker, requester_id=user.pk if user else None,
                              model_version="1.0.0", prob_up=0.55, prediction_type="price", horizon_days=5)
    prediction_log.flush()


@pytest.fixture
def frank():
    """An API user who did a bit of everything, and a bystander who did the same."""
    users = get_user_model().objects
    user = users.create_user(NAME, email=EMAIL, password="a-long-pass-phrase-1", first_name="Frank",
                             last_name="Zebulon-Quist", is_staff=True)
    other = users.create_user("gdpr-grace-2050", email="grace@example.org")
    Token.objects.create(user=user)
    Client().force_login(user)  # a dashboard session
    LogEntry.objects.create(user=user, content_type=ContentType.objects.get_for_model(RegisteredModel),
                            object_id="1", object_repr="xgboost_classifier", action_flag=ADDITION,
                            change_message="added by hand")
    _serve(user, 3)
    _serve(other, 2, ticker="KO")
    _serve(user, 1, ticker="")  # a feature vector: log only
    TrainingRun.objects.create(requested_by=NAME, error=f"cancelled by {NAME}", log=f"requested by {NAME}\nok")
    run = PipelineRun.objects.create(trigger="api", requested_by=NAME, scope="universe", status="cancelled",
                                     status_reason=f"cancelled by {NAME}", reason="weekly refresh")
    RetrainTrigger.objects.create(trigger="api", requested_by=NAME, scope="universe", outcome="queued",
                                  pipeline_run=run)
    PipelineRun.objects.create(trigger="api", requested_by="gdpr-grace-2050", scope="tickers:x", status="succeeded")
    registered = RegisteredModel.objects.create(name="xgboost_classifier", model_type="tree_ensemble")
    version = ModelVersion.objects.create(model=registered, version="1.0.0", major=1, minor=0, patch=0,
                                          status="active", target="fwd_ret_5", horizon_days=5)
    DeploymentEvent.objects.create(version=version, action="promote", actor=f"{NAME} (admin)", reason="manual")
    DeploymentEvent.objects.create(version=version, action="register", actor="pipeline run 1")
    # free text that quotes them by full name and e-mail address (in another case), not by user name
    DeploymentEvent.objects.create(version=version, action="rollback", actor="pipeline run 2",
                                   reason=f"approved by frank zebulon-quist <{EMAIL.upper()}>; not by Frank alone")
    alert = monitoring_services.raise_alert(condition=AlertCondition("run_failed", "x", "critical", "boom")).alert
    monitoring_services.acknowledge_alert(alert_id=alert.pk, user=NAME)
    monitoring_services.resolve_alert(alert_id=alert.pk, user=NAME)
    return user


def _export(user_name: str) -> dict:
    out, err = io.StringIO(), io.StringIO()
    call_command("export_user_data", user_name, stdout=out, stderr=err)
    data = json.loads(out.getvalue())
    assert err.getvalue().strip() == "tables read: " + ", ".join(data["tables_read"])
    return data


def test_export_user_data_returns_everything_about_the_user_and_lists_every_table_read(frank, tmp_path):
    data = _export(NAME)
    assert data["account"]["username"] == NAME and data["account"]["email"] == EMAIL
    assert data["account"]["last_name"] == "Zebulon-Quist" and "pbkdf2" not in json.dumps(data)
    assert data["account"]["password"].startswith("set")
    key = Token.objects.get(user=frank).key
    assert len(data["api_tokens"]) == 1 and key not in json.dumps(data)  # the secret itself is masked
    assert len(data["sessions"]) == 1 and len(data["admin_log"]) == 1
    if apps.is_installed("axes"):  # sign-in records (django-axes logs every sign-in by user name)
        assert len(data["sign_in_records"]["axes_accesslog"]) == 1 and "axes_accesslog" in data["tables_read"]
    pseudonym = RequesterPseudonym.objects.get(user=frank).pseudonym
    assert data["pseudonym"] == pseudonym
    assert len(data["prediction_log"]) == 4 and {r["requester"] for r in data["prediction_log"]} == {pseudonym}
    assert [r["ticker"] for r in data["compliance_records"]] == ["AAPL", "AAPL", "AAPL"]
    mentioned = {(m["table"], m["field"]) for m in data["mentions"]}
    assert mentioned == {
        ("training_trainingrun", "requested_by"), ("training_trainingrun", "error"), ("training_trainingrun", "log"),
        ("training_pipelinerun", "requested_by"), ("training_pipelinerun", "status_reason"),
        ("training_retraintrigger", "requested_by"), ("registry_deploymentevent", "actor"),
        ("monitoring_alert", "acknowledged_by"), ("monitoring_alert", "details.resolved_by"),
        ("registry_deploymentevent", "reason"),
    }
    for table in ("auth_user", "auth_user_groups", "auth_user_user_permissions", "authtoken_token", "django_session",
                  "django_admin_log", "inference_requesterpseudonym", "inference_predictionlog",
                  "inference_compliancerecord", "training_trainingrun", "training_pipelinerun",
                  "training_pipelinestage", "training_retraintrigger", "registry_deploymentevent", "monitoring_alert",
                  "django_content_type"):
        assert table in data["tables_read"], table
    # the other user's rows are not in it
    assert "gdpr-grace-2050" not in json.dumps(data) and "KO" not in {r["ticker"] for r in data["prediction_log"]}

    path = tmp_path / "frank.json"
    call_command("export_user_data", str(frank.pk), "--output", str(path), stdout=io.StringIO(), stderr=io.StringIO())
    assert json.loads(path.read_text())["user"] == NAME  # by id too
    with pytest.raises(CommandError, match="no user"):
        call_command("export_user_data", "nobody-at-all")


def _rows_naming(*needles: str) -> list[str]:
    """Every row of every table (all installed models) whose values contain one of ``needles``."""
    found = []
    for model in apps.get_models():
        for row in model.objects.all().values():
            text = json.dumps(row, default=str)
            for needle in needles:
                if needle in text:
                    found.append(f"{model._meta.db_table} {row.get(model._meta.pk.attname)}: {needle}")
    return found


def test_erase_user_leaves_no_row_naming_the_user_and_keeps_the_records_pseudonymized(frank):
    assert _rows_naming(NAME, EMAIL)  # the check finds them before
    pseudonym = RequesterPseudonym.objects.get(user=frank).pseudonym
    user_id = frank.pk
    records_before = list(ComplianceRecord.objects.order_by("seq").values_list("seq", "record_hash", "requester"))

    out = io.StringIO()
    call_command("erase_user", NAME, "--dry-run", stdout=out)
    assert "would change" in out.getvalue() and get_user_model().objects.filter(pk=user_id).exists()

    out = io.StringIO()
    call_command("erase_user", NAME, "--json", stdout=out)
    result = json.loads(out.getvalue())
    assert result["changed"]["auth_user"] == 1 and result["changed"]["authtoken_token"] == 1
    assert result["changed"]["inference_predictionlog"] == 4 and result["changed"]["django_session"] == 1
    assert "inference_requesterpseudonym" in result["tables_read"]

    assert _rows_naming(NAME, EMAIL, EMAIL.upper(), "Zebulon-Quist", "zebulon-quist", pseudonym + '"') == [
        f"inference_compliancerecord {seq}: {pseudonym}\"" for seq, _h, r in records_before if r == pseudonym
    ]  # only the compliance records keep the (now unmapped) pseudonym
    assert not get_user_model().objects.filter(pk=user_id).exists()
    assert not Token.objects.filter(user_id=user_id).exists() and not LogEntry.objects.filter(user_id=user_id).exists()
    assert not RequesterPseudonym.objects.filter(pseudonym=pseudonym).exists()
    assert not [s for s in Session.objects.all() if str(s.get_decoded().get("_auth_user_id")) == str(user_id)]
    assert PredictionLog.objects.filter(requester="").count() == 4  # kept for monitoring, unlinked
    assert list(ComplianceRecord.objects.order_by("seq").values_list("seq", "record_hash", "requester")) == records_before
    assert compliance.verify_records().ok and "OK: the chain verifies" in _verify()
    # where they acted, the name is replaced
    assert PipelineRun.objects.get(scope="universe").requested_by == "erased user"
    assert PipelineRun.objects.get(scope="universe").status_reason == "cancelled by erased user"
    assert DeploymentEvent.objects.get(action="promote").actor == "erased user (admin)"
    assert DeploymentEvent.objects.get(action="register").actor == "pipeline run 1"
    assert DeploymentEvent.objects.get(action="rollback").reason == (
        "approved by erased user <erased user>; not by Frank alone")
    # the bystander is untouched
    other = get_user_model().objects.get(username="gdpr-grace-2050")
    assert PredictionLog.objects.filter(requester=RequesterPseudonym.objects.get(user=other).pseudonym).count() == 2
    assert PipelineRun.objects.get(scope="tickers:x").requested_by == "gdpr-grace-2050"

    # a prediction of the erased user still buffered somewhere is written without a link to anyone
    prediction_log.record(model_name="ensemble", model_version_id=None, input_hash="f" * 64, prediction=1.0,
                          expected_return=0.0, confidence=0.0, latency_ms=1.0, cached=False,
                          created_at=timezone.now(), ticker="AAPL", requester_id=user_id)
    prediction_log.flush()
    assert ComplianceRecord.objects.order_by("-seq").first().requester == compliance.ERASED
    assert not RequesterPseudonym.objects.filter(user_id=user_id).exists() and compliance.verify_records().ok


def _verify() -> str:
    out = io.StringIO()
    call_command("verify_records", stdout=out, no_color=True)
    return out.getvalue()
