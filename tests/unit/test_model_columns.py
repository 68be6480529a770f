"""The learners' default inputs are scale-free: the same company at 7x the share price looks identical."""

import numpy as np

from features.engine import compute_features
from features.feature_sets import FEATURE_COLUMNS, MODEL_FEATURE_COLUMNS
from features.synthetic import generate_market


def test_model_columns_are_a_scale_free_subset():
    assert set(MODEL_FEATURE_COLUMNS) < set(FEATURE_COLUMNS)
    assert not [c for c in MODEL_FEATURE_COLUMNS if c.startswith(("sma_", "ema_", "macd", "atr_", "bb_upper"))]
    bars = generate_market(6, 2, seed=3)
    scaled = bars.copy()
    for column in ("open", "high", "low", "close", "adj_close"):
        scaled[column] = scaled[column] * 7.0
    base = compute_features(bars)[MODEL_FEATURE_COLUMNS].to_numpy(dtype=float)
    times7 = compute_features(scaled)[MODEL_FEATURE_COLUMNS].to_numpy(dtype=float)
    np.testing.assert_allclose(times7, base, rtol=1e-7, atol=1e-9, equal_nan=True)
    # and the level columns really do move with the price, so the test could fail
    level = compute_features(bars)["sma_20"].to_numpy(dtype=float)
    assert not np.allclose(compute_features(scaled)["sma_20"].to_numpy(dtype=float), level, equal_nan=True)
