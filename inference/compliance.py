"""Books and records: every served prediction of a ticker and every recommendation, kept in an
append-only, hash-chained table (``ComplianceRecord``; the hashing is ``inference.records_chain``).

Writes: ``append_records`` numbers and chains entries in order under a row lock on the chain head
(``select_for_update`` of ``ComplianceChainHead``; on SQLite the project's IMMEDIATE transactions
serialize writers the same way). The API never waits for it: served predictions are chained in the
prediction log's buffered flush (``inference.prediction_log``), in the same transaction as their log
rows; the daily batch's recommendations in the transaction that stores them.

Requesters are pseudonyms: ``pseudonyms_for`` gives each API user a random id kept only in
``RequesterPseudonym``; ``erase_user`` deletes that row, the records keep the pseudonym (their
hashes stay valid) and no longer lead to anyone.

Retention (``apply_retention``, the daily ``inference.apply_retention`` task): prediction-log rows
older than ``ML_PREDICTION_LOG_RETENTION_DAYS``; compliance records older than
``ML_COMPLIANCE_RETENTION_DAYS``, only as a whole prefix of the chain (up to the first record still
in the period) after checking it, with a ``ComplianceCheckpoint`` holding the last deleted hash, where
``verify_records`` starts.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime, time, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from inference import conf
from inference.models import (
    ComplianceChainHead,
    ComplianceCheckpoint,
    ComplianceRecord,
    PredictionLog,
    RequesterPseudonym,
)
from inference.records_chain import (
    FIELDS,
    GENESIS_HASH,
    Entry,
    Problem,
    Verification,
    canonical_output,
    chain,
    verify,
)

logger = logging.getLogger(__name__)

SYSTEM = "system"  # a prediction served to no API user (a direct service call)
ERASED = "erased"  # an API user deleted before their buffered predictions were written
BATCH_REQUESTER = "system:batch_predict"
HEAD_ID = 1
PRUNE_BATCH = 10_000


# --------------------------------------------------------------------------------------------------
# pseudonyms


def new_pseudonym() -> str:
    return "u-" + secrets.token_hex(16)


def pseudonyms_for(user_ids: Iterable[int | None]) -> dict[int, str]:
    """``{user id: pseudonym}``, creating the missing ones (a user deleted meanwhile: ``ERASED``)."""
    ids = {int(i) for i in user_ids if i is not None}
    if not ids:
        return {}
    found = dict(RequesterPseudonym.objects.filter(user_id__in=ids).values_list("user_id", "pseudonym"))
    missing = ids - found.keys()
    if missing:
        users = set(get_user_model().objects.filter(pk__in=missing).values_list("pk", flat=True))
        RequesterPseudonym.objects.bulk_create(
            [RequesterPseudonym(user_id=pk, pseudonym=new_pseudonym()) for pk in sorted(users)], ignore_conflicts=True
        )
        found.update(RequesterPseudonym.objects.filter(user_id__in=users).values_list("user_id", "pseudonym"))
        for pk in missing - users:
            found[pk] = ERASED
    return found


# --------------------------------------------------------------------------------------------------
# appending


def _locked_head() -> ComplianceChainHead:
    """The chain head, locked until the end of the caller's transaction (created if missing: after
    the last record, so numbering never restarts)."""
    head = ComplianceChainHead.objects.select_for_update().filter(pk=HEAD_ID).first()
    if head is not None:
        return head
    last = ComplianceRecord.objects.order_by("-seq").values_list("seq", "record_hash").first()
    if last is None:
        checkpoint = ComplianceCheckpoint.objects.order_by("-through_seq").first()
        last = (checkpoint.through_seq, checkpoint.through_hash) if checkpoint else (0, GENESIS_HASH)
    try:
        with transaction.atomic():
            ComplianceChainHead.objects.create(pk=HEAD_ID, last_seq=last[0], last_hash=last[1])
    except IntegrityError:  # another writer created it first
        pass
    return ComplianceChainHead.objects.select_for_update().get(pk=HEAD_ID)


def _insert(rows: list[dict[str, Any]]) -> None:
    """One multi-row INSERT (``executemany``), as the prediction log does: no ORM compile per row."""
    ops = connection.ops
    table = ops.quote_name(ComplianceRecord._meta.db_table)
    columns = ", ".join(ops.quote_name(c) for c in FIELDS)
    sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(FIELDS))})"
    values = [tuple(ops.adapt_datetimefield_value(row[c]) if c == "created_at" else row[c] for c in FIELDS)
              for row in rows]
    with connection.cursor() as cursor:
        cursor.executemany(sql, values)


def append_records(entries: Iterable[Entry]) -> int:
    """Append ``entries`` to the chain, in order; returns how many. Joins the caller's transaction
    (the head stays locked until it commits), so records and what they describe commit together."""
    entries = list(entries)
    if not entries:
        return 0
    with transaction.atomic():
        head = _locked_head()
        rows = list(chain(entries, last_seq=head.last_seq, last_hash=head.last_hash))
        _insert(rows)
        ComplianceChainHead.objects.filter(pk=HEAD_ID).update(
            last_seq=rows[-1]["seq"], last_hash=rows[-1]["record_hash"], updated_at=timezone.now()
        )
    return len(rows)


def prediction_entries(rows: Iterable[Mapping[str, Any]]) -> list[Entry]:
    """Entries of the buffered prediction-log rows that carry a ticker (``requester``: the pseudonym)."""
    out = []
    for row in rows:
        if not row.get("ticker"):
            continue
        output = {
            "prediction": row["prediction"], "prediction_type": row.get("prediction_type") or "",
            "expected_return": row.get("expected_return"), "prob_up": row.get("prob_up"),
            "confidence": row.get("confidence"), "horizon_days": row.get("horizon_days"),
            "feature_date": row.get("feature_date"), "cached": bool(row.get("cached")),
        }
        # what only some responses carry (rows logged before these were kept have none of them)
        for name in ("reference_price", "direction", "as_of", "intraday"):
            if row.get(name) is not None:
                output[name] = row[name]
        out.append(Entry(
            kind=ComplianceRecord.Kind.PREDICTION, created_at=row["created_at"], model_name=row["model_name"],
            model_version=str(row.get("model_version") or ""), model_version_ref=row.get("model_version_id"),
            ticker=row["ticker"], input_hash=row["input_hash"], output=canonical_output(output),
            requester=row.get("requester") or SYSTEM,
        ))
    return out


# --------------------------------------------------------------------------------------------------
# reading, verifying, exporting


def chain_start() -> tuple[int, str]:
    """Where verification starts: the newest retention checkpoint, else the genesis."""
    checkpoint = ComplianceCheckpoint.objects.order_by("-through_seq").first()
    return (checkpoint.through_seq, checkpoint.through_hash) if checkpoint else (0, GENESIS_HASH)


def verify_records(*, max_problems: int = 1000) -> Verification:
    """Recompute the whole chain (from the last checkpoint to the head); see ``records_chain.verify``."""
    start_seq, start_hash = chain_start()
    head = ComplianceChainHead.objects.filter(pk=HEAD_ID).first()
    head_seq, head_hash = (head.last_seq, head.last_hash) if head else (None, None)
    rows = ComplianceRecord.objects.filter(seq__gt=start_seq)
    if head_seq is not None:  # records appended while this runs are the next verification's
        rows = rows.filter(seq__lte=head_seq)
    rows = rows.order_by("seq").values(*FIELDS).iterator(chunk_size=5000)
    result = verify(rows, start_seq=start_seq, start_hash=start_hash, head_seq=head_seq, head_hash=head_hash,
                    max_problems=max_problems)
    if head is None and result.checked:
        result.problems.append(Problem(result.last_seq or 0, "head", "the chain head row is missing"))
    return result


def day_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """[start 00:00, end + 1 day 00:00) in UTC."""
    tz = timezone.get_fixed_timezone(0)
    return (datetime.combine(start, time.min, tzinfo=tz), datetime.combine(end + timedelta(days=1), time.min, tzinfo=tz))


def records_between(start: date, end: date) -> Iterator[dict[str, Any]]:
    """The records made on the UTC days ``start``..``end``, in chain order."""
    low, high = day_bounds(start, end)
    qs = ComplianceRecord.objects.filter(created_at__gte=low, created_at__lt=high).order_by("seq")
    return qs.values(*FIELDS).iterator(chunk_size=5000)


# --------------------------------------------------------------------------------------------------
# retention


def prune_prediction_logs(*, now: datetime | None = None, retention_days: int | None = None) -> int:
    """Delete prediction-log rows older than the retention period (in batches); returns how many."""
    days = conf.prediction_log_retention_days() if retention_days is None else int(retention_days)
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted = 0
    while True:
        ids = list(PredictionLog.objects.filter(created_at__lt=cutoff).order_by("id").values_list("id", flat=True)
                   [:PRUNE_BATCH])
        if not ids:
            return deleted
        deleted += PredictionLog.objects.filter(id__in=ids).delete()[0]


def prune_records(*, now: datetime | None = None, retention_days: int | None = None) -> dict[str, Any]:
    """Delete the compliance records past the retention period, as a whole prefix of the chain: every
    record before the first one still in the period. The prefix is verified first (a broken one is
    kept, and reported) and a checkpoint with the last deleted hash is written in the same
    transaction."""
    days = conf.compliance_retention_days() if retention_days is None else int(retention_days)
    result: dict[str, Any] = {"retention_days": days, "deleted": 0, "through_id": None, "error": ""}
    if days <= 0:
        return result
    cutoff = (now or timezone.now()) - timedelta(days=days)
    with transaction.atomic():
        head = _locked_head()
        start_seq, start_hash = chain_start()
        first_kept = (ComplianceRecord.objects.filter(seq__gt=start_seq, created_at__gte=cutoff).order_by("seq")
                      .values_list("seq", flat=True).first())
        through = head.last_seq if first_kept is None else first_kept - 1
        if through <= start_seq:
            return result
        prefix = ComplianceRecord.objects.filter(seq__gt=start_seq, seq__lte=through).order_by("seq")
        check = verify(prefix.values(*FIELDS).iterator(chunk_size=5000), start_seq=start_seq,
                       start_hash=start_hash, head_seq=through, max_problems=5)
        if not check.ok:
            result["error"] = ("records past the retention period were kept: their chain does not verify: "
                               + "; ".join(p.message for p in check.problems))
            logger.error("compliance retention: %s", result["error"])
            return result
        last = ComplianceRecord.objects.filter(seq=through).values_list("record_hash", "created_at").get()
        ops = connection.ops
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {ops.quote_name(ComplianceRecord._meta.db_table)} "
                           f"WHERE {ops.quote_name('seq')} <= %s", [through])
            deleted = cursor.rowcount
        ComplianceCheckpoint.objects.create(through_seq=through, through_hash=last[0], through_created_at=last[1],
                                            deleted=deleted)
    result.update(deleted=deleted, through_id=through)
    logger.info("compliance retention: %d records through %d deleted (older than %d days)", deleted, through, days)
    return result


def apply_retention(*, now: datetime | None = None) -> dict[str, Any]:
    """Both retention limits (the daily ``inference.apply_retention`` task)."""
    now = now or timezone.now()
    logs = prune_prediction_logs(now=now)
    return {"prediction_log_deleted": logs, "prediction_log_retention_days": conf.prediction_log_retention_days(),
            "compliance": prune_records(now=now)}
