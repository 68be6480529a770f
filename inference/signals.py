"""What the inference app tells the apps above it (monitoring connects to these; inference imports
none of them).

* ``request_served``: a request answered outside Django's middleware (the ``/predict`` fast lane),
  with ``endpoint``, ``status_code`` and ``duration_ms``; requests through Django are counted by
  monitoring's middleware itself;
* ``model_load_failed``: a model version could not be loaded (``model``, ``error``);
* ``model_load_recovered``: a model that failed to load loaded again (``model``).

Sent with ``send``: a receiver's exception reaches the sender, which decides (serving never fails
because of monitoring: the model manager logs it).
"""

from django.dispatch import Signal

request_served = Signal(use_caching=True)  # on the hot path: receivers looked up once per sender
model_load_failed = Signal()
model_load_recovered = Signal()
