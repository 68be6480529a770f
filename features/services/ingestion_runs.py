"""What the file loads and the provider updates share: an IngestionRun marked failed when the work
raises or succeeded with its counts, the summary of a file load (news, social posts), and progress
messages."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone

from features.models import IngestionRun

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

ERROR_MAX = 5_000  # characters of an error kept on the run


def say(progress: Progress | None, message: str) -> None:
    """To ``progress`` (a command's output), else the log."""
    if progress is not None:
        progress(message)
    else:
        logger.info(message)


@contextmanager
def failure_recorded(run: IngestionRun, *, started: float) -> Iterator[None]:
    """Mark ``run`` failed (the error, the time since ``started``) when the block raises; the error goes on."""
    try:
        yield
    except Exception as exc:
        run.status, run.error = IngestionRun.Status.FAILED, str(exc)[:ERROR_MAX]
        run.finished_at, run.duration_seconds = timezone.now(), time.perf_counter() - started
        run.save()
        raise


def run_succeeded(run: IngestionRun, *, seconds: float, **counts: Any) -> None:
    """Mark ``run`` succeeded after ``seconds`` with ``counts`` (its fields: ``rows_read=...``)."""
    run.status = IngestionRun.Status.SUCCEEDED
    for name, value in counts.items():
        setattr(run, name, value)
    run.finished_at, run.duration_seconds = timezone.now(), seconds
    run.save()


@dataclass
class FileIngestSummary:
    """A file load's counts; ``as_dict`` is the command's JSON summary."""

    rows_read: int = 0
    rows_loaded: int = 0  # rows that stored something new
    rows_unchanged: int = 0  # rows stored before or duplicated
    rows_rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    unknown_tickers: int = 0
    unknown_ticker_sample: list[str] = field(default_factory=list)
    tickers: int = 0
    days: int = 0
    seconds: float = 0.0
    ingestion_run: int | None = None

    def count_rejected(self, counts: Mapping[str, int]) -> None:
        """Add rejected rows by reason (a reason column's ``value_counts()``, or a dict)."""
        for reason, count in counts.items():
            self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + int(count)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read, "rows_loaded": self.rows_loaded, "rows_unchanged": self.rows_unchanged,
            "rows_rejected": self.rows_rejected, "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "unknown_tickers": self.unknown_tickers, "unknown_ticker_sample": self.unknown_ticker_sample,
            "tickers": self.tickers, "days": self.days, "seconds": round(self.seconds, 3),
            "ingestion_run": self.ingestion_run,
        }


def file_run_succeeded(run: IngestionRun, *, summary: FileIngestSummary, rejected_rows: list[dict[str, Any]],
                       unknown: set[str], unknown_hint: str, started: float) -> None:
    """Complete ``summary`` (rejected rows, unknown tickers, time) and mark ``run`` succeeded with it; the
    unknown tickers are listed in the run's error with ``unknown_hint`` (what to do about them)."""
    summary.rows_rejected = sum(summary.rejected_by_reason.values())
    summary.unknown_tickers = len(unknown)
    summary.unknown_ticker_sample = sorted(unknown)[:20]
    summary.seconds = time.perf_counter() - started
    listed = f"{len(unknown)} unknown tickers skipped ({unknown_hint}): {', '.join(sorted(unknown)[:200])}"
    run_succeeded(run, seconds=summary.seconds, rows_read=summary.rows_read, rows_loaded=summary.rows_loaded,
                  rows_unchanged=summary.rows_unchanged, rows_rejected=summary.rows_rejected,
                  rejected_by_reason=dict(sorted(summary.rejected_by_reason.items())), rejected_rows=rejected_rows,
                  tickers=summary.tickers, error=listed[:ERROR_MAX] if unknown else "")
