"""What can go wrong in a pipeline run and what follows: the errors, which of them another attempt can
fix (``is_transient``) and after how long (``backoff_seconds``), and the message that says what to do."""

from __future__ import annotations

import random
from collections.abc import Sequence

import redis.exceptions
import requests
from django.db import InterfaceError
from django.db import OperationalError as DjangoOperationalError
from kombu.exceptions import OperationalError as KombuOperationalError


class PipelineError(Exception):
    """Bad orchestrator input (unknown trigger, bad option)."""


class StageError(Exception):
    """A stage failed. ``hints`` say what to do; ``transient`` errors are retried."""

    transient = False

    def __init__(self, message: str, *, hints: Sequence[str] = ()):
        super().__init__(message)
        self.hints = list(hints)


class PermanentStageError(StageError):
    transient = False


class TransientStageError(StageError):
    transient = True


class TrainingTimeout(BaseException):  # noqa: N818 - a BaseException, so training's handlers let it through
    """``training.max_training_hours`` passed while training ran in this process."""


_PERMANENT_DB_TEXT = ("no such table", "no such column", "does not exist", "syntax error", "permission denied")


def is_transient(exc: BaseException) -> bool:
    """Whether another attempt of the stage can succeed: the database or broker unavailable, a
    provider's 5xx or timeout, out of memory. Looks through the exception's causes too."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StageError):
            return current.transient
        if isinstance(current, MemoryError):
            return True
        if isinstance(current, DjangoOperationalError | InterfaceError):
            return not any(text in str(current).lower() for text in _PERMANENT_DB_TEXT)
        if _is_connection_error(current):
            return True
        if getattr(current, "retryable", False) is True:  # features.providers.ProviderError (5xx, timeouts)
            return True
        current = current.__cause__ or current.__context__
    return False


_CONNECTION_ERRORS = (ConnectionError, KombuOperationalError, redis.exceptions.ConnectionError,
                      redis.exceptions.TimeoutError, requests.ConnectionError, requests.Timeout)


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, _CONNECTION_ERRORS)


def backoff_seconds(*, attempt: int, base: float, cap: float = 3600.0) -> float:
    """Exponential backoff with jitter before retry number ``attempt`` (1, 2, ...): half of
    ``base * 2**(attempt-1)`` fixed, the other half random, at most ``cap``."""
    step = min(cap, base * (2 ** max(0, attempt - 1)))
    return step / 2 + random.uniform(0, step / 2)  # noqa: S311 - jitter, not cryptography


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, StageError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "Out of memory"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def pipeline_failure_message(*, run_id: int, stage: str, message: str, hints: Sequence[str] = ()) -> str:
    """The spec's troubleshooting tone: what failed, then what to try."""
    lines = [f"ERROR: Pipeline {run_id} failed at {stage}: {message}"]
    if hints:
        lines.append("Solutions:")
        lines += [f"{i}. {hint}" for i, hint in enumerate(hints, 1)]
    return "\n".join(lines)


def default_hints(stage: str, exc: BaseException) -> list[str]:
    if isinstance(exc, StageError) and exc.hints:
        return exc.hints
    if isinstance(exc, MemoryError):
        return ["Check available memory: free -h",
                "Reduce batch_size (or hidden_size / sequence_length) in config/pipeline.json",
                "Enable data sampling for large datasets (ML_LSTM_MAX_TRAIN_ROWS) or run on fewer tickers (--tickers)",
                "Monitor resource usage: docker stats"]
    if is_transient(exc):
        return ["Check that the database, Redis and the data provider are reachable",
                "Run it again: python manage.py run_pipeline"]
    return ["See the run's stages: python manage.py retrain --status (pipeline runs are listed first)",
            "Check the worker log (docker-compose logs -f worker)"]
