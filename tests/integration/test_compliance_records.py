"""Books and records (issue 16, item 3) on the real test database: served predictions of a ticker are
chained in the prediction log's flush; ``verify_records`` passes on an untouched chain and names the
row after one record is edited or deleted with raw SQL; ``export_records``; the retention of the
prediction log and of the chain (whole prefixes, checkpointed)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from inference import compliance, prediction_log
from inference.models import ComplianceCheckpoint, ComplianceRecord, PredictionLog, RequesterPseudonym
from inference.tasks import apply_retention_task

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_buffer():
    prediction_log.discard()
    yield
    prediction_log.discard()


def serve(n: int, *, user=None, at: datetime | None = None, ticker: str | None = "AAPL", step=timedelta(seconds=1)):
    """``n`` served predictions as the API logs them, written by the buffered flush."""
    at = at or timezone.now()
    for i in range(n):
        prediction_log.record(
            model_name="xgboost_classifier", model_version_id=None, input_hash=f"{i:064x}", prediction=101.5 + i,
            expected_return=0.004 * i, confidence=0.2, latency_ms=3.0, cached=False, created_at=at + i * step,
            ticker="" if not ticker else f"{ticker}{i}" if n > 1 else ticker,
            feature_date=date(2025, 8, 1), requester_id=user.pk if user else None, model_version="1.2.0",
            prob_up=0.6, prediction_type="price", horizon_days=5,
        )
    return prediction_log.flush()


def verify_output(*args) -> str:
    out = io.StringIO()
    call_command("verify_records", *args, stdout=out, no_color=True)
    return out.getvalue()


def verify_failure() -> tuple[str, CommandError]:
    out = io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("verify_records", stdout=out, no_color=True)
    return out.getvalue(), caught.value


def test_served_predictions_with_a_ticker_are_chained_in_order_with_the_pseudonym():
    user = get_user_model().objects.create_user("chain-carol-31")
    assert serve(3, user=user) == 3
    assert serve(1, user=user, ticker="") == 1  # a feature vector: logged, not a record
    records = list(ComplianceRecord.objects.order_by("seq"))
    assert [r.ticker for r in records] == ["AAPL0", "AAPL1", "AAPL2"]
    assert [r.seq for r in records] == [records[0].seq, records[0].seq + 1, records[0].seq + 2]
    assert all(b.prev_hash == a.record_hash for a, b in zip(records, records[1:], strict=False))
    pseudonym = RequesterPseudonym.objects.get(user=user).pseudonym
    assert {r.requester for r in records} == {pseudonym} and "carol" not in pseudonym
    assert set(PredictionLog.objects.values_list("requester", flat=True)) == {pseudonym}
    first = records[0]
    assert (first.kind, first.model_name, first.model_version, first.input_hash) == (
        "prediction", "xgboost_classifier", "1.2.0", f"{0:064x}")
    assert json.loads(first.output) == {"prediction": 101.5, "prediction_type": "price", "expected_return": 0.0,
                                        "prob_up": 0.6, "confidence": 0.2, "horizon_days": 5,
                                        "feature_date": "2025-08-01", "cached": False}
    assert serve(2) == 2  # no API user: "system"
    assert ComplianceRecord.objects.order_by("-seq").first().requester == "system"
    result = compliance.verify_records()
    assert result.ok and result.checked == 5


def test_verify_records_passes_untouched_and_names_the_row_edited_or_deleted_in_sql():
    serve(6, user=get_user_model().objects.create_user("chain-dan-32"))
    text = verify_output()
    assert "6 compliance records checked" in text and "OK: the chain verifies" in text
    seqs = list(ComplianceRecord.objects.order_by("seq").values_list("seq", flat=True))
    table = connection.ops.quote_name(ComplianceRecord._meta.db_table)

    edited = seqs[2]
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET output = %s WHERE seq = %s",
                       ['{"prediction":999.0}', edited])
    text, error = verify_failure()
    assert f"id {edited}: record {edited}: contents changed" in text
    assert f"id(s) {edited}" in str(error) and error.returncode == 1

    with connection.cursor() as cursor:  # put it back: the chain verifies again
        cursor.execute(f"UPDATE {table} SET output = %s WHERE seq = %s",
                       [json.dumps({"cached": False, "confidence": 0.2, "expected_return": 0.008,
                                    "feature_date": "2025-08-01", "horizon_days": 5, "prediction": 103.5,
                                    "prediction_type": "price", "prob_up": 0.6}, separators=(",", ":"),
                                   sort_keys=True), edited])
    assert "OK: the chain verifies" in verify_output()

    deleted = seqs[3]
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE seq = %s", [deleted])
    text, error = verify_failure()
    assert f"id {deleted}: record {deleted} missing (deleted)" in text and f"id(s) {deleted}" in str(error)

    with connection.cursor() as cursor:  # the newest record deleted: the head still points at it
        cursor.execute(f"DELETE FROM {table} WHERE seq = %s", [seqs[-1]])
    text, _ = verify_failure()
    assert f"id {seqs[-1]}: record {seqs[-1]} missing (deleted)" in text
    assert f"id {deleted}: record {deleted} missing (deleted)" in text
    payload = json.loads(_json_verify())
    assert payload["ok"] is False and {p["id"] for p in payload["problems"]} == {deleted, seqs[-1]}


def _json_verify() -> str:
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("verify_records", "--json", stdout=out)
    return out.getvalue()


def test_the_orm_cannot_change_or_delete_a_record():
    serve(1)
    with pytest.raises(TypeError):
        ComplianceRecord.objects.update(output="{}")
    with pytest.raises(TypeError):
        ComplianceRecord.objects.all().delete()
    record = ComplianceRecord.objects.get()
    with pytest.raises(TypeError):
        record.save()
    with pytest.raises(TypeError):
        record.delete()


def test_export_records_by_day_as_json_lines_and_csv(tmp_path):
    user = get_user_model().objects.create_user("chain-erin-33")
    serve(2, user=user, at=datetime(2025, 8, 1, 15, 0, tzinfo=UTC))
    serve(1, user=user, at=datetime(2025, 8, 2, 23, 59, 59, tzinfo=UTC), ticker="MSFT")
    serve(1, user=user, at=datetime(2025, 8, 3, 0, 0, 1, tzinfo=UTC), ticker="KO")

    out, err = io.StringIO(), io.StringIO()
    call_command("export_records", "--from", "2025-08-01", "--to", "2025-08-02", stdout=out, stderr=err)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["ticker"] for line in lines] == ["AAPL0", "AAPL1", "MSFT"]
    assert lines[0]["created_at"] == "2025-08-01T15:00:00.000000+00:00" and lines[0]["output_data"]["prediction"] == 101.5
    assert lines[1]["prev_hash"] == lines[0]["record_hash"] and len(lines[0]["record_hash"]) == 64
    assert "3 compliance records of 2025-08-01..2025-08-02" in err.getvalue()

    path = tmp_path / "records.csv"
    call_command("export_records", "--from", "2025-08-03", "--to", "2025-08-03", "--output", str(path),
                 stdout=io.StringIO())
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert [r["ticker"] for r in rows] == ["KO"] and rows[0]["requester"].startswith("u-")
    assert set(rows[0]) >= {"seq", "kind", "created_at", "model_name", "model_version", "input_hash", "output",
                            "requester", "prev_hash", "record_hash"}
    with pytest.raises(CommandError, match="before --from"):
        call_command("export_records", "--from", "2025-08-03", "--to", "2025-08-01")


def test_prediction_log_retention_deletes_old_rows_and_keeps_recent_ones(settings):
    settings.ML_PREDICTION_LOG_RETENTION_DAYS = 90
    now = timezone.now()
    serve(2, at=now - timedelta(days=120), ticker="")
    serve(1, at=now - timedelta(days=91), ticker="")
    serve(2, at=now - timedelta(days=89), ticker="")
    serve(1, at=now - timedelta(minutes=1), ticker="")
    result = apply_retention_task.apply().get()  # the beat task, run eagerly
    assert result["prediction_log_deleted"] == 3 and result["prediction_log_retention_days"] == 90
    kept = sorted(PredictionLog.objects.values_list("created_at", flat=True))
    assert len(kept) == 3 and min(kept) > now - timedelta(days=90)
    task = PeriodicTask.objects.get(name="investml: data retention")  # seeded at migrate
    assert task.task == "inference.apply_retention" and task.crontab is not None and task.enabled


def test_compliance_retention_deletes_only_a_whole_prefix_and_keeps_the_chain_verifiable(settings):
    settings.ML_COMPLIANCE_RETENTION_DAYS = 5 * 365 + 2
    now = timezone.now()
    old = now - timedelta(days=6 * 365)
    serve(3, at=old, ticker="OLD")  # records 1..3: past the period
    serve(1, at=now - timedelta(days=30), ticker="NEW")  # record 4: kept
    serve(1, at=old + timedelta(days=1), ticker="LATE")  # record 5: old, flushed late: kept (after 4)
    seqs = list(ComplianceRecord.objects.order_by("seq").values_list("seq", flat=True))
    third_hash = ComplianceRecord.objects.get(seq=seqs[2]).record_hash

    out = io.StringIO()
    call_command("apply_retention", stdout=out)
    assert "compliance records: 3 deleted" in out.getvalue()
    assert list(ComplianceRecord.objects.order_by("seq").values_list("seq", flat=True)) == seqs[3:]
    checkpoint = ComplianceCheckpoint.objects.get()
    assert (checkpoint.through_seq, checkpoint.through_hash, checkpoint.deleted) == (seqs[2], third_hash, 3)
    assert "OK: the chain verifies" in verify_output() and f"checkpoint after id {seqs[2]}" in verify_output()
    assert compliance.prune_records()["deleted"] == 0  # nothing more before the first record in the period

    serve(1, ticker="NEXT")  # appending goes on after the prune
    assert compliance.verify_records().ok

    # deleting the checkpoint is noticed: the records before the kept ones are then missing
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {connection.ops.quote_name(ComplianceCheckpoint._meta.db_table)}")
    text, _ = verify_failure()
    assert f"records 1..{seqs[2]} missing" in text or f"records {seqs[0]}..{seqs[2]} missing" in text


def test_compliance_retention_keeps_a_prefix_that_does_not_verify(settings):
    settings.ML_COMPLIANCE_RETENTION_DAYS = 365
    serve(3, at=timezone.now() - timedelta(days=400), ticker="OLD")
    serve(1, ticker="NEW")
    first = ComplianceRecord.objects.order_by("seq").values_list("seq", flat=True).first()
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {connection.ops.quote_name(ComplianceRecord._meta.db_table)} SET ticker = 'XX' "
                       f"WHERE seq = %s", [first + 1])
    result = compliance.prune_records()
    assert result["deleted"] == 0 and f"record {first + 1}: contents changed" in result["error"]
    assert ComplianceRecord.objects.count() == 4 and not ComplianceCheckpoint.objects.exists()
    with pytest.raises(CommandError, match="does not verify"):
        call_command("apply_retention", stdout=io.StringIO())
