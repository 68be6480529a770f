"""What the registry needs from training without importing it: how a stored artifact becomes a
learner again, and where the promotion gate reads the rows it replays the active version on.

Both belong to training, above the registry in the apps' dependency direction (features <
registry < training < inference < monitoring): ``TrainingConfig.ready()`` installs them
(``install``). Until then ``load_learner`` and ``load_training_frame`` raise ``LoadersNotInstalled``.
The registry knows a learner only as ``StoredLearner`` below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class LoadersNotInstalled(RuntimeError):
    pass


class StoredLearner(Protocol):
    """What the registry uses of a learner (``training.learners.base.Learner`` has all of it)."""

    name: str
    model_type: str

    def to_bytes(self) -> bytes: ...

    def predict(self, frame: Any) -> Any: ...


@dataclass(frozen=True)
class Loaders:
    load_learner: Callable[[bytes], StoredLearner]  # artifact bytes -> learner
    artifact_error: type[Exception]  # what ``load_learner`` raises for bytes that are no valid artifact
    load_training_frame: Callable[..., Any]  # ``training.selectors.load_training_frame``


_installed: Loaders | None = None


def install(loaders: Loaders) -> None:
    global _installed
    _installed = loaders


def installed() -> Loaders:
    if _installed is None:
        raise LoadersNotInstalled("no learner loaders are installed: the 'training' app must be in INSTALLED_APPS")
    return _installed
