"""Every served prediction goes to ``PredictionLog``, off the request path.

``record(...)`` appends to an in-process buffer (no I/O). The buffer is written with one
``bulk_create`` when it holds ``ML_PREDICTION_LOG_BATCH`` rows or its oldest row is
``ML_PREDICTION_LOG_MAX_AGE_SECONDS`` old; that check runs on Django's ``request_finished`` signal,
i.e. after the response has been handed to the server, so the request that triggers a write does
not wait for it. The same transaction appends the rows that carry a ticker, in order, to the
compliance records' hash chain (``inference.compliance``); requesters are stored as pseudonyms.
``flush()`` writes now (tests, management commands) and runs at process exit
(``investml.process_exit``, server workers included). When
the database is unreachable the rows stay buffered (at most ``ML_PREDICTION_LOG_MAX_BUFFER``,
oldest dropped and counted) and are retried on the next trigger.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import date, datetime
from typing import Any

from django.core.signals import request_finished
from django.db import DatabaseError, connection, transaction

from inference import cache as prediction_cache
from inference import compliance, conf
from inference.models import PredictionLog
from investml.process_exit import at_process_exit

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_flush_lock = threading.Lock()
_buffer: list[dict[str, Any]] = []
_oldest: float | None = None
_stats = {"written": 0, "dropped": 0, "failed_writes": 0}


def record(
    *,
    model_name: str,
    model_version_id: int | None,
    input_hash: str,
    prediction: float,
    expected_return: float | None,
    confidence: float | None,
    latency_ms: float,
    cached: bool,
    created_at: datetime,
    ticker: str = "",
    feature_date: date | None = None,
    requester_id: int | None = None,
    model_version: str = "",
    prob_up: float | None = None,
    prediction_type: str = "",
    horizon_days: int | None = None,
    reference_price: float | None = None,
    direction: str | None = None,
    as_of: datetime | None = None,
    intraday: bool | None = None,
) -> None:
    """Buffer one served prediction. ``requester_id``: the API user's id (stored as their pseudonym);
    ``model_version``, ``prob_up``, ``prediction_type``, ``horizon_days`` and what the response said
    of the price (``reference_price``, ``direction``) and of the features' time (``as_of``,
    ``intraday``) go to the compliance record of a prediction with a ticker."""
    global _oldest
    row = {
        "model_name": model_name,
        "model_version_id": model_version_id,
        "input_hash": input_hash,
        "prediction": prediction,
        "expected_return": expected_return,
        "confidence": confidence,
        "latency_ms": latency_ms,
        "cached": cached,
        "created_at": created_at,
        "ticker": ticker or "",
        "feature_date": feature_date,
        "requester_id": requester_id,
        "model_version": model_version,
        "prob_up": prob_up,
        "prediction_type": prediction_type,
        "horizon_days": horizon_days,
        "reference_price": reference_price,
        "direction": direction,
        "as_of": as_of,
        "intraday": intraday,
    }
    with _lock:
        _buffer.append(row)
        if _oldest is None:
            _oldest = time.monotonic()
        overflow = len(_buffer) - conf.log_max_buffer()
        if overflow > 0:
            del _buffer[:overflow]
            _stats["dropped"] += overflow


def record_many(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        record(**row)


def pending() -> int:
    with _lock:
        return len(_buffer)


def stats() -> dict[str, int]:
    with _lock:
        return {"buffered": len(_buffer), **_stats}


def due() -> bool:
    with _lock:
        if not _buffer:
            return False
        if len(_buffer) >= conf.log_batch():
            return True
        return _oldest is not None and time.monotonic() - _oldest >= conf.log_max_age()


def flush() -> int:
    """Write every buffered row now; returns how many were written (0 when the write failed)."""
    global _oldest
    with _flush_lock:
        with _lock:
            rows, _buffer[:] = list(_buffer), []
            _oldest = None
        if not rows:
            prediction_cache.publish_counters()
            return 0
        try:
            _insert(rows)
        except DatabaseError as exc:
            logger.warning("prediction log write of %d rows failed (kept for the next try): %s", len(rows), exc)
            with _lock:
                _buffer[:0] = rows
                _oldest = time.monotonic()
                _stats["failed_writes"] += 1
                overflow = len(_buffer) - conf.log_max_buffer()
                if overflow > 0:
                    del _buffer[:overflow]
                    _stats["dropped"] += overflow
            return 0
        with _lock:
            _stats["written"] += len(rows)
        prediction_cache.publish_counters()
        return len(rows)


_COLUMNS = ("model_name", "model_version_id", "input_hash", "prediction", "expected_return", "confidence",
            "latency_ms", "cached", "created_at", "ticker", "feature_date", "requester")


def _insert(rows: list[dict[str, Any]]) -> None:
    """One multi-row INSERT per batch (``executemany``): ``bulk_create`` compiled every row through the
    ORM, a noticeable share of a busy API worker's time. In the same transaction, the rows with a
    ticker are appended, in order, to the compliance records' hash chain (``inference.compliance``);
    requesters are stored as their pseudonyms."""
    ops = connection.ops
    table = ops.quote_name(PredictionLog._meta.db_table)
    columns = ", ".join(ops.quote_name(c) for c in _COLUMNS)
    sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(_COLUMNS))})"
    adapt = {"created_at": ops.adapt_datetimefield_value, "feature_date": ops.adapt_datefield_value}
    with transaction.atomic():
        pseudonyms = compliance.pseudonyms_for(row.get("requester_id") for row in rows)
        for row in rows:
            row["requester"] = pseudonyms.get(row.get("requester_id"), "")
        values = [tuple(adapt[c](row[c]) if c in adapt else row[c] for c in _COLUMNS) for row in rows]
        with connection.cursor() as cursor:
            cursor.executemany(sql, values)
        compliance.append_records(compliance.prediction_entries(rows))


def discard() -> None:
    """Drop the buffer without writing (tests)."""
    global _oldest
    with _lock:
        _buffer.clear()
        _oldest = None
        for name in _stats:
            _stats[name] = 0


def _on_request_finished(sender: Any = None, **kwargs: Any) -> None:
    if due():
        try:
            flush()
        except Exception as exc:  # noqa: BLE001 - logging must never break serving
            logger.warning("prediction log flush failed: %s", exc)


def _at_exit() -> None:
    try:
        if pending():
            flush()
    except Exception as exc:  # noqa: BLE001 - the process is going away anyway
        logger.warning("prediction log flush at exit failed: %s", exc)


def connect() -> None:
    """Hook the flush into the request cycle and process exit (once, from ``AppConfig.ready``)."""
    request_finished.connect(_on_request_finished, dispatch_uid="inference.prediction_log.flush")
    at_process_exit(_at_exit)
