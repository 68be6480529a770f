"""The numpy tree table gives XGBoost's own margins, and declines what it does not support."""

import numpy as np
import pytest
import xgboost as xgb

from training.learners.tree_table import TreeTable


def _booster(*, objective: str = "binary:logistic", depth: int = 4, rounds: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2000, 7)).astype(np.float32)
    x[rng.random(x.shape) < 0.15] = np.nan  # so default directions are learned both ways
    y = ((np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 3]) ** 2 + rng.normal(0, 0.5, len(x))) > 0.4)
    params = {"objective": objective, "max_depth": depth, "eta": 0.3, "tree_method": "hist", "seed": seed,
              "verbosity": 0, "nthread": 1}
    return xgb.train(params, xgb.DMatrix(x, label=y.astype(np.float32), missing=np.nan), num_boost_round=rounds), x


@pytest.mark.parametrize("depth", [1, 3, 6])
def test_margins_equal_the_boosters_on_data_probes_and_edge_values(depth):
    booster, x = _booster(depth=depth)
    table = TreeTable.from_booster_json(booster.save_raw("json"), n_features=x.shape[1])
    assert table is not None and table.depth <= depth
    probe = table.probe(rows=400, seed=3)
    odd = np.array([[np.nan] * 7, [np.inf] * 7, [-np.inf] * 7, [0.0] * 7], dtype=np.float32)
    singles = [rows[i:i + 1] for rows in (probe[:40], odd) for i in range(len(rows))]  # the one-row path
    for rows in (x[:500], probe, odd, x[:1], *singles):
        expected = booster.inplace_predict(rows, predict_type="margin", missing=np.nan)
        np.testing.assert_allclose(table.margin(rows), expected, rtol=0, atol=1e-5)
    assert table.verified(lambda rows: booster.inplace_predict(rows, predict_type="margin", missing=np.nan))


def test_probe_rows_sit_on_split_thresholds():
    booster, x = _booster()
    table = TreeTable.from_booster_json(booster.save_raw("json"), n_features=x.shape[1])
    inner = table.left != np.arange(len(table.left))
    cuts = set(table.threshold[inner & (table.feature == 0)].tolist())
    column = table.probe(rows=300)[:, 0]
    assert any(v in cuts for v in column.tolist())  # exactly at a threshold: the "<" rule is tested


def test_a_wrong_table_fails_verification():
    booster, x = _booster()
    table = TreeTable.from_booster_json(booster.save_raw("json"), n_features=x.shape[1])
    flipped = TreeTable(**{**table.__dict__, "default_left": ~table.default_left})
    predict = lambda rows: booster.inplace_predict(rows, predict_type="margin", missing=np.nan)  # noqa: E731
    assert table.verified(predict) and not flipped.verified(predict)


def test_unsupported_models_are_declined():
    booster, x = _booster(objective="reg:squarederror")
    assert TreeTable.from_booster_json(booster.save_raw("json"), n_features=x.shape[1]) is None
    booster, x = _booster()
    assert TreeTable.from_booster_json(booster.save_raw("json"), n_features=3) is None  # uses feature 3+
