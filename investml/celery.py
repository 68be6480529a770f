import logging
import os
import uuid
from time import monotonic
from typing import Any

from celery import Celery, bootsteps
from celery.signals import celeryd_init
from celery.worker import state as worker_state
from kombu.transport import filesystem
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps
from redis import exceptions as redis_errors

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "investml.settings")
logger = logging.getLogger(__name__)


def _atomic_filesystem_put(self, queue, payload, **kwargs):
    """kombu's filesystem transport creates the message file, then writes it: a consumer can read
    it empty in between and the worker dies on a JSONDecodeError. Write a temporary name that
    consumers skip (it does not end in ``.msg``), then rename atomically."""
    name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
    final = os.path.join(self.data_folder_out, name)
    with open(final + ".tmp", "wb") as handle:
        handle.write(str_to_bytes(dumps(payload)))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(final + ".tmp", final)


filesystem.Channel._put = _atomic_filesystem_put

app = Celery("investml")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# A chain's next step is published by the worker that ran the step before it. Celery's default policy
# gives up after 0.6 s, and a broker restart then failed the pipeline run through the chain's error
# callback: workers retry for about five minutes (the web process keeps the short default).
WORKER_PUBLISH_RETRY_POLICY = {"max_retries": 60, "interval_start": 0, "interval_step": 1, "interval_max": 5}


@celeryd_init.connect
def _patient_publishing_in_workers(conf: Any = None, **kwargs: Any) -> None:
    conf.task_publish_retry_policy = dict(WORKER_PUBLISH_RETRY_POLICY)


_redis_connparams = kombu_redis.Channel._connparams


def _connparams_of_an_open_connection(self: Any, *args: Any, **kwargs: Any) -> Any:
    # After the broker connection is lost, kombu's redis channel may be closed (restoring its unacked
    # messages) once its connection object is already gone; kombu then fails with AttributeError
    # ('NoneType' object has no attribute 'hostname'), which the worker's connection-error handler does
    # not expect and treats as unrecoverable: the worker exits. A connection error is what it expects
    # there, and it reconnects (the held messages are put back by RequeueHeldMessages).
    if getattr(self.connection, "client", None) is None:
        raise redis_errors.ConnectionError("the broker connection is already closed")
    return _redis_connparams(self, *args, **kwargs)


kombu_redis.Channel._connparams = _connparams_of_an_open_connection


class RequeueHeldMessages(bootsteps.StartStopStep):
    """When the broker connection is lost, Celery drops the messages the worker held but had not
    started (countdown/ETA tasks, prefetched ones): "they can't be acked anyway". On Redis they stay
    in the unacked hash until the visibility timeout (26 h here), so a pipeline's training poll or a
    stage's retry would wait for the reaper's heartbeat timeout, which restarts the training. Once
    reconnected, this step puts them back on their queues (a message acked or restored meanwhile is
    left alone). The tasks running at the loss keep running and are acked as usual. One handed to a
    pool process but not yet accepted by it can still run there (Celery discards only its result):
    then it runs twice, as a broker may deliver any task twice; the pipeline's stages are
    idempotent for that (``training.orchestrator.stages.begin_stage``)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.held: set[str] = set()
        close = parent.on_close

        def remember_then_close() -> None:  # Consumer.start calls it before dropping them
            running = set(worker_state.active_requests)
            for request in (*worker_state.scheduled_requests, *worker_state.reserved_requests):
                tag = getattr(request.message, "delivery_tag", None)
                if request not in running and tag:
                    self.held.add(str(tag))
            close()

        parent.on_close = remember_then_close

    def start(self, parent: Any) -> None:
        if not self.held or parent.connection is None:
            return
        restore = getattr(getattr(parent.connection.default_channel, "qos", None), "restore_by_tag", None)
        if restore is None:  # brokers with real acknowledgements redeliver on their own
            self.held.clear()
            return
        count = len(self.held)
        for tag in sorted(self.held):
            restore(tag)  # a connection error here: the next reconnect tries the rest
            self.held.discard(tag)
        logger.warning("broker connection restored: %d message(s) this worker held put back on their queues", count)


app.steps["consumer"].add(RequeueHeldMessages)
