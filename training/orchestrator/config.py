"""The orchestrator's knobs, read at each call (tests and the admin change them while a process runs)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from features.common import env_number
from training.orchestrator.errors import PipelineError


@dataclass(frozen=True)
class OrchestratorSettings:
    max_concurrent_pipelines: int
    enable_scheduling: bool
    enable_auto_retraining: bool
    cost_limit_daily_usd: float
    max_retries: int
    retry_backoff_seconds: float
    max_training_hours: float
    heartbeat_seconds: float
    heartbeat_timeout_seconds: float
    poll_seconds: float
    feature_chunk_tickers: int


def _env_number(name: str, default: float) -> float:
    return env_number(name, default, cast=float, error=PipelineError)


def orchestrator_settings() -> OrchestratorSettings:
    """The orchestrator's knobs, read at each call: config/pipeline.json's ``orchestrator`` and
    ``training`` sections, ``ENABLE_AUTO_RETRAINING`` and ``ML_DAILY_COST_LIMIT_USD`` (environment
    wins, as in settings), and the ``ML_PIPELINE_*`` variables."""
    orch = settings.PIPELINE_CONFIG.orchestrator
    return OrchestratorSettings(
        max_concurrent_pipelines=orch.max_concurrent_pipelines,
        enable_scheduling=orch.enable_scheduling,
        enable_auto_retraining=bool(settings.ENABLE_AUTO_RETRAINING),
        cost_limit_daily_usd=float(settings.ML_DAILY_COST_LIMIT_USD),
        max_retries=orch.max_retries,
        retry_backoff_seconds=orch.retry_backoff_seconds,
        max_training_hours=settings.PIPELINE_CONFIG.training.max_training_hours,
        heartbeat_seconds=max(0.05, _env_number("ML_PIPELINE_HEARTBEAT_SECONDS", 30)),
        heartbeat_timeout_seconds=max(1.0, _env_number("ML_PIPELINE_HEARTBEAT_TIMEOUT_SECONDS", 600)),
        poll_seconds=max(0.05, _env_number("ML_PIPELINE_POLL_SECONDS", 10)),
        feature_chunk_tickers=max(1, int(_env_number("ML_PIPELINE_FEATURE_CHUNK_TICKERS", 500))),
    )
