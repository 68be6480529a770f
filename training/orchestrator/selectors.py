"""Reads of pipeline runs (``run_pipeline``, ``retrain --status``, the admin) and their one-line texts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from features.common import jsonable
from training.models import PipelineRun, PipelineStage
from training.orchestrator.scope import normalize_tickers, scope_for


def latest_attempts(*, run: PipelineRun) -> list[PipelineStage]:
    """The run's last attempt of each stage, in pipeline order."""
    latest: dict[str, PipelineStage] = {}
    for row in run.stages.all().order_by("position", "attempt"):
        latest[row.name] = row
    return sorted(latest.values(), key=lambda r: r.position)


def last_succeeded_run(*, tickers: Sequence[str] | None = None) -> PipelineRun | None:
    """The newest succeeded run of the scope of ``tickers`` (the universe when empty)."""
    return (PipelineRun.objects.filter(scope=scope_for(normalize_tickers(tickers)), status=PipelineRun.Status.SUCCEEDED)
            .order_by("-finished_at", "-id").first())


def recent_pipeline_runs(*, limit: int = 10) -> list[PipelineRun]:
    return list(PipelineRun.objects.prefetch_related("stages").select_related("training_run")
                .order_by("-created_at", "-id")[:limit])


def pipeline_run_summary(run: PipelineRun) -> dict[str, Any]:
    """What ``run_pipeline --json`` and ``retrain --status --json`` show for a pipeline run."""
    stages = []
    for row in latest_attempts(run=run):
        stages.append({"name": row.name, "status": row.status, "attempt": row.attempt,
                       "started_at": row.started_at, "finished_at": row.finished_at, "seconds": row.seconds,
                       "counts": row.counts, "error": row.error})
    return jsonable({
        "id": run.pk, "kind": "pipeline", "status": run.status, "trigger": run.trigger, "reason": run.reason,
        "requested_by": run.requested_by, "scope": run.scope, "tickers": run.tickers or "all", "mode": run.mode,
        "attempts": run.attempts, "deduplicated": bool(getattr(run, "deduplicated", False)),
        "created_at": run.created_at, "started_at": run.started_at, "finished_at": run.finished_at,
        "duration_seconds": run.duration_seconds, "cost_usd": float(run.cost_usd or 0),
        "training_run": run.training_run_id, "current_stage": run.current_stage,
        "status_reason": run.status_reason, "error": run.error, "stages": stages,
    })


def format_run(summary: dict[str, Any]) -> list[str]:
    """Human lines for a run summary: a header, one line per stage, the error."""
    duration = f"{summary['duration_seconds']:.1f}s" if summary.get("duration_seconds") is not None else "-"
    tickers = summary["tickers"] if isinstance(summary["tickers"], str) else ",".join(summary["tickers"][:8]) + (
        f",... ({len(summary['tickers'])} in all)" if len(summary["tickers"]) > 8 else "")
    lines = [f"pipeline run {summary['id']}: {summary['status']} ({summary['trigger']}, "
             f"{summary['requested_by'] or '-'}) created {summary['created_at']}, duration {duration}, "
             f"attempts {summary['attempts']}, ${summary['cost_usd']:.6f}; tickers {tickers}"
             + (f"; training run {summary['training_run']}" if summary.get("training_run") else "")]
    if summary.get("reason"):
        lines.append(f"  reason: {summary['reason']}")
    for st in summary["stages"]:
        counts = counts_text(st.get("counts") or {})
        lines.append(f"  {st['name']:<20} {st['status']:<10} {float(st['seconds'] or 0):>9.1f}s"
                     + (f"  attempt {st['attempt']}" if st["attempt"] > 1 else "")
                     + (f"  {counts}" if counts else "")
                     + (f"  {st['error'].splitlines()[0]}" if st.get("error") else ""))
    if summary["status"] in ("skipped", "cancelled") and summary.get("status_reason"):
        lines.append(f"  {summary['status']}: {summary['status_reason']}")
    if summary.get("error") and summary["status"] == "failed":
        lines += ["  " + line for line in summary["error"].rstrip().splitlines()[-8:]]
    return lines


def _short(value: Any) -> str | None:
    """A count for one line: scalars as they are, short lists and dicts inline, long ones left out."""
    if isinstance(value, list | tuple):
        return ",".join(map(str, value)) if 0 < len(value) <= 8 else None
    if isinstance(value, dict):
        if not 0 < len(value) <= 6 or any(isinstance(v, dict | list) for v in value.values()):
            return None
        return ",".join(f"{k}:{round(v, 4) if isinstance(v, float) else v}" for k, v in value.items())
    return None if value in ("", None) else str(value)


def counts_text(counts: dict[str, Any]) -> str:
    """A stage's counts on one line: ``key=value, ...`` (long lists and nested values left out)."""
    parts = ((k, _short(v)) for k, v in counts.items())
    return ", ".join(f"{k}={v}" for k, v in parts if v is not None)
