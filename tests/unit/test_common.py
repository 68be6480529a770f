"""The shared helpers (features.common): one JSON conversion, one list chunking."""

from __future__ import annotations

import json
from datetime import date, datetime, time
from decimal import Decimal

import numpy as np
import pandas as pd

from features.common import chunked, jsonable


def test_jsonable_gives_plain_json_and_none_for_every_non_finite_number():
    value = {
        1: np.int64(3), "f32": np.float32(1.5), "nan": float("nan"), "np_inf": np.float64(np.inf),
        "dec": Decimal("1.25"), "dec_nan": Decimal("NaN"), "flag": np.bool_(True), "arr": np.array([[1.0, np.nan]]),
        "set": {4}, "tuple": (np.int32(1), "a"), "day": date(2024, 1, 2), "at": datetime(2024, 1, 2, 3, 4),
        "clock": time(9, 30), "stamp": pd.Timestamp("2024-01-02"), "nat": pd.NaT, "np_nat": np.datetime64("NaT"),
        "np_str": np.str_("x"), "none": None,
    }
    out = jsonable(value)
    assert out == {
        "1": 3, "f32": 1.5, "nan": None, "np_inf": None, "dec": 1.25, "dec_nan": None, "flag": True,
        "arr": [[1.0, None]], "set": [4], "tuple": [1, "a"], "day": "2024-01-02", "at": "2024-01-02T03:04:00",
        "clock": "09:30:00", "stamp": "2024-01-02T00:00:00", "nat": None, "np_nat": None, "np_str": "x", "none": None,
    }
    assert type(out["flag"]) is bool and type(out["1"]) is int
    json.dumps(out, allow_nan=False)  # strict JSON (PostgreSQL's jsonb refuses NaN)


def test_jsonable_leaves_unknown_types_to_default():
    class Thing:
        def __str__(self) -> str:
            return "thing"

    thing = Thing()
    assert jsonable({"x": thing})["x"] is thing  # json.dumps then names it
    assert jsonable({"x": thing}, default=str) == {"x": "thing"}


def test_chunked_keeps_order_and_size():
    assert chunked(["a", "b", "c", "d", "e"], 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert chunked([], 3) == []
    assert chunked((1, 2), 0) == [[1], [2]]  # a size below 1 is 1

