import os
import uuid
from time import monotonic

from celery import Celery
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "investml.settings")


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
