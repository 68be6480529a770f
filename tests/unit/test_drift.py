"""Drift statistics on synthetic distributions and on real market regimes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features.engine import FEATURE_GROUPS, MODEL_FEATURE_COLUMNS, compute_features
from monitoring.drift import build_profile, compare_to_profile, psi

DRIFT_COLUMNS = [c for c in MODEL_FEATURE_COLUMNS if c not in FEATURE_GROUPS["calendar"]]


def test_psi_is_zero_for_identical_shares_and_grows_with_shift():
    shares = np.full(10, 0.1)
    assert psi(shares, shares) == 0.0
    shifted = np.r_[np.full(5, 0.05), np.full(5, 0.15)]
    assert 0 < psi(shares, shifted) < psi(shares, np.r_[np.full(9, 0.01), 0.91])


def test_large_samples_do_not_flag_a_negligible_shift_but_flag_a_real_one():
    rng = np.random.default_rng(1)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 1_000_000)})
    profile = build_profile(reference, ["x"])
    json.dumps(profile)  # stored in the registry as JSON
    tiny = compare_to_profile(profile, pd.DataFrame({"x": rng.normal(0.02, 1, 1_000_000)}))
    assert not tiny.features["x"].drifted and not tiny.drift_detected
    assert tiny.features["x"].ks_pvalue < 1.0
    real = compare_to_profile(profile, pd.DataFrame({"x": rng.normal(1.0, 1.5, 1_000_000)}))
    assert real.features["x"].drifted and real.drift_detected and real.drift_share == 1.0


def test_missing_and_sparse_features_are_skipped_with_a_reason():
    rng = np.random.default_rng(2)
    profile = build_profile(pd.DataFrame({"a": rng.normal(size=500), "b": rng.normal(size=500)}), ["a", "b"])
    report = compare_to_profile(profile, pd.DataFrame({"a": rng.normal(size=500), "b": [np.nan] * 500}),
                                columns=["a", "b", "c"])
    assert set(report.features) == {"a"}
    assert "finite" in report.skipped["b"] and "reference" in report.skipped["c"]


@pytest.fixture(scope="module")
def real_features(shared_data):
    bars = pd.read_csv(shared_data / "prices/sp500_yahoo_2000-01-03_2013-05-20.csv.gz")
    bars = bars[(bars["date"] >= "2003-01-01") & (bars["date"] <= "2009-06-30")]
    features = compute_features(bars, dtype=np.float32)
    features["date"] = pd.to_datetime(features["date"])
    return features


def _window(features: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    return features[(features["date"] >= start) & (features["date"] <= end)]


def test_autumn_2008_drifts_from_a_calm_reference_and_calm_windows_do_not(real_features):
    profile = build_profile(_window(real_features, "2004-01-01", "2006-12-31"), DRIFT_COLUMNS)
    crisis = compare_to_profile(profile, _window(real_features, "2008-09-01", "2008-11-30"), share_threshold=0.3)
    assert crisis.drift_detected, crisis.to_dict()
    assert {"vol_20", "ret_20"} <= set(crisis.drifted_features)
    for start, end in (("2005-03-01", "2005-05-31"), ("2006-09-01", "2006-11-30"), ("2004-06-01", "2004-08-31")):
        calm = compare_to_profile(profile, _window(real_features, start, end), share_threshold=0.3)
        assert not calm.drift_detected, (start, calm.drifted_features)
        assert calm.drift_share < 0.15
