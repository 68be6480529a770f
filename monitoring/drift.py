"""Data drift statistics. Framework-free: arrays in, dataclasses out.

A model version keeps a *profile* of its training features: per feature, decile bin edges with the
share of values in each bin, and a bounded random sample. Recent features are compared with it per
feature by the Population Stability Index over those bins and by the Kolmogorov-Smirnov statistic
(scipy) on samples of bounded size. Both are effect sizes on bounded data, so a large sample does
not make every tiny difference "significant", and the check costs the same on 6,000 tickers as on 50.

A feature drifts when both its PSI and its KS statistic pass their thresholds (PSI alone over-reacts
to a shift concentrated in one bin, KS alone to a small, broad shift). The report's drift share is
the fraction of compared features that drift; drift is detected when it exceeds the threshold
(``DATA_DRIFT_THRESHOLD``, 0.3 by default).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

PROFILE_VERSION = 1
DEFAULT_BINS = 10
DEFAULT_SAMPLE = 4_000
PSI_EPSILON = 1e-4  # keeps log() finite for empty bins
# Conventional PSI reading: < 0.1 stable, 0.1-0.25 moderate, > 0.25 significant.
DEFAULT_PSI_THRESHOLD = 0.25
DEFAULT_KS_THRESHOLD = 0.15
MIN_VALUES = 50  # fewer finite values than this on either side: not compared


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    psi: float
    ks_statistic: float
    ks_pvalue: float
    drifted: bool
    reference_n: int
    current_n: int
    reference_mean: float
    current_mean: float


@dataclass
class DriftReport:
    features: dict[str, FeatureDrift]
    drift_share: float
    drift_detected: bool
    threshold: float
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def drifted_features(self) -> list[str]:
        return [name for name, f in self.features.items() if f.drifted]

    def to_dict(self) -> dict[str, Any]:
        return {
            "drift_detected": self.drift_detected,
            "drift_share": self.drift_share,
            "threshold": self.threshold,
            "features": {name: asdict(f) for name, f in self.features.items()},
            "skipped": dict(self.skipped),
        }


def _finite(values: Any) -> np.ndarray:
    array = np.asarray(values, dtype="float64").ravel()
    return array[np.isfinite(array)]


def _sample(values: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if len(values) <= size:
        return np.sort(values)
    return np.sort(rng.choice(values, size=size, replace=False))


def _bin_shares(values: np.ndarray, inner_edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(inner_edges, values, side="right"), minlength=len(inner_edges) + 1)
    return counts / max(counts.sum(), 1)


def build_profile(frame: pd.DataFrame, columns: list[str], *, bins: int = DEFAULT_BINS,
                  sample_size: int = DEFAULT_SAMPLE, seed: int = 0) -> dict[str, Any]:
    """JSON-serializable reference profile of ``columns`` of ``frame``."""
    rng = np.random.default_rng(seed)
    features: dict[str, Any] = {}
    for name in columns:
        values = _finite(frame[name]) if name in frame else np.empty(0)
        if len(values) < MIN_VALUES:
            continue
        inner = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
        features[name] = {
            "edges": inner.tolist(),
            "shares": _bin_shares(values, inner).tolist(),
            "sample": _sample(values, sample_size, rng).tolist(),
            "n": int(len(values)),
            "mean": float(values.mean()),
        }
    return {"version": PROFILE_VERSION, "bins": bins, "features": features}


def psi(reference_shares: np.ndarray, current_shares: np.ndarray) -> float:
    ref = np.clip(np.asarray(reference_shares, dtype="float64"), PSI_EPSILON, None)
    cur = np.clip(np.asarray(current_shares, dtype="float64"), PSI_EPSILON, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def compare_to_profile(profile: dict[str, Any], frame: pd.DataFrame, *, columns: list[str] | None = None,
                       psi_threshold: float = DEFAULT_PSI_THRESHOLD, ks_threshold: float = DEFAULT_KS_THRESHOLD,
                       share_threshold: float = 0.3, sample_size: int = DEFAULT_SAMPLE,
                       seed: int = 0) -> DriftReport:
    rng = np.random.default_rng(seed)
    reference = profile.get("features", {})
    names = columns if columns is not None else list(reference)
    results: dict[str, FeatureDrift] = {}
    skipped: dict[str, str] = {}
    for name in names:
        if name not in reference:
            skipped[name] = "not in the reference profile"
            continue
        if name not in frame:
            skipped[name] = "not in the current features"
            continue
        current = _finite(frame[name])
        if len(current) < MIN_VALUES:
            skipped[name] = f"only {len(current)} finite current values"
            continue
        ref = reference[name]
        value_psi = psi(np.asarray(ref["shares"]), _bin_shares(current, np.asarray(ref["edges"])))
        ks = stats.ks_2samp(np.asarray(ref["sample"]), _sample(current, sample_size, rng))
        results[name] = FeatureDrift(
            name=name,
            psi=value_psi,
            ks_statistic=float(ks.statistic),
            ks_pvalue=float(ks.pvalue),
            drifted=bool(value_psi >= psi_threshold and ks.statistic >= ks_threshold),
            reference_n=int(ref["n"]),
            current_n=int(len(current)),
            reference_mean=float(ref["mean"]),
            current_mean=float(current.mean()),
        )
    share = sum(f.drifted for f in results.values()) / len(results) if results else 0.0
    return DriftReport(features=results, drift_share=share, drift_detected=share > share_threshold,
                       threshold=share_threshold, skipped=skipped)


def _histogram_sample(edges: np.ndarray, counts: np.ndarray, size: int) -> np.ndarray:
    """Evenly spaced quantiles of the piecewise-uniform distribution a histogram describes."""
    cdf = np.concatenate([[0.0], np.cumsum(counts) / counts.sum()])
    probs = (np.arange(size) + 0.5) / size
    return np.interp(probs, cdf, edges)


def normalize_profile(profile: dict[str, Any] | None, *, sample_size: int = 1_000) -> dict[str, Any]:
    """A reference profile in ``build_profile`` format, whatever format it was stored in.

    Also accepts the histogram format ``{"bins", "rows", "features": {name: {"edges": [min, ...,
    max], "counts": [...], "missing": n}}}``: inner edges and shares come from the histogram, the
    KS sample is drawn evenly from its piecewise-uniform distribution (exact at the bin edges, so
    the KS statistic is approximate within a bin). Features with fewer than ``MIN_VALUES`` values
    or fewer than two edges are left out, as ``build_profile`` would.
    """
    profile = dict(profile or {})
    features = profile.get("features") or {}
    if not features or all("shares" in f and "sample" in f for f in features.values()):
        return {"version": profile.get("version", PROFILE_VERSION), "bins": profile.get("bins", DEFAULT_BINS),
                "features": dict(features)}
    out: dict[str, Any] = {}
    for name, entry in features.items():
        if "shares" in entry and "sample" in entry:
            out[name] = entry
            continue
        edges = np.asarray(entry.get("edges") or [], dtype="float64")
        counts = np.asarray(entry.get("counts") or [], dtype="float64")
        n = int(counts.sum()) if len(counts) else 0
        if len(edges) < 2 or len(counts) != len(edges) - 1 or n < MIN_VALUES:
            continue
        centers = (edges[:-1] + edges[1:]) / 2.0
        out[name] = {
            "edges": edges[1:-1].tolist(),
            "shares": (counts / n).tolist(),
            "sample": _histogram_sample(edges, counts, min(sample_size, n)).tolist(),
            "n": n,
            "mean": float(np.sum(centers * counts) / n),
        }
    return {"version": PROFILE_VERSION, "bins": profile.get("bins", DEFAULT_BINS), "features": out,
            "converted_from": "histogram"}
