"""A training run's walk-forward tables, numpy/pandas only (no Django): the fold settings, the hash
of the rows a model trains on, the label table, each learner's out-of-fold table and its summary
against the naive baselines, and the stack's evaluation on its members' out-of-fold predictions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.common import jsonable
from registry.gate import metric_on_rows, window_summary
from training.evaluation import Split, baseline_predictions, evaluate_walk_forward, walk_forward_splits
from training.learners.ensemble import EnsembleLearner, stack_oof

BASELINE_NAMES = ("zero", "momentum_20", "reversal_5")
OOF_COLUMNS = ("ticker", "date", "expected_return", "prob_up", "confidence", "fold")


@dataclass(frozen=True)
class WalkForward:
    n_folds: int
    test_days: int
    min_train_days: int
    gap_days: int
    max_tickers: int = 0  # the evaluation's tickers: a fixed sample of this many (0: every ticker)

    def evaluation_tickers(self, tickers: Sequence[str]) -> frozenset[str] | None:
        """The tickers the walk-forward evaluates on: None (every one) up to ``max_tickers``, else the
        ``max_tickers`` whose symbols hash lowest. Skill measured on 1,000 names is as telling as on
        6,000 at a sixth of the cost; a hash sample keeps a ticker in it from week to week (only
        listings and delistings change it) and does not depend on the order of ``tickers``."""
        unique = sorted(set(map(str, tickers)))
        if self.max_tickers <= 0 or len(unique) <= self.max_tickers:
            return None
        ranked = sorted(unique, key=lambda t: hashlib.sha256(t.encode("utf-8")).digest())
        return frozenset(ranked[: self.max_tickers])

    def splits(self, dates: Any, *, horizon: int) -> list[Split]:
        return walk_forward_splits(
            dates, n_folds=self.n_folds, test_days=self.test_days, gap_days=self.gap_days,
            min_train_days=self.min_train_days, horizon=horizon,
        )


def describe_folds(splits: Sequence[Split], dates: np.ndarray, *, horizon: int) -> list[dict[str, Any]]:
    """Each fold's window, with the purge checked against the actual trading dates."""
    dates = np.unique(pd.to_datetime(pd.Series(dates)).to_numpy())
    out = []
    for split in splits:
        last_train = np.searchsorted(dates, split.train_dates[-1])
        first_test = np.searchsorted(dates, split.test_dates[0])
        between = int(first_test - last_train - 1)
        if between < horizon:
            raise AssertionError(f"fold {split.fold}: only {between} dates between train and test (< {horizon})")
        out.append({**split.describe(), "horizon": horizon, "dates_between_train_and_test": between})
    return out


def ensemble_walk_forward(n_dates: int, wf: WalkForward) -> WalkForward:
    """Folds for the ensemble over its members' out-of-fold dates: one fold fewer than the members
    (the first member fold only trains the stack), the same test length and gap."""
    folds = max(1, wf.n_folds - 1)
    test_days = min(wf.test_days, max(1, (n_dates - wf.gap_days - 20) // folds))
    min_train = max(1, n_dates - wf.gap_days - folds * test_days)
    return WalkForward(n_folds=folds, test_days=test_days, min_train_days=min_train, gap_days=wf.gap_days)


def frame_hash(frame: pd.DataFrame, columns: Sequence[str]) -> str:
    """sha256 of the rows and columns a model trains on (order-sensitive, so the frame is sorted)."""
    digest = hashlib.sha256()
    digest.update("\x1f".join(columns).encode("utf-8"))
    hashed = pd.util.hash_pandas_object(frame[list(columns)], index=False)
    digest.update(hashed.to_numpy().tobytes())
    return digest.hexdigest()


def label_table(frame: pd.DataFrame, *, horizon: int) -> pd.DataFrame:
    """Per (ticker, date): adj_close, realized ``fwd_ret_h``, ``fwd_ret_1`` and the baselines."""
    base = baseline_predictions(frame, horizon=horizon)
    ret_col = f"fwd_ret_{horizon}"
    return pd.DataFrame({
        "ticker": frame["ticker"].astype(str).to_numpy(),
        "date": pd.to_datetime(frame["date"]).to_numpy(),
        "adj_close": frame["adj_close"].to_numpy(dtype=np.float64),
        "realized": frame[ret_col].to_numpy(dtype=np.float64),
        "next_return": frame["fwd_ret_1"].to_numpy(dtype=np.float64) if "fwd_ret_1" in frame
        else frame[ret_col].to_numpy(dtype=np.float64) / horizon,
        "momentum_20": base["momentum_20"]["expected_return"].to_numpy(dtype=np.float64),
        "reversal_5": base["reversal_5"]["expected_return"].to_numpy(dtype=np.float64),
    })


def oof_table(oof: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The walk-forward predictions joined to their labels and baseline signals."""
    preds = oof[list(OOF_COLUMNS)].assign(
        ticker=oof["ticker"].astype(str).to_numpy(), date=pd.to_datetime(oof["date"]).to_numpy()
    )
    table = preds.merge(labels, on=["ticker", "date"], how="left", validate="one_to_one")
    return table.sort_values(["date", "ticker"], kind="stable").reset_index(drop=True)


def baseline_view(table: pd.DataFrame, name: str) -> pd.DataFrame:
    """``table`` with a baseline's forecast in ``expected_return``/``prob_up``."""
    if name == "zero":
        expected = np.zeros(len(table))
    else:
        expected = table[name].to_numpy(dtype=np.float64)
    prob = np.where(expected > 0, 1.0, np.where(expected < 0, 0.0, 0.5))
    prob = np.where(np.isfinite(expected), prob, np.nan)
    return table.assign(expected_return=expected, prob_up=prob)


def summarize_oof(table: pd.DataFrame, *, horizon: int, folds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Overall and per-fold metrics of a model and of the baselines on the same rows."""
    summary: dict[str, Any] = {
        "metrics": metric_on_rows(table, horizon=horizon),
        "baselines": {b: metric_on_rows(baseline_view(table, b), horizon=horizon) for b in BASELINE_NAMES},
        "window": window_summary(table),
        "folds": [],
    }
    for fold in folds:
        rows = table.loc[table["fold"].to_numpy() == fold["fold"]]
        summary["folds"].append({
            **fold,
            "n_test_rows": int(len(rows)),
            "metrics": metric_on_rows(rows, horizon=horizon),
            "baselines": {b: metric_on_rows(baseline_view(rows, b), horizon=horizon) for b in BASELINE_NAMES},
        })
    return jsonable(summary)


@dataclass
class EnsembleEvaluation:
    names: list[str]
    stacked: pd.DataFrame
    labels: pd.DataFrame
    wf: WalkForward
    splits: list[Split]
    folds: list[dict[str, Any]]
    table: pd.DataFrame
    summary: dict[str, Any]


def evaluate_ensemble(tables: dict[str, pd.DataFrame], *, horizon: int, wf_members: WalkForward,
                      config: dict[str, Any]) -> EnsembleEvaluation:
    """Walk-forward evaluation of the stack on its members' out-of-fold predictions (only)."""
    names = list(tables)
    labels = tables[names[0]].drop(columns=["expected_return", "prob_up", "confidence", "fold"])
    stacked = stack_oof(tables, labels=labels.rename(columns={"realized": f"fwd_ret_{horizon}",
                                                               "next_return": "fwd_ret_1"}))
    stacked = stacked.dropna(subset=names, how="any").reset_index(drop=True)
    dates = np.unique(stacked["date"].to_numpy())
    wf = ensemble_walk_forward(len(dates), wf_members)
    splits = wf.splits(dates, horizon=horizon)
    folds = describe_folds(splits, dates, horizon=horizon)
    result = evaluate_walk_forward(
        lambda: EnsembleLearner.from_config({**config, "members": names}), stacked, feature_columns=names,
        horizon=horizon, splits=splits, baselines=False,
    )
    table = oof_table(result.oof, labels)
    stats = {f.split["fold"]: {"n_train_rows": f.n_train_rows, "weights": f.fit_extra.get("weights")}
             for f in result.folds}
    summary = summarize_oof(table, horizon=horizon, folds=[{**f, **stats.get(f["fold"], {})} for f in folds])
    return EnsembleEvaluation(names=names, stacked=stacked, labels=labels, wf=wf, splits=splits, folds=folds,
                              table=table, summary=summary)


def iso_date(value: Any) -> str:
    return pd.Timestamp(value).date().isoformat()
