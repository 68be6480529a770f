"""The orchestrator: daily pipeline runs, retrain triggers, the cross-machine concurrency limit,
retries, the heartbeat reaper and the cost limit (the spec's "1. ML Orchestrator").

A pipeline run goes through these stages, each attempt recorded as a ``PipelineStage`` row:

``update_market_data``  new daily bars from the provider (``features.services.market_updates``);
``build_features``      the feature store build (on Celery: one task per chunk of tickers, a chord);
``train``               a ``TrainingRun`` (``training.services.retrain``; Prophet fans out per ticker
                        chunk on Celery), awaited without holding a worker slot;
``evaluate``            walk-forward evaluation of every learner (recorded from the training run);
``promote``             registration and the promotion gate (recorded from the training run);
``batch_predict``       ``inference.services.batch_predict``: daily predictions and recommendations;
``check_drift``         ``monitoring.services.check_drift`` on the active models (both registered by
                        their apps, ``register_stage_hook``: training does not import them).

Guarantees:

* **one active run per scope** (``"universe"`` or a hash of the ticker list): a partial unique
  constraint, so two triggers on two machines cannot both create one; the second is recorded as
  deduplicated and gets the active run;
* **at most ``orchestrator.max_concurrent_pipelines`` runs hold a slot** (running or retrying),
  decided under a row lock (``OrchestratorLock``; SQLite serializes write transactions); the others
  wait queued, FIFO, and the run that finishes starts the next (plus the periodic dispatcher);
* **cost limit**: a run about to start while today's tracked cost is above
  ``ML_DAILY_COST_LIMIT_USD``, or the month-to-date above ``ML_MONTHLY_COST_LIMIT_USD``, is skipped
  with the reason (``Daily cost limit exceeded: ...`` / ``Monthly cost limit exceeded: ...``) and a
  ``cost_limit_exceeded`` alert (keyed by the day, or by the month);
* **retries**: transient errors (database or broker unavailable, provider 5xx/timeouts, out of
  memory) are retried with exponential backoff and jitter up to ``orchestrator.max_retries`` times
  per stage, every attempt recorded; permanent errors fail the run at once with what to do;
* **crash safety**: a run holding a slot has a heartbeat (a thread while a stage runs in-process,
  each poll while training runs); ``reap_stale_runs`` (beat, and at worker start) fails the attempt
  of a run whose process is gone or whose heartbeat is stale and queues it again (up to
  ``max_retries``); the same beat sends again the task of a training run outside any pipeline
  whose trainer is lost (``recover_lost_training_runs``). Every (re)dispatch bumps the run's
  ``generation``; tasks of an older generation (a redelivered message) stop, and stages that already
  succeeded are skipped.

Layout (import each name from the module that owns it; this package re-exports nothing):

``triggers``        ``request_retrain`` (monitoring's drift/performance triggers, ``POST /retrain``) and
                    ``request_pipeline_run`` (schedule, command, admin): deduplication per ``scope``;
``limits``          slots and the cost limit: ``claim_slot``, ``dispatch_queued_runs``;
``stages``          the state machine: ``begin_stage``, ``heartbeat``, ``finish_stage`` (and
                    ``finish_stage_and_continue``), ``fail_stage``,
                    ``complete_run``, ``fail_run``, ``cancel_run``;
``stage_work``      the stages' work other than training, ``register_stage_hook``;
``train_stage``     the train stage: start, deadline, poll (``check_training``), record;
``training_runs``   stopping a pipeline run's training run;
``celery_stages``   the bodies of ``training.pipeline_tasks``' stage tasks, the feature fan-out;
``sync_executor``   ``execute_sync``: every stage in this process (``manage.py run_pipeline --sync``);
``reaper``          ``reap_stale_runs``, ``recover_lost_training_runs``;
``schedules``       ``seed_schedules``, ``schedule_specs`` (django-celery-beat);
``selectors``       reads: ``pipeline_run_summary``, ``format_run``, ``recent_pipeline_runs``, ``last_succeeded_run``;
``config``          ``orchestrator_settings``; ``errors``: the errors, ``is_transient``, ``backoff_seconds``;
``scope``           ``normalize_tickers``, ``scope_for``.

Knobs from the environment (defaults in brackets): ``ML_PIPELINE_HEARTBEAT_SECONDS`` [30],
``ML_PIPELINE_HEARTBEAT_TIMEOUT_SECONDS`` [600], ``ML_PIPELINE_POLL_SECONDS`` [10],
``ML_PIPELINE_FEATURE_CHUNK_TICKERS`` [500].
"""
