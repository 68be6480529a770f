"""Small helpers every app uses, each in one place (framework-free: numpy and pandas only).

They live in ``features``, the lowest app (features < registry < training < inference <
monitoring), so any module may import them, the numeric core included (the ``investml`` package
cannot hold them: importing it starts the Celery app and with it Django).

* ``jsonable``: plain JSON values from numpy, pandas, ``Decimal`` and dates; a non-finite number
  (NaN, inf) becomes ``None`` everywhere, since PostgreSQL's ``jsonb`` and strict JSON parsers
  refuse ``NaN``;
* ``chunked``: a list cut into lists of at most ``size`` items.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, TypeVar

import numpy as np
import pandas as pd

T = TypeVar("T")


def jsonable(value: Any, *, default: Callable[[Any], Any] | None = None) -> Any:
    """``value`` as plain JSON types (dict with str keys, list, str, int, float, bool, None).

    numpy scalars and arrays become Python numbers and lists, ``Decimal`` a float, dates and
    timestamps ISO strings, sets and tuples lists; NaN and infinities become ``None``. A value of any
    other type is passed to ``default`` when given (``default=str`` never fails), else returned as
    it is (``json.dumps`` then names it).
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, default=default) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, default=default) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist(), default=default)
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, str):
        return str(value)  # np.str_ too
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating | Decimal):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, pd.Timestamp | np.datetime64):
        stamp = pd.Timestamp(value)
        return None if stamp is pd.NaT else stamp.isoformat()
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, np.generic):  # other numpy scalars (np.complex128, np.void...)
        return jsonable(value.item(), default=default)
    return default(value) if default is not None else value


def chunked(items: Sequence[T], size: int) -> list[list[T]]:
    """``items`` in order, cut into lists of ``size`` (at least 1); the last one may be shorter."""
    size = max(1, int(size))
    return [list(items[i : i + size]) for i in range(0, len(items), size)]

