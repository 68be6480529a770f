"""The bodies of ``training.pipeline_tasks``' stage tasks: one stage of a run on Celery, and the
feature build fanned out as a chord of ticker chunks when the universe has more than one chunk."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from django.db.models import Exists, OuterRef

from features.common import chunked
from features.models import PriceBar, Ticker
from training.models import PipelineRun, PipelineStage
from training.orchestrator.config import orchestrator_settings
from training.orchestrator.errors import (
    PermanentStageError,
    StageError,
    TransientStageError,
    backoff_seconds,
    describe_error,
    is_transient,
)
from training.orchestrator.stage_work import STAGE_WORK, noop, stage_build_features
from training.orchestrator.stages import (
    Outcome,
    Ticket,
    begin_stage,
    fail_stage,
    finish_stage_and_continue,
    heartbeat,
    touch,
)
from training.orchestrator.train_stage import start_training


def run_stage(*, run_id: int, generation: int, stage: str) -> Outcome:
    """One stage of a Celery run: skip it if done, run it here, or ask to fan out / retry / stop."""
    ticket = begin_stage(run_id=run_id, generation=generation, stage=stage)
    if ticket.action != "run":
        return Outcome("continue" if ticket.action == "skip" else "stop")
    run = ticket.run
    assert run is not None
    try:
        with heartbeat(run_id=run_id, generation=generation):
            if stage == "build_features" and run.options.get("noop_seconds") is None:
                chunks = feature_chunks(run=run)
                if len(chunks) > 1:
                    touch(run_id=run_id, generation=generation, release_process=True)
                    return Outcome("fan_out", chunks=chunks)
            if stage == "train":
                if run.options.get("noop_seconds") is not None:
                    noop(run, stage)
                    return Outcome("continue")
                training = start_training(run=run, sync=False)
                touch(run_id=run_id, generation=generation, release_process=True)
                return Outcome("continue", counts={"training_run": training.pk})
            counts = STAGE_WORK[stage](run=run)
    except Exception as exc:  # noqa: BLE001 - recorded; retried or the run fails
        return fail_stage(ticket=ticket, exc=exc)
    return finish_stage_and_continue(ticket=ticket, counts=counts)


def feature_chunks(*, run: PipelineRun) -> list[list[str]]:
    """The tickers to build in chunks of ``ML_PIPELINE_FEATURE_CHUNK_TICKERS`` (tickers with bars)."""
    has_bars = Exists(PriceBar.objects.filter(ticker=OuterRef("pk")))
    qs = Ticker.objects.filter(has_bars)
    if run.tickers:
        qs = qs.filter(symbol__in=run.tickers)
    symbols = list(qs.order_by("symbol").values_list("symbol", flat=True))
    size = orchestrator_settings().feature_chunk_tickers
    return chunked(symbols, size)


def build_feature_chunk(*, run_id: int, generation: int, chunk: int, tickers: list[str]) -> dict[str, Any]:
    """Body of a chunk task: never raises, so the chord's callback always runs and decides."""
    run = PipelineRun.objects.filter(pk=run_id, generation=generation, status__in=PipelineRun.HOLDING_SLOT).first()
    if run is None:
        return {"chunk": chunk, "skipped": True}
    for attempt in range(1, orchestrator_settings().max_retries + 2):
        try:
            with heartbeat(run_id=run_id, generation=generation):
                return {"chunk": chunk, **stage_build_features(run=run, tickers=tickers)}
        except Exception as exc:  # noqa: BLE001 - reported to the chord callback
            if is_transient(exc) and attempt <= orchestrator_settings().max_retries:
                time.sleep(backoff_seconds(attempt=attempt, base=orchestrator_settings().retry_backoff_seconds))
                continue
            return {"chunk": chunk, "error": describe_error(exc), "transient": is_transient(exc),
                    "hints": list(getattr(exc, "hints", []) or [])}
    raise AssertionError("unreachable")  # pragma: no cover


def merge_feature_chunks(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts of a fanned-out build from its chunk results; raises the first chunk's error."""
    errors = [r for r in results if r.get("error")]
    if errors:
        first = errors[0]
        cls = TransientStageError if first.get("transient") else PermanentStageError
        raise cls(f"chunk {first.get('chunk')}: {first['error']}", hints=first.get("hints") or ())
    counts: dict[str, Any] = {"chunks": len(results), "tickers": 0, "rows": 0, "files_written": 0}
    for r in results:
        for key in ("tickers", "rows", "files_written"):
            counts[key] += int(r.get(key) or 0)
        counts.setdefault("version", r.get("version"))
    return counts


def finish_feature_fan_out(*, run_id: int, generation: int, results: Sequence[dict[str, Any]]) -> Outcome:
    """Chord callback body: close the build_features stage from its chunks."""
    run = PipelineRun.objects.filter(pk=run_id).first()
    if run is None or run.generation != generation or run.status not in PipelineRun.HOLDING_SLOT:
        return Outcome("stop")
    row = PipelineStage.objects.filter(run=run, name="build_features").order_by("-attempt").first()
    if row is None or row.status != PipelineStage.Status.RUNNING:
        return Outcome("continue" if row is not None and row.status == PipelineStage.Status.SUCCEEDED else "stop")
    ticket = Ticket("run", run=run, stage=row)
    try:
        counts = merge_feature_chunks(results)
    except StageError as exc:
        return fail_stage(ticket=ticket, exc=exc)
    return finish_stage_and_continue(ticket=ticket, counts=counts)
