"""Numbers from the environment for the training side (framework-free)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

Number = TypeVar("Number", int, float)


def env_number(name: str, default: Number, *, cast: Callable[[str], Number], error: type[Exception]) -> Number:
    """``name`` from the environment as ``cast`` (int or float), ``default`` when unset or blank; a
    value that does not parse raises ``error`` naming the variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return cast(default)
    try:
        return cast(raw)
    except ValueError:
        kind = "an integer" if cast is int else "a number"
        raise error(f"{name} must be {kind}, got {raw!r}") from None
