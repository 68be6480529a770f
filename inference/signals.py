"""What the inference app tells the apps above it (monitoring connects to these; inference imports
none of them).

* ``model_load_failed``: a model version could not be loaded (``model``, ``error``);
* ``model_load_recovered``: a model that failed to load loaded again (``model``).

Sent with ``send``: a receiver's exception reaches the sender, which decides (serving never fails
because of monitoring: the model manager logs it).
"""

from django.dispatch import Signal

model_load_failed = Signal()
model_load_recovered = Signal()
