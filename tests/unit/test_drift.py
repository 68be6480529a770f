"""Drift statistics on synthetic distributions and on real market regimes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.engine import compute_features
from features.feature_sets import FEATURE_GROUPS, MODEL_FEATURE_COLUMNS
from features.profile import profile_build
from monitoring.drift import compare_to_profile, psi

DRIFT_COLUMNS = [c for c in MODEL_FEATURE_COLUMNS if c not in FEATURE_GROUPS["calendar"]]
SAMPLE_PRICES = (Path(__file__).resolve().parents[2] / "sample_data" / "prices"
                 / "sp500_sample_2013-05-21_2018-05-18.csv.gz")


def test_psi_is_zero_for_identical_shares_and_grows_with_shift():
    shares = np.full(10, 0.1)
    assert psi(shares, shares) == 0.0
    shifted = np.r_[np.full(5, 0.05), np.full(5, 0.15)]
    assert 0 < psi(shares, shifted) < psi(shares, np.r_[np.full(9, 0.01), 0.91])


def test_large_samples_do_not_flag_a_negligible_shift_but_flag_a_real_one():
    rng = np.random.default_rng(1)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 1_000_000)})
    profile = profile_build(reference, ["x"])
    json.dumps(profile)  # stored in the registry as JSON
    tiny = compare_to_profile(profile, pd.DataFrame({"x": rng.normal(0.02, 1, 1_000_000)}))
    assert not tiny.features["x"].drifted and not tiny.drift_detected
    assert tiny.features["x"].ks_pvalue < 1.0
    real = compare_to_profile(profile, pd.DataFrame({"x": rng.normal(1.0, 1.5, 1_000_000)}))
    assert real.features["x"].drifted and real.drift_detected and real.drift_share == 1.0


def test_missing_and_sparse_features_are_skipped_with_a_reason():
    rng = np.random.default_rng(2)
    profile = profile_build(pd.DataFrame({"a": rng.normal(size=500), "b": rng.normal(size=500)}), ["a", "b"])
    report = compare_to_profile(profile, pd.DataFrame({"a": rng.normal(size=500), "b": [np.nan] * 500}),
                                columns=["a", "b", "c"])
    assert set(report.features) == {"a"}
    assert "finite" in report.skipped["b"] and "reference" in report.skipped["c"]


@pytest.fixture(scope="module")
def real_features():
    """The bundled sample: 50 large S&P 500 stocks, 2013-05-21..2018-05-18 (sample_data/PROVENANCE.md)."""
    bars = pd.read_csv(SAMPLE_PRICES)
    features = compute_features(bars, dtype=np.float32)
    features["date"] = pd.to_datetime(features["date"])
    return features


def _window(features: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    return features[(features["date"] >= start) & (features["date"] <= end)]


def test_february_2018_drifts_from_a_calm_reference_and_calm_windows_do_not(real_features):
    # reference: mid-2016 to the end of 2017, a calm, steadily rising market; the volatility shock of
    # February 2018 and the weeks after it must drift
    profile = profile_build(_window(real_features, "2016-07-01", "2017-12-31"), DRIFT_COLUMNS)
    crisis = compare_to_profile(profile, _window(real_features, "2018-02-01", "2018-04-30"), share_threshold=0.3)
    assert crisis.drift_detected, crisis.to_dict()
    assert {"vol_20", "ret_20"} <= set(crisis.drifted_features)
    # two calm seasons inside the reference period and a calm summer two years before it
    for start, end in (("2017-03-01", "2017-05-31"), ("2017-09-01", "2017-11-30"), ("2014-06-01", "2014-08-31")):
        calm = compare_to_profile(profile, _window(real_features, start, end), share_threshold=0.3)
        assert not calm.drift_detected, (start, calm.drifted_features)
        assert calm.drift_share < 0.15
