"""The orchestrator's knobs, read at each call (tests and the admin change them while a process runs)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


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


def orchestrator_settings() -> OrchestratorSettings:
    """The orchestrator's knobs, read at each call: config/pipeline.json's ``orchestrator`` and
    ``training`` sections, and the ``ENABLE_AUTO_RETRAINING``, ``ML_DAILY_COST_LIMIT_USD`` and
    ``ML_PIPELINE_*`` settings."""
    orch = settings.PIPELINE_CONFIG.orchestrator
    return OrchestratorSettings(
        max_concurrent_pipelines=orch.max_concurrent_pipelines,
        enable_scheduling=orch.enable_scheduling,
        enable_auto_retraining=settings.ENABLE_AUTO_RETRAINING,
        cost_limit_daily_usd=settings.ML_DAILY_COST_LIMIT_USD,
        max_retries=orch.max_retries,
        retry_backoff_seconds=orch.retry_backoff_seconds,
        max_training_hours=settings.PIPELINE_CONFIG.training.max_training_hours,
        heartbeat_seconds=settings.ML_PIPELINE_HEARTBEAT_SECONDS,
        heartbeat_timeout_seconds=settings.ML_PIPELINE_HEARTBEAT_TIMEOUT_SECONDS,
        poll_seconds=settings.ML_PIPELINE_POLL_SECONDS,
        feature_chunk_tickers=settings.ML_PIPELINE_FEATURE_CHUNK_TICKERS,
    )
