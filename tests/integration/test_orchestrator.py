"""The orchestrator in-process (no worker; ``start_chain`` is recorded instead of sent): trigger
deduplication, the concurrency limit, automatic triggers switched off, the cost limit, transient
retries with every attempt recorded, permanent failures, the reaper and stale generations,
``max_training_hours``, schedules seeded idempotently, the commands."""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import OperationalError
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from monitoring.models import Alert
from monitoring.services import record_cost
from training.models import PipelineRun, PipelineStage, RetrainTrigger, TrainingRun
from training.orchestrator import dispatch, stage_work, sync_executor, train_stage
from training.orchestrator.errors import PipelineError
from training.orchestrator.limits import dispatch_queued_runs
from training.orchestrator.reaper import reap_stale_runs
from training.orchestrator.schedules import seed_schedules
from training.orchestrator.stages import (
    STAGES,
    Ticket,
    begin_stage,
    cancel_run,
    complete_run,
    finish_stage,
)
from training.orchestrator.train_stage import check_training, record_training
from training.orchestrator.triggers import request_pipeline_run, request_retrain
from training.processes import worker_host

pytestmark = pytest.mark.django_db

SEEDED = {"investml: daily pipeline", "investml: drift check", "investml: performance tracking",
          "investml: evaluate alerts", "investml: storage cost", "investml: reap stale pipeline runs",
          "investml: dispatch queued pipeline runs", "investml: data retention", "investml: intraday quotes",
          "investml: news", "investml: fundamentals refresh"}


@pytest.fixture
def sent(settings, monkeypatch):
    """Fast retries, the spec's limits, and Celery chains recorded instead of sent."""
    settings.PIPELINE_CONFIG = settings.PIPELINE_CONFIG.with_overrides({"orchestrator": {
        "max_concurrent_pipelines": 3, "max_retries": 2, "retry_backoff_seconds": 0.01, "enable_scheduling": True}})
    settings.ENABLE_AUTO_RETRAINING = True
    settings.ML_DAILY_COST_LIMIT_USD = 10.0
    chains: list[tuple[int, int]] = []

    def start_chain(*, run_id: int, generation: int) -> str:
        chains.append((run_id, generation))
        return f"task-{run_id}-{generation}"

    monkeypatch.setattr(dispatch, "start_chain", start_chain)
    return chains


def _stages(run: PipelineRun, name: str) -> list[PipelineStage]:
    return list(PipelineStage.objects.filter(run=run, name=name).order_by("attempt"))


def _holding() -> int:
    return PipelineRun.objects.filter(status__in=PipelineRun.HOLDING_SLOT).count()


def test_triggers_for_the_same_scope_are_deduplicated_and_every_one_is_recorded(sent):
    first = request_retrain(trigger="drift", reason="Data drift on lstm_predictor: 40% of features drifted > 30%",
                            requested_by="monitoring")
    second = request_retrain(trigger="performance", reason="Model ensemble accuracy 51.0% < 80%",
                             requested_by="monitoring")
    third = request_retrain(trigger="api", reason="", requested_by="alice")
    assert first.pk == second.pk == third.pk
    assert not first.deduplicated and second.deduplicated and third.deduplicated
    assert first.status == "running" and first.scope == "universe" and first.trigger == "drift"

    scoped = request_retrain(trigger="api", reason="two names", requested_by="bob", tickers=["msft", " AAPL", "msft"])
    assert scoped.pk != first.pk and scoped.tickers == ["AAPL", "MSFT"] and scoped.scope.startswith("tickers:")
    assert request_retrain(trigger="admin", reason="", tickers=["AAPL", "MSFT"]).pk == scoped.pk

    rows = list(RetrainTrigger.objects.order_by("id"))
    assert [r.outcome for r in rows] == ["queued", "deduplicated", "deduplicated", "queued", "deduplicated"]
    assert [r.deduplicated for r in rows] == [False, True, True, False, True]
    assert rows[1].reason == "Model ensemble accuracy 51.0% < 80%" and rows[1].pipeline_run_id == first.pk
    assert sent == [(first.pk, 1), (scoped.pk, 1)]  # one chain per run, never one per trigger

    assert complete_run(run_id=first.pk, generation=1)
    first.refresh_from_db()
    assert first.status == "succeeded"
    again = request_retrain(trigger="drift", reason="drift again")
    assert again.pk != first.pk and not again.deduplicated


def test_at_most_three_runs_hold_a_slot_the_others_wait_queued_in_order(sent):
    runs = [request_pipeline_run(trigger="api", requested_by="load", tickers=[f"T{i}"]) for i in range(5)]
    status = {r.pk: PipelineRun.objects.get(pk=r.pk).status for r in runs}
    assert [status[r.pk] for r in runs] == ["running"] * 3 + ["queued"] * 2
    assert sorted(PipelineRun.objects.filter(status="running").values_list("running_at_start", flat=True)) == [1, 2, 3]
    assert [pk for pk, _ in sent] == [r.pk for r in runs[:3]]

    assert complete_run(run_id=runs[0].pk, generation=1)  # the finishing run starts the next queued one
    assert _holding() == 3 and PipelineRun.objects.get(pk=runs[3].pk).status == "running"
    cancel_run(run_id=runs[1].pk, actor="admin")
    assert _holding() == 3 and PipelineRun.objects.get(pk=runs[4].pk).status == "running"
    assert [pk for pk, _ in sent] == [r.pk for r in runs]
    assert max(PipelineRun.objects.values_list("running_at_start", flat=True)) == 3
    assert dispatch_queued_runs() == []  # nothing queued, nothing started twice


def test_automatic_triggers_are_suppressed_when_auto_retraining_is_off_manual_ones_are_not(sent, settings):
    settings.ENABLE_AUTO_RETRAINING = False
    drift = request_retrain(trigger="drift", reason="Data drift on xgboost_classifier", requested_by="monitoring")
    assert drift.status == "skipped" and "ENABLE_AUTO_RETRAINING" in drift.status_reason and sent == []
    assert RetrainTrigger.objects.get(pipeline_run=drift).outcome == "suppressed"
    manual = request_retrain(trigger="api", reason="by hand", requested_by="alice")
    assert manual.status == "running" and sent == [(manual.pk, 1)]
    with pytest.raises(PipelineError, match="unknown trigger"):
        request_retrain(trigger="cron", reason="")


def test_a_run_that_would_start_over_the_daily_cost_limit_is_skipped_with_an_alert(sent):
    record_cost(day=timezone.localdate(), category="data_api", source="alphavantage", units=500, cost_usd=12.5)
    run = request_pipeline_run(trigger="schedule", requested_by="celery beat")
    assert run.status == "skipped" and run.status_reason == "Daily cost limit exceeded: $12.50 > $10.00"
    assert sent == [] and run.finished_at is not None
    alert = Alert.objects.get(kind="cost_limit_exceeded", resolved=False)
    assert alert.message == "Daily cost limit exceeded: $12.50 > $10.00" and alert.key == timezone.localdate().isoformat()
    assert alert.details["skipped_pipeline_run"] == run.pk

    out = io.StringIO()  # the same through the command, in-process
    call_command("run_pipeline", "--sync", "--noop", "0", stdout=out)
    assert "skipped: Daily cost limit exceeded: $12.50 > $10.00" in out.getvalue()
    assert Alert.objects.get(kind="cost_limit_exceeded", resolved=False).count == 2


def _quick(**overrides):
    """Stage bodies that return at once (the smoke mode runs no real work)."""
    return {"update_market_data": lambda **kw: {"rows_added": 0}, "build_features": lambda **kw: {"rows": 0},
            "batch_predict": lambda **kw: {"tickers": 0}, "check_drift": lambda **kw: {"reports": 0}, **overrides}


def test_transient_errors_are_retried_with_backoff_and_every_attempt_recorded(sent, monkeypatch):
    calls: list[float] = []

    def flaky(**kwargs):
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise OperationalError("could not connect to server: Connection refused")
        return {"rows": 42}

    monkeypatch.setattr(sync_executor, "STAGE_WORK", _quick(build_features=flaky))
    run = request_pipeline_run(trigger="command", sync=True, options={"noop_seconds": 0})
    assert run.status == "succeeded", run.error
    attempts = _stages(run, "build_features")
    assert [a.status for a in attempts] == ["failed", "failed", "succeeded"] and attempts[-1].counts == {"rows": 42}
    assert "OperationalError: could not connect to server" in attempts[0].error and "retry 1 of 2" in attempts[0].error
    assert run.attempts == 3 and "attempt 2 of build_features failed" in run.error
    assert [s.name for s in run.stages.filter(status="succeeded").order_by("position")] == list(STAGES)


def test_transient_errors_fail_the_run_after_max_retries(sent, monkeypatch):
    def down(**kwargs):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(sync_executor, "STAGE_WORK", _quick(update_market_data=down))
    run = request_pipeline_run(trigger="command", sync=True, options={"noop_seconds": 0})
    assert run.status == "failed" and len(_stages(run, "update_market_data")) == 3
    assert run.status_reason.startswith(f"ERROR: Pipeline {run.pk} failed at update_market_data: ConnectionError")
    assert "(after 3 attempts)" in run.error and "Solutions:" in run.error
    assert not run.stages.filter(name="build_features").exists()


def test_a_permanent_error_fails_the_run_at_once_saying_what_to_do(sent, monkeypatch, settings, tmp_path):
    settings.ML_FEATURES_PATH = tmp_path / "features"
    monkeypatch.setattr(sync_executor, "STAGE_WORK", {**stage_work.STAGE_WORK,
                                                     "update_market_data": lambda **kw: {"rows_added": 0}})
    with pytest.raises(CommandError) as err:
        call_command("run_pipeline", "--sync", stdout=io.StringIO())
    run = PipelineRun.objects.get()
    expected = (f"ERROR: Pipeline {run.pk} failed at build_features: no price bars. Run `python manage.py load_sample` "
                "or `python manage.py update_market_data` first.")
    assert run.status == "failed" and run.status_reason == expected and expected in str(err.value)
    assert [a.status for a in _stages(run, "build_features")] == ["failed"] and run.attempts == 1
    assert not run.stages.filter(name="train").exists()


def test_the_reaper_requeues_a_run_whose_worker_died_and_stale_tasks_stop(sent, settings):
    run = request_pipeline_run(trigger="schedule", requested_by="celery beat")
    assert sent == [(run.pk, 1)]
    for stage in ("update_market_data", "build_features"):
        ticket = begin_stage(run_id=run.pk, generation=1, stage=stage)
        finish_stage(ticket=ticket, counts={"ok": True})
    ticket = begin_stage(run_id=run.pk, generation=1, stage="train")
    assert ticket.action == "run"
    dead = subprocess.Popen(["true"])
    dead.wait()
    PipelineRun.objects.filter(pk=run.pk).update(worker_pid=dead.pid)  # the worker was SIGKILLed mid-stage

    assert reap_stale_runs() == [run.pk]
    run.refresh_from_db()
    assert run.status == "running" and run.generation == 2 and run.attempts == 2  # queued again and restarted
    assert sent == [(run.pk, 1), (run.pk, 2)]
    lost = _stages(run, "train")[0]
    assert lost.status == "failed" and lost.error.startswith("worker lost: the process") and "is gone" in lost.error
    assert "attempt 1 of train lost" in run.error

    assert begin_stage(run_id=run.pk, generation=1, stage="train").action == "stop"  # a redelivered old task
    assert begin_stage(run_id=run.pk, generation=2, stage="update_market_data").action == "skip"  # done already
    assert begin_stage(run_id=run.pk, generation=2, stage="train").stage.attempt == 2


def test_the_reaper_gives_up_after_max_retries_and_fails_sync_runs_at_once(sent):
    run = request_pipeline_run(trigger="api", requested_by="x")
    for generation in (1, 2, 3):
        begin_stage(run_id=run.pk, generation=generation, stage="update_market_data")
        PipelineRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=2),
                                                     worker_pid=None)
        assert reap_stale_runs() == [run.pk]
    run.refresh_from_db()
    assert run.status == "failed" and "gave up after 3 attempts" in run.status_reason
    assert "no heartbeat for" in run.status_reason

    waiting = PipelineRun.objects.create(trigger="command", scope="tickers:dead", mode="sync", worker_host=worker_host(),
                                         worker_pid=run.pk + 999999, heartbeat_at=timezone.now())
    assert waiting.pk in reap_stale_runs()
    waiting.refresh_from_db()
    assert waiting.status == "failed" and "run_pipeline --sync" in waiting.error


def test_a_stage_delivered_twice_runs_once_and_a_lost_attempt_is_taken_over(sent):
    """The broker delivers at least once (a Redis restart can put back a task that is running): a
    second delivery leaves a live attempt alone, takes over a lost one, and a lost owner's late
    result is not recorded over the attempt that replaced it."""
    run = request_pipeline_run(trigger="api", requested_by="x")
    first = begin_stage(run_id=run.pk, generation=1, stage="update_market_data")
    assert first.action == "run" and first.stage.worker == f"{worker_host()}:{os.getpid()}"
    again = begin_stage(run_id=run.pk, generation=1, stage="update_market_data")  # while this process runs it
    assert again.action == "stop" and "is a duplicate" in again.reason
    assert finish_stage(ticket=first, counts={"rows_added": 1})
    assert begin_stage(run_id=run.pk, generation=1, stage="update_market_data").action == "skip"
    assert [(a.attempt, a.status) for a in _stages(run, "update_market_data")] == [(1, "succeeded")]

    # on another machine, the run's heartbeat says whether its owner is alive
    remote = begin_stage(run_id=run.pk, generation=1, stage="build_features")
    PipelineStage.objects.filter(pk=remote.stage.pk).update(worker="another-machine:4242")
    assert begin_stage(run_id=run.pk, generation=1, stage="build_features").action == "stop"
    PipelineRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=2))
    taken = begin_stage(run_id=run.pk, generation=1, stage="build_features")
    assert taken.action == "run" and taken.stage.attempt == 2
    assert not finish_stage(ticket=remote, counts={"rows": 1})  # the lost owner finishes late: not recorded
    assert finish_stage(ticket=taken, counts={"rows": 2})
    assert [(a.attempt, a.status, a.counts) for a in _stages(run, "build_features")] == [
        (1, "failed", {}), (2, "succeeded", {"rows": 2})]
    assert "another-machine:4242) was lost" in _stages(run, "build_features")[0].error

    # on this machine, its process: one that exited is lost, whatever the heartbeat says
    local = begin_stage(run_id=run.pk, generation=1, stage="batch_predict")
    dead = subprocess.Popen(["true"])
    dead.wait()
    PipelineStage.objects.filter(pk=local.stage.pk).update(worker=f"{worker_host()}:{dead.pid}")
    assert begin_stage(run_id=run.pk, generation=1, stage="batch_predict").stage.attempt == 2


def test_the_training_poll_delivered_twice_records_evaluate_and_promote_once(sent):
    run = request_pipeline_run(trigger="api", requested_by="x", tickers=["AAPL"])
    ticket = begin_stage(run_id=run.pk, generation=1, stage="train")
    training = TrainingRun.objects.create(status="succeeded", trigger="api", model_names=["xgboost_classifier"],
                                          requested_by=f"pipeline run {run.pk}")
    # two deliveries of the poll both read the train attempt running, before either records it
    copies = [Ticket("run", run=ticket.run, stage=PipelineStage.objects.get(pk=ticket.stage.pk)) for _ in range(2)]
    assert record_training(ticket=copies[0], training=training).action == "continue"
    assert record_training(ticket=copies[1], training=training).action == "stop"
    for name in ("train", "evaluate", "promote"):
        assert [(a.attempt, a.status) for a in _stages(run, name)] == [(1, "succeeded")], name
    assert check_training(run_id=run.pk, generation=1).action == "continue"  # a later copy goes on to the next


def test_the_training_poll_sends_again_the_task_of_a_run_whose_machine_is_lost(sent, monkeypatch, settings):
    """A lost machine's training task stays unacknowledged until the broker's visibility timeout:
    once the run's heartbeat is stale, the poll sends the task again (once per heartbeat timeout),
    and that delivery restarts the run. A fresh heartbeat, a live local process or a run without a
    heartbeat (begun before there was one) is left alone."""
    from training import dispatch as training_dispatch

    resent: list[int] = []
    monkeypatch.setattr(training_dispatch, "retrain_send", lambda *, run_id: resent.append(run_id) or "task")
    timeout = settings.ML_PIPELINE_HEARTBEAT_TIMEOUT_SECONDS
    run = request_pipeline_run(trigger="api", tickers=["AAPL"])
    begin_stage(run_id=run.pk, generation=1, stage="train")
    training = TrainingRun.objects.create(status="running", trigger="api", parts_pending=["main"],
                                          options={"worker": "another-machine.example:4242", "attempt": 1},
                                          heartbeat_at=timezone.now() - timedelta(seconds=timeout - 60))
    PipelineRun.objects.filter(pk=run.pk).update(training_run=training)

    assert check_training(run_id=run.pk, generation=1).action == "wait" and resent == []  # still beating there
    TrainingRun.objects.filter(pk=training.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=timeout + 60))
    assert check_training(run_id=run.pk, generation=1).action == "wait" and resent == [training.pk]
    training.refresh_from_db()
    assert "its process another-machine.example:4242 is lost" in training.log and training.options["resent_at"]
    assert check_training(run_id=run.pk, generation=1).action == "wait" and resent == [training.pk]  # not every poll

    TrainingRun.objects.filter(pk=training.pk).update(options={"worker": "another-machine.example:4242"},
                                                      heartbeat_at=None)
    assert check_training(run_id=run.pk, generation=1).action == "wait" and resent == [training.pk]
    TrainingRun.objects.filter(pk=training.pk).update(options={"worker": f"{worker_host()}:{os.getpid()}"},
                                                      heartbeat_at=timezone.now() - timedelta(seconds=timeout - 60))
    assert check_training(run_id=run.pk, generation=1).action == "wait" and resent == [training.pk]  # alive here
    dead = subprocess.Popen(["true"])
    dead.wait()
    TrainingRun.objects.filter(pk=training.pk).update(options={"worker": f"{worker_host()}:{dead.pid}"},
                                                      heartbeat_at=timezone.now())
    assert check_training(run_id=run.pk, generation=1).action == "wait" and resent == [training.pk, training.pk]
    # a process of this machine under the owner's pid, silent past the timeout: the pid was handed on
    TrainingRun.objects.filter(pk=training.pk).update(options={"worker": f"{worker_host()}:{os.getpid()}"},
                                                      heartbeat_at=timezone.now() - timedelta(days=1))
    assert check_training(run_id=run.pk, generation=1).action == "wait" and resent == [training.pk] * 3


def test_the_reaper_recovers_a_lost_training_run_that_no_pipeline_polls(sent, monkeypatch, settings):
    """``manage.py retrain`` queues a run outside any pipeline: the reaper's beat sends its task again
    once its trainer is lost (once per heartbeat timeout), and fails a run trained in place (--sync)
    whose process is gone; a live trainer, a run without a heartbeat and a pipeline's own run are
    left alone."""
    from training import dispatch as training_dispatch
    from training.pipeline_tasks import reap_stale_task

    resent: list[int] = []
    monkeypatch.setattr(training_dispatch, "retrain_send", lambda *, run_id: resent.append(run_id) or "task")
    timeout = settings.ML_PIPELINE_HEARTBEAT_TIMEOUT_SECONDS
    stale = timezone.now() - timedelta(seconds=timeout + 60)
    dead = subprocess.Popen(["true"])
    dead.wait()

    def running(**fields):
        return TrainingRun.objects.create(status="running", trigger="command", parts_pending=["main"], **fields)

    queued = running(options={"worker": "another-machine.example:4242", "attempt": 1}, heartbeat_at=stale)
    in_place = running(options={"worker": f"{worker_host()}:{dead.pid}", "sync": True}, heartbeat_at=timezone.now())
    alive = running(options={"worker": f"{worker_host()}:{os.getpid()}", "sync": True}, heartbeat_at=timezone.now())
    recycled = running(options={"worker": f"{worker_host()}:{os.getpid()}", "sync": True}, heartbeat_at=stale)
    beating = running(options={"worker": "another-machine.example:4242"}, heartbeat_at=timezone.now())
    old = running(options={"worker": "another-machine.example:4242"}, heartbeat_at=None)
    # a pipeline's own: its poll's (or its pipeline run's reaping), never sent a second time from here
    piped = running(options={"worker": "another-machine.example:4242"}, heartbeat_at=stale,
                    requested_by="pipeline run 999")

    result = reap_stale_task()
    assert result["training"] == {"resent": [queued.pk], "failed": [in_place.pk, recycled.pk]}
    assert resent == [queued.pk]
    in_place.refresh_from_db()
    assert in_place.status == "failed" and in_place.finished_at is not None
    assert f"the process {worker_host()}:{dead.pid} training it in place (--sync) is lost" in in_place.error
    assert "is lost" in in_place.log
    assert "is lost (last heartbeat 660s ago" in TrainingRun.objects.get(pk=recycled.pk).error
    for untouched in (alive, beating, old, piped):
        untouched.refresh_from_db()
        assert untouched.status == "running" and not untouched.error
    assert reap_stale_task()["training"] == {"resent": [], "failed": []} and resent == [queued.pk]  # once


def test_max_training_hours_fails_the_run_cleanly(sent, monkeypatch, settings):
    settings.PIPELINE_CONFIG = settings.PIPELINE_CONFIG.with_overrides(
        {"training": {"max_training_hours": 1 / 3600}})  # one second
    def slow_retrain(**kwargs):
        TrainingRun.objects.create(status="running", trigger=kwargs["trigger"], requested_by=kwargs["requested_by"])
        time.sleep(30)
        raise AssertionError("not interrupted")

    monkeypatch.setattr(train_stage, "retrain", slow_retrain)
    monkeypatch.setattr(sync_executor, "STAGE_WORK", _quick())
    started = time.monotonic()
    run = request_pipeline_run(trigger="command", sync=True)
    assert time.monotonic() - started < 15
    assert run.status == "failed" and run.status_reason == (
        f"ERROR: Pipeline {run.pk} failed at train: training exceeded training.max_training_hours (0.000277778 h); "
        "the training run was stopped")
    training_run = TrainingRun.objects.get(requested_by=f"pipeline run {run.pk}")
    assert training_run.status == "failed" and "max_training_hours" in training_run.error

    # on Celery the poll of the training run enforces it
    queued = request_pipeline_run(trigger="api", tickers=["AAPL"])
    ticket = begin_stage(run_id=queued.pk, generation=1, stage="train")
    slow = TrainingRun.objects.create(status="running", trigger="api", celery_task_id="")
    PipelineRun.objects.filter(pk=queued.pk).update(training_run=slow)
    PipelineStage.objects.filter(pk=ticket.stage.pk).update(started_at=timezone.now() - timedelta(seconds=5))
    assert check_training(run_id=queued.pk, generation=1).action == "stop"
    queued.refresh_from_db()
    slow.refresh_from_db()
    assert queued.status == "failed" and "max_training_hours" in queued.status_reason and slow.status == "failed"


def test_seeding_the_schedules_twice_leaves_one_task_per_schedule(sent, settings):
    assert PeriodicTask.objects.filter(name__in=SEEDED).count() == len(SEEDED)  # migrate seeded them
    PeriodicTask.objects.filter(name__in=SEEDED).delete()
    first = {row["name"]: row["action"] for row in seed_schedules()}
    assert set(first) == SEEDED and set(first.values()) == {"created"}
    crontabs = CrontabSchedule.objects.count()
    out = io.StringIO()
    call_command("seed_schedules", "--json", stdout=out)
    assert {row["action"] for row in json.loads(out.getvalue().splitlines()[-1])} == {"unchanged"}
    for name in SEEDED:
        assert PeriodicTask.objects.filter(name=name).count() == 1
    assert PeriodicTask.objects.filter(name__startswith="investml: ").count() == len(SEEDED)
    assert CrontabSchedule.objects.count() == crontabs
    daily = PeriodicTask.objects.get(name="investml: daily pipeline")
    assert daily.task == "training.pipeline.run_daily" and daily.enabled
    assert (daily.crontab.minute, daily.crontab.hour, daily.crontab.day_of_week, str(daily.crontab.timezone)) == (
        "0", "2", "*", "UTC")
    # the every-minute tasks expire instead of piling up, and run on the maintenance queue's worker
    from investml.celery import app

    every_minute = PeriodicTask.objects.filter(name__in=SEEDED, interval__isnull=False)
    assert every_minute.count() == 4 and {t.expire_seconds for t in every_minute} == {55}
    assert daily.expire_seconds is None
    for task in [*every_minute, PeriodicTask.objects.get(name="investml: data retention")]:
        assert app.amqp.router.route({}, task.task)["queue"].name == "maintenance", task.task
    assert app.amqp.router.route({}, daily.task)["queue"].name == "celery"

    # edited in the admin: kept; --force resets it
    daily.crontab = CrontabSchedule.objects.create(minute="30", hour="4", timezone="UTC")
    daily.save()
    assert {r["name"]: r["action"] for r in seed_schedules()}["investml: daily pipeline"] == "kept"
    assert PeriodicTask.objects.get(name="investml: daily pipeline").crontab.hour == "4"

    # enable_scheduling false switches the automatic ones off, the maintenance ones stay on
    settings.PIPELINE_CONFIG = settings.PIPELINE_CONFIG.with_overrides({"orchestrator": {"enable_scheduling": False}})
    seed_schedules()
    enabled = dict(PeriodicTask.objects.filter(name__in=SEEDED).values_list("name", "enabled"))
    assert not enabled["investml: daily pipeline"] and not enabled["investml: drift check"]
    assert not enabled["investml: performance tracking"]
    assert enabled["investml: evaluate alerts"] and enabled["investml: reap stale pipeline runs"]
    settings.PIPELINE_CONFIG = settings.PIPELINE_CONFIG.with_overrides({"orchestrator": {"enable_scheduling": True}})
    seed_schedules(force=True)
    daily = PeriodicTask.objects.get(name="investml: daily pipeline")
    assert daily.enabled and daily.crontab.hour == "2"
    assert PeriodicTask.objects.filter(name__in=SEEDED).count() == len(SEEDED)


def test_run_pipeline_command_and_retrain_status_show_pipeline_runs(sent):
    out = io.StringIO()
    call_command("run_pipeline", "--sync", "--noop", "0", "--tickers", "aapl,msft", "--json", stdout=out)
    lines = out.getvalue().strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["status"] == "succeeded" and summary["tickers"] == ["AAPL", "MSFT"]
    assert [s["name"] for s in summary["stages"]] == list(STAGES)
    assert any(line.startswith("[1/5] update_market_data") for line in lines)

    out = io.StringIO()
    call_command("run_pipeline", "--sync", "--tickers", "MSFT,AAPL", "--skip-if-succeeded", stdout=out)
    assert f"pipeline run {summary['id']} already succeeded" in out.getvalue()

    out = io.StringIO()
    call_command("run_pipeline", "--noop", "0", stdout=out)  # queued on Celery (recorded here)
    queued = PipelineRun.objects.get(mode="celery")
    assert f"pipeline run {queued.pk} running on Celery" in out.getvalue() and sent == [(queued.pk, 1)]

    out = io.StringIO()
    call_command("retrain", "--status", "--json", stdout=out)
    text = out.getvalue()
    assert f"pipeline run {summary['id']}: succeeded" in text and "check_drift" in text
    assert f"pipeline run {queued.pk}: running" in text
    payload = json.loads(text.strip().splitlines()[-2])
    assert {p["id"] for p in payload["pipeline_runs"]} == {summary["id"], queued.pk}
    assert json.loads(text.strip().splitlines()[-1]) == []  # the training runs' list stays the last line


def test_admin_lists_pipeline_runs_with_their_stages_and_cancels(sent, client, django_user_model):
    admin = django_user_model.objects.create_superuser("orch-admin", "a@example.com", "pw-orch-admin-1")
    client.force_login(admin)
    done = request_pipeline_run(trigger="command", sync=True, options={"noop_seconds": 0}, tickers=["AAPL"])
    waiting = request_pipeline_run(trigger="api", requested_by="alice", reason="by hand")
    page = client.get("/admin/training/pipelinerun/")
    assert page.status_code == 200 and b"alice" in page.content
    detail = client.get(f"/admin/training/pipelinerun/{done.pk}/change/")
    assert detail.status_code == 200 and b"check_drift" in detail.content and b"noop=True" in detail.content
    assert client.get("/admin/training/retraintrigger/").status_code == 200
    response = client.post("/admin/training/pipelinerun/", {"action": "cancel_runs", "_selected_action": [waiting.pk]})
    assert response.status_code == 302
    waiting.refresh_from_db()
    assert waiting.status == "cancelled" and "cancelled by orch-admin" in waiting.status_reason
    response = client.post("/admin/training/pipelinerun/", {"action": "run_again", "_selected_action": [done.pk]})
    assert response.status_code == 302
    again = PipelineRun.objects.filter(trigger="admin").get()
    assert again.tickers == ["AAPL"] and again.requested_by == "orch-admin"
