"""A feature distribution profile: the one format a model version keeps of its training features.

Framework-free. Training writes it (``profile_build``) into ``ModelVersion.drift_reference``;
monitoring reads it to measure drift (``monitoring.drift``). Per feature:

* ``edges``/``shares``: inner decile edges of the finite values and the share of values in each of
  the resulting bins (ties merge edges, so a discrete feature gets fewer, exact bins) - for PSI;
* ``quantiles``: the 0th..100th percentiles - the reference CDF for the KS statistic, compact (101
  numbers however many rows trained the model) and exact to within a percentile;
* ``n`` (finite values), ``missing`` (non-finite ones) and ``mean``.

A feature with fewer than ``MIN_VALUES`` finite values is left out: no stable reference exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

PROFILE_VERSION = 2
DEFAULT_BINS = 10
QUANTILE_PROBS = np.linspace(0.0, 1.0, 101)
MIN_VALUES = 50  # fewer finite values than this: no reference, and not compared


def finite_values(values: Any) -> np.ndarray:
    array = np.asarray(values, dtype="float64").ravel()
    return array[np.isfinite(array)]


def bin_shares(values: np.ndarray, inner_edges: np.ndarray) -> np.ndarray:
    """Share of ``values`` in each bin that ``inner_edges`` cut (len(inner_edges) + 1 bins)."""
    counts = np.bincount(np.searchsorted(inner_edges, values, side="right"), minlength=len(inner_edges) + 1)
    return counts / max(counts.sum(), 1)


def profile_build(frame: pd.DataFrame, columns: Sequence[str], *, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """JSON-serializable profile of ``columns`` of ``frame`` (see the module docstring)."""
    features: dict[str, Any] = {}
    for name in columns:
        raw = frame[name].to_numpy(dtype="float64") if name in frame else np.empty(0)
        values = finite_values(raw)
        if len(values) < MIN_VALUES:
            continue
        inner = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
        features[name] = {
            "edges": inner.tolist(),
            "shares": bin_shares(values, inner).tolist(),
            "quantiles": np.quantile(values, QUANTILE_PROBS).tolist(),
            "n": int(len(values)),
            "missing": int(len(raw) - len(values)),
            "mean": float(values.mean()),
        }
    return {"version": PROFILE_VERSION, "bins": bins, "rows": int(len(frame)), "features": features}


def profile_reference_sample(entry: dict[str, Any], *, size: int) -> np.ndarray:
    """``size`` evenly spaced draws from the reference distribution the percentiles describe.

    Linear between percentiles, so point masses (repeated percentiles) stay point masses; the KS
    statistic against it is exact at the percentiles and within one percentile between them.
    """
    quantiles = np.asarray(entry["quantiles"], dtype="float64")
    probs = (np.arange(size) + 0.5) / size
    return np.interp(probs, QUANTILE_PROBS, quantiles)
