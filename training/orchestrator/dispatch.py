"""Sending a claimed run's chain to the broker.

The chain is built from the tasks' registered names (``training.pipeline_tasks`` defines them and
imports the orchestrator; nothing here imports it back), so any process can send a run and any
worker that registered the tasks can run it::

    update_market_data -> build_features -> train -> await_training -> batch_predict -> check_drift -> finish
"""

from __future__ import annotations

from celery import chain

from investml.celery import app

CHAIN = (
    "training.pipeline.update_market_data",
    "training.pipeline.build_features",
    "training.pipeline.train",
    "training.pipeline.await_training",
    "training.pipeline.batch_predict",
    "training.pipeline.check_drift",
    "training.pipeline.finish",
)
ON_ERROR = "training.pipeline.failed"  # called with (request, exc, traceback, run_id, generation)


def start_chain(*, run_id: int, generation: int) -> str:
    """Send run ``run_id``'s chain; returns the first task's id."""
    steps = (app.signature(name, args=(run_id, generation), immutable=True) for name in CHAIN)
    pipeline = chain(*steps).on_error(app.signature(ON_ERROR, args=(run_id, generation)))
    result = pipeline.apply_async()
    first = result
    while getattr(first, "parent", None) is not None:
        first = first.parent
    return str(first.id or "")
