"""The hash chain of the compliance records. Framework-free: values in, hashes and findings out.

Record ``n`` stores ``prev_hash`` (record ``n - 1``'s ``record_hash``; the genesis hash, 64 zeros,
for record 1, or the retention checkpoint's hash for the first record kept after a prune) and

    record_hash = sha256(JSON [version, seq, prev_hash, kind, created_at, model_name, model_version,
                               model_version_ref, ticker, input_hash, output, requester])

with ``created_at`` in UTC ISO 8601 (microseconds) and ``output`` the stored canonical JSON text.
Changing any field of a record breaks its own hash; deleting a record leaves a gap in ``seq`` and
breaks the next record's link; deleting the newest records leaves the chain head (which holds the
last ``seq`` and hash) pointing past the end. Rewriting a record *and* every hash after it, head
included, is not detectable from inside the database: keep the head hash ``verify_records`` prints
somewhere else (a ticket, a signed mail) to pin the chain.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

GENESIS_HASH = "0" * 64
HASH_VERSION = "cr1"
FIELDS = ("seq", "kind", "created_at", "model_name", "model_version", "model_version_ref", "ticker",
          "input_hash", "output", "requester", "prev_hash", "record_hash")


# built once: ``json.dumps`` with any non-default option builds a new encoder on every call
_OUTPUT_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_PAYLOAD_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _plain(value: Any) -> Any:
    # exact types first, each to the branch the checks below would take: an ``isinstance`` against
    # ``Mapping`` (an ABC) on every leaf was most of a prediction record's cost
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is str or kind is bool or kind is int or value is None:
        return value
    if kind is dict:
        return {str(k): _plain(v) for k, v in value.items()}
    if kind is datetime:
        return timestamp(value)
    if kind is date:
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    return str(value)


def canonical_output(output: Mapping[str, Any]) -> str:
    """The output as stored and hashed: sorted keys, no spaces, non-finite numbers as null."""
    return _OUTPUT_JSON.encode(_plain(output))


def timestamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("compliance record times must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def record_hash(*, prev_hash: str, seq: int, kind: str, created_at: datetime, model_name: str,
                model_version: str, model_version_ref: int | None, ticker: str, input_hash: str, output: str,
                requester: str) -> str:
    payload = [HASH_VERSION, int(seq), prev_hash, kind, timestamp(created_at), model_name, model_version,
               None if model_version_ref is None else int(model_version_ref), ticker, input_hash, output, requester]
    text = _PAYLOAD_JSON.encode(payload)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Entry:
    """A record to append (``seq``, ``prev_hash`` and ``record_hash`` come from the chain)."""

    kind: str
    created_at: datetime
    model_name: str
    model_version: str
    model_version_ref: int | None
    ticker: str
    input_hash: str
    output: str  # canonical_output(...)
    requester: str


def chain(entries: Iterable[Entry], *, last_seq: int, last_hash: str) -> Iterator[dict[str, Any]]:
    """The rows of ``entries`` appended after (``last_seq``, ``last_hash``), in order."""
    seq, prev = last_seq, last_hash
    for entry in entries:
        seq += 1
        digest = record_hash(prev_hash=prev, seq=seq, kind=entry.kind, created_at=entry.created_at,
                             model_name=entry.model_name, model_version=entry.model_version,
                             model_version_ref=entry.model_version_ref, ticker=entry.ticker,
                             input_hash=entry.input_hash, output=entry.output, requester=entry.requester)
        yield {"seq": seq, "kind": entry.kind, "created_at": entry.created_at, "model_name": entry.model_name,
               "model_version": entry.model_version, "model_version_ref": entry.model_version_ref,
               "ticker": entry.ticker, "input_hash": entry.input_hash, "output": entry.output,
               "requester": entry.requester, "prev_hash": prev, "record_hash": digest}
        prev = digest


@dataclass(frozen=True)
class Problem:
    seq: int  # the record (id) the problem is found at
    kind: str  # "changed", "missing", "broken_link", "head"
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.seq, "kind": self.kind, "message": self.message}


@dataclass
class Verification:
    checked: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str = GENESIS_HASH
    problems: list[Problem] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "first_id": self.first_seq, "last_id": self.last_seq,
                "head_hash": self.last_hash, "problems": [p.to_dict() for p in self.problems or []]}


def _span(first: int, last: int) -> str:
    return f"record {first}" if first == last else f"records {first}..{last}"


def verify(rows: Iterable[Mapping[str, Any]], *, start_seq: int = 0, start_hash: str = GENESIS_HASH,
           head_seq: int | None = None, head_hash: str | None = None, max_problems: int = 1000) -> Verification:
    """Recompute the chain of ``rows`` (mappings with ``FIELDS``, ascending ``seq``) from the
    checkpoint (``start_seq``, ``start_hash``) and compare with the head. Every problem names the
    record (its ``seq``, the table's id) where it is found; after one, checking goes on from the
    stored hash, so one edited row is reported once."""
    result = Verification(problems=[], last_seq=start_seq or None, last_hash=start_hash)
    problems: list[Problem] = result.problems
    prev_seq, prev_hash = start_seq, start_hash

    def report(problem: Problem) -> None:
        if len(problems) < max_problems:
            problems.append(problem)

    for row in rows:
        seq = int(row["seq"])
        result.checked += 1
        if result.first_seq is None:
            result.first_seq = seq
        gap = seq > prev_seq + 1
        if seq <= prev_seq:
            report(Problem(seq, "changed", f"record {seq} is out of order (after record {prev_seq})"))
        elif gap:
            report(Problem(prev_seq + 1, "missing",
                           f"{_span(prev_seq + 1, seq - 1)} missing (deleted): the chain jumps from "
                           f"{prev_seq or 'its start'} to {seq}"))
        if not gap and row["prev_hash"] != prev_hash:
            report(Problem(seq, "broken_link",
                           f"record {seq}: its prev_hash is not the hash of record {prev_seq or 'the chain start'} "
                           f"(that record was changed, or replaced)"))
        digest = record_hash(prev_hash=row["prev_hash"], seq=seq, kind=row["kind"], created_at=row["created_at"],
                             model_name=row["model_name"], model_version=row["model_version"],
                             model_version_ref=row["model_version_ref"], ticker=row["ticker"],
                             input_hash=row["input_hash"], output=row["output"], requester=row["requester"])
        if digest != row["record_hash"]:
            report(Problem(seq, "changed", f"record {seq}: contents changed (stored hash {row['record_hash'][:12]}, "
                                           f"recomputed {digest[:12]})"))
        prev_seq, prev_hash = seq, row["record_hash"]
    result.last_seq, result.last_hash = (prev_seq or None), prev_hash
    if head_seq is not None:
        if head_seq > prev_seq:
            report(Problem(prev_seq + 1, "missing",
                           f"{_span(prev_seq + 1, head_seq)} missing (deleted): the chain head is at {head_seq}, "
                           f"the last record is {prev_seq or 'none'}"))
        elif head_seq < prev_seq:
            report(Problem(prev_seq, "head", f"records after the chain head ({head_seq}) up to {prev_seq}: "
                                             "written around the chain, or the head was changed"))
        elif head_hash is not None and head_hash != prev_hash:
            report(Problem(prev_seq, "head", f"record {prev_seq}: its hash is not the chain head's "
                                             "(the record or the head was changed)"))
    return result
