"""Negative controls for forecast skill: where there is nothing to predict, every learner's
out-of-sample rank IC must look like chance (overlap-adjusted t-statistic under 3), through the
same path as production (feature engine -> labels -> cross-sectional targets -> walk-forward).

* Random walk: synthetic markets from ``features.synthetic`` (fat tails, volatility clustering, a
  market factor, no predictable drift).
* Shuffled labels: the bundled real sample, with each date's forward returns permuted across its
  tickers: the features are real, the link between a stock's features and its future is cut.

A leak (a feature that reads the future, a fold that trains on its test dates, a target computed
across dates) shows up here as a large t-statistic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.engine import compute_features
from features.feature_sets import MODEL_FEATURE_COLUMNS
from features.labels import compute_labels
from features.synthetic import generate_market
from registry.metrics import daily_ic
from training.evaluation import evaluate_walk_forward
from training.learners.ensemble import EnsembleLearner, stack_oof
from training.learners.lstm import LSTMLearner
from training.learners.xgb import XGBoostLearner
from training.report import rank_ic_tstat

HORIZON = 5
SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "prices" / "sp500_sample_2013-05-21_2018-05-18.csv.gz"
WALK_FORWARD = dict(horizon=HORIZON, n_folds=3, test_days=100, min_train_days=250)


def _learners():
    return {
        "xgboost_classifier": lambda: XGBoostLearner(n_estimators=80, max_depth=4, min_child_weight=50.0, n_jobs=2),
        "lstm_predictor": lambda: LSTMLearner(features=12, sequence_length=10, hidden_size=8, epochs=2,
                                              batch_size=512, patience=1, device="cpu"),
    }


def _frame(bars: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    features = compute_features(bars)
    labels = compute_labels(bars, (1, HORIZON))
    frame = features.merge(labels, on=["ticker", "date"])
    frame["adj_close"] = bars.sort_values(["ticker", "date"])["adj_close"].to_numpy()
    frame["ticker"] = frame["ticker"].astype(str)
    columns = [c for c in MODEL_FEATURE_COLUMNS if frame[c].notna().any()]
    return frame, columns


def _t(oof: pd.DataFrame, frame: pd.DataFrame) -> float:
    rows = oof.merge(frame[["ticker", "date", f"fwd_ret_{HORIZON}"]], on=["ticker", "date"])
    daily = daily_ic(rows["date"].to_numpy(), rows["expected_return"].to_numpy(),
                     rows[f"fwd_ret_{HORIZON}"].to_numpy(), rank=True)
    assert len(daily) >= 150  # members: 300 test dates; the stack: 200
    return rank_ic_tstat(daily, HORIZON)


def _assert_chance(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    results = {name: evaluate_walk_forward(make, frame, feature_columns=columns, baselines=False, **WALK_FORWARD)
               for name, make in _learners().items()}
    for name, result in results.items():
        t = _t(result.oof, frame)
        assert abs(t) < 3, f"{what}: {name} rank IC t-statistic {t:.2f}"
    stacked = stack_oof({n: r.oof for n, r in results.items()}, labels=frame)
    ensemble = evaluate_walk_forward(lambda: EnsembleLearner(members=list(results)), stacked,
                                     feature_columns=list(results), baselines=False, horizon=HORIZON,
                                     n_folds=2, test_days=100, min_train_days=80)
    t = _t(ensemble.oof, frame)
    assert abs(t) < 3, f"{what}: ensemble rank IC t-statistic {t:.2f}"


@pytest.mark.slow
def test_random_walk_control():
    bars = generate_market(60, 2.5, seed=2026)
    frame, columns = _frame(bars)
    _assert_chance(frame, columns, "random walk")


@pytest.mark.slow
def test_shuffled_label_control():
    bars = pd.read_csv(SAMPLE, parse_dates=["date"])
    frame, columns = _frame(bars)
    rng = np.random.default_rng(7)
    # permute each date's forward returns across its tickers (1- and h-day together)
    order = frame.groupby("date")["ticker"].transform(lambda s: rng.permutation(len(s))).to_numpy()
    shuffled = frame.assign(_slot=order).sort_values(["date", "_slot"], kind="stable")
    for col in ("fwd_ret_1", f"fwd_ret_{HORIZON}", "fwd_dir_1", f"fwd_dir_{HORIZON}"):
        values = frame.sort_values(["date", "ticker"], kind="stable")[col].to_numpy()
        frame.loc[shuffled.index, col] = values
    _assert_chance(frame, columns, "shuffled labels")
