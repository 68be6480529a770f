"""Data drift statistics. Framework-free: arrays in, dataclasses out.

A model version keeps a *profile* of its training features (``features.profile``: per feature, decile
bin edges with the share of values in each bin, and its percentiles). Recent features are compared
with it per feature by the Population Stability Index over those bins and by the Kolmogorov-Smirnov
statistic (scipy) between a bounded sample of the recent values and the reference percentiles. Both
are effect sizes on bounded data, so a large sample does not make every tiny difference
"significant", and the check costs the same on 6,000 tickers as on 50.

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

from features.profile import MIN_VALUES, bin_shares, finite_values, profile_reference_sample

DEFAULT_SAMPLE = 4_000
PSI_EPSILON = 1e-4  # keeps log() finite for empty bins
# Conventional PSI reading: < 0.1 stable, 0.1-0.25 moderate, > 0.25 significant.
DEFAULT_PSI_THRESHOLD = 0.25
DEFAULT_KS_THRESHOLD = 0.15


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


def _sample(values: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if len(values) <= size:
        return np.sort(values)
    return np.sort(rng.choice(values, size=size, replace=False))


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
        current = finite_values(frame[name])
        if len(current) < MIN_VALUES:
            skipped[name] = f"only {len(current)} finite current values"
            continue
        ref = reference[name]
        value_psi = psi(np.asarray(ref["shares"]), bin_shares(current, np.asarray(ref["edges"])))
        ks = stats.ks_2samp(profile_reference_sample(ref, size=min(sample_size, int(ref["n"]))),
                            _sample(current, sample_size, rng))
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
