"""Walk-forward splits (gap, purging, no overlap) and the evaluation loop, with a spy learner."""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from registry.metrics import METRIC_KEYS
from training.evaluation import (
    BASELINES,
    EvaluationResult,
    baseline_predictions,
    evaluate_walk_forward,
    walk_forward_splits,
)
from training.learners.base import FitReport, Predictions


def make_frame(n_tickers: int = 20, n_days: int = 300, seed: int = 0, horizons=(1, 5)) -> pd.DataFrame:
    """Random walks (iid Student-t returns) with past-only features and forward labels."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2016-01-01", periods=n_days)
    rets = rng.standard_t(4, size=(n_days, n_tickers)) * 0.01
    close = 50.0 * np.cumprod(1.0 + rets, axis=0)
    parts = []
    for j in range(n_tickers):
        c = pd.Series(close[:, j])
        part = pd.DataFrame(
            {
                "ticker": f"T{j:02d}",
                "date": dates,
                "adj_close": c.to_numpy(),
                "ret_1": c.pct_change().to_numpy(),
                "ret_5": c.pct_change(5).to_numpy(),
            }
        )
        for h in horizons:
            fwd = c.shift(-h) / c - 1.0
            part[f"fwd_ret_{h}"] = fwd.to_numpy()
            part[f"fwd_dir_{h}"] = np.where(fwd.isna(), np.nan, (fwd > 0).astype(float))
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------------------------------
# splits


@pytest.mark.parametrize("expanding", [True, False])
def test_splits_keep_gap_and_never_overlap(expanding):
    dates = pd.bdate_range("2020-01-01", periods=200)
    horizon = 5
    splits = walk_forward_splits(
        dates,
        n_folds=3,
        test_days=20,
        gap_days=horizon,
        min_train_days=60,
        horizon=horizon,
        expanding=expanding,
    )
    assert len(splits) == 3
    index = {d: i for i, d in enumerate(dates.to_numpy())}
    for k, split in enumerate(splits):
        train = [index[d] for d in split.train_dates]
        test = [index[d] for d in split.test_dates]
        assert not set(split.train_dates) & set(split.test_dates)
        assert train == list(range(train[0], train[-1] + 1)) and len(test) == 20
        # gap >= horizon, and the purge: the last training label (train end + h) ends before the test
        assert test[0] - train[-1] - 1 == horizon
        assert train[-1] + horizon < test[0]
        if expanding:
            assert train[0] == 0
        else:
            assert len(train) == 60
        if k:
            assert test[0] == index[splits[k - 1].test_dates[-1]] + 1  # consecutive test windows
    assert pd.Timestamp(splits[-1].test_end) == dates[-1]
    assert splits[0].describe()["n_test_dates"] == 20


def test_splits_reject_gap_shorter_than_horizon_and_too_few_dates():
    dates = pd.bdate_range("2020-01-01", periods=100)
    with pytest.raises(ValueError, match="shorter than the label horizon"):
        walk_forward_splits(dates, n_folds=2, test_days=10, gap_days=2, min_train_days=30, horizon=5)
    with pytest.raises(ValueError, match="too few"):
        walk_forward_splits(dates, n_folds=5, test_days=20, gap_days=5, min_train_days=30, horizon=5)


def test_splits_use_unique_sorted_dates():
    dates = pd.bdate_range("2020-01-01", periods=80)
    shuffled = np.random.default_rng(0).permutation(np.repeat(dates.to_numpy(), 3))
    a = walk_forward_splits(shuffled, n_folds=2, test_days=10, gap_days=1, min_train_days=20)
    b = walk_forward_splits(dates, n_folds=2, test_days=10, gap_days=1, min_train_days=20)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.train_dates, y.train_dates)
        np.testing.assert_array_equal(x.test_dates, y.test_dates)


# --------------------------------------------------------------------------------------------------
# evaluation loop


class SpyLearner:
    """Records what it is given; predicts the 5-day past return (a legitimate past-only signal)."""

    name: ClassVar[str] = "spy"
    model_type: ClassVar[str] = "test"
    context_days = 3
    calls: ClassVar[list[dict]] = []

    def fit(self, frame, *, feature_columns, horizon):
        SpyLearner.calls.append(
            {
                "fit_dates": pd.to_datetime(frame["date"]).unique(),
                "horizon": horizon,
                "features": list(feature_columns),
            }
        )
        return FitReport(n_samples=len(frame), seconds=0.0, extra={"seen": len(frame)})

    def predict(self, frame):
        SpyLearner.calls[-1]["predict_dates"] = pd.to_datetime(frame["date"]).unique()
        er = frame["ret_5"].to_numpy(dtype=float)
        return Predictions.from_prob(er, np.where(er > 0, 0.7, 0.3))

    def to_bytes(self):
        return b""

    @classmethod
    def from_bytes(cls, data):
        return cls()


def test_evaluate_walk_forward_sees_only_purged_training_rows():
    frame = make_frame()
    SpyLearner.calls = []
    horizon = 5
    result = evaluate_walk_forward(
        SpyLearner,
        frame,
        feature_columns=["ret_1", "ret_5"],
        horizon=horizon,
        n_folds=3,
        test_days=40,
        min_train_days=100,
    )
    assert isinstance(result, EvaluationResult) and result.learner == "spy"
    dates = np.sort(frame["date"].unique())
    pos = {d: i for i, d in enumerate(dates)}
    assert len(SpyLearner.calls) == 3
    for call, fold in zip(SpyLearner.calls, result.folds, strict=True):
        test_start = pos[np.datetime64(pd.Timestamp(fold.split["test_start"]))]
        fit_pos = [pos[d] for d in call["fit_dates"]]
        # every training label (date + h) ends before the first test date
        assert max(fit_pos) + horizon < test_start
        assert call["horizon"] == horizon and call["features"] == ["ret_1", "ret_5"]
        # predict got the test dates plus context_days earlier dates for sequence history
        predict_pos = sorted(pos[d] for d in call["predict_dates"])
        assert predict_pos[0] == test_start - SpyLearner.context_days
        assert fold.fit_extra == {"seen": fold.n_train_rows}
    # OOF holds only test rows, each once, with the documented columns
    oof = result.oof
    assert list(oof.columns[:5]) == ["ticker", "date", "expected_return", "prob_up", "confidence"]
    assert not oof.duplicated(["ticker", "date"]).any()
    assert len(oof) == 3 * 40 * frame["ticker"].nunique()
    assert oof["date"].min() == pd.Timestamp(result.folds[0].split["test_start"])
    # the spy's signal is exactly the reversal baseline up to sign and scale
    assert result.metrics["rank_ic"] == pytest.approx(-result.baselines["reversal_5"]["rank_ic"])


def test_evaluation_result_metrics_baselines_and_json():
    frame = make_frame(n_tickers=12, n_days=200)
    SpyLearner.calls = []
    result = evaluate_walk_forward(
        SpyLearner, frame, feature_columns=["ret_1"], horizon=1, n_folds=2, test_days=30, min_train_days=60
    )
    assert tuple(result.metrics) == METRIC_KEYS
    assert set(result.baselines) == set(BASELINES)
    for metrics in [*result.baselines.values(), *(f.metrics for f in result.folds)]:
        assert tuple(metrics) == METRIC_KEYS
    zero = result.baselines["zero"]
    assert zero["ic"] == 0.0 and zero["hit_rate"] == 0.5 and zero["annual_return"] == 0.0
    summary = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert summary["horizon"] == 1 and len(summary["folds"]) == 2


def test_gap_shorter_than_horizon_is_refused():
    frame = make_frame(n_tickers=6, n_days=150)
    with pytest.raises(ValueError, match="horizon"):
        evaluate_walk_forward(
            SpyLearner,
            frame,
            feature_columns=["ret_1"],
            horizon=5,
            gap_days=3,
            n_folds=2,
            test_days=20,
            min_train_days=50,
        )


def test_baselines_use_only_past_prices():
    frame = make_frame(n_tickers=5, n_days=60)
    base = baseline_predictions(frame, horizon=5)
    one = frame[frame["ticker"] == "T00"].reset_index(drop=True)
    mom = base["momentum_20"].loc[frame["ticker"] == "T00", "expected_return"].to_numpy()
    expected = (one["adj_close"] / one["adj_close"].shift(20) - 1.0) * 5 / 20
    np.testing.assert_allclose(mom, expected.to_numpy(), equal_nan=True)
    assert np.isnan(mom[:20]).all()
    # changing the future does not change today's baseline signal
    changed = frame.copy()
    changed.loc[changed["date"] > changed["date"].unique()[40], "adj_close"] *= 3.0
    again = baseline_predictions(changed, horizon=5)
    upto = (frame["date"] <= frame["date"].unique()[40]).to_numpy()
    for name in BASELINES:
        np.testing.assert_array_equal(
            base[name]["expected_return"].to_numpy()[upto], again[name]["expected_return"].to_numpy()[upto]
        )


def test_baselines_have_no_ic_on_random_walks():
    # 60 tickers x ~480 scored dates: the SE of the mean daily IC is 1/sqrt(59 * 480) ~= 0.006
    frame = make_frame(n_tickers=60, n_days=600, seed=3, horizons=(1,))
    SpyLearner.calls = []
    result = evaluate_walk_forward(
        SpyLearner, frame, feature_columns=["ret_1"], horizon=1, n_folds=4, test_days=120, min_train_days=100
    )
    for name in ("momentum_20", "reversal_5"):
        assert abs(result.baselines[name]["ic"]) < 0.02, name
        assert abs(result.baselines[name]["rank_ic"]) < 0.02, name


def test_the_evaluation_sample_is_every_ticker_up_to_the_cap_then_a_stable_hash_sample():
    from training.walk_forward import WalkForward

    wf = WalkForward(n_folds=3, test_days=63, min_train_days=252, gap_days=5, max_tickers=100)
    universe = [f"T{i:04d}" for i in range(1000)]
    assert wf.evaluation_tickers(universe[:100]) is None  # at or under the cap: every ticker
    assert WalkForward(3, 63, 252, 5, max_tickers=0).evaluation_tickers(universe) is None
    sample = wf.evaluation_tickers(universe)
    assert len(sample) == 100 and sample <= set(universe)
    assert wf.evaluation_tickers(list(reversed(universe)) + universe[:10]) == sample  # order and repeats
    # a listing enters only if it hashes lower and pushes out one name; a delisting outside leaves it as is
    grown = wf.evaluation_tickers([*universe, "NEWCO"])
    assert len(sample ^ grown) in (0, 2)
    outside = next(t for t in universe if t not in sample)
    assert wf.evaluation_tickers([t for t in universe if t != outside]) == sample
    # not the alphabetical head: spread over the universe
    assert max(universe.index(t) for t in sample) > 500
