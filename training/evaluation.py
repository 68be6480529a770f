"""Walk-forward (out-of-sample) evaluation of learners, with purging, baselines and OOF predictions.

Splits are over the sorted unique dates of the frame (the market's trading days). For each fold::

    [ train dates ........ ] [ gap: gap_days dates ] [ test: test_days dates ]

Purging: a training label at date ``d`` is ``fwd_ret_h``, which looks ``h`` trading days ahead, so
a training row is only allowed when ``d + h`` lies before the first test date. Dropping the last
``h`` dates before the test window from training *is* the gap: ``gap_days >= horizon`` is required
(``ValueError`` otherwise), and then the last training label ends at ``test_start - gap + h - 1 <
test_start``. The gap dates are used neither for fitting nor for scoring.

Folds are consecutive, non-overlapping test windows ending at the last date. ``expanding=True``
trains on everything before the gap; ``expanding=False`` (rolling) on the last ``train_days``
(default ``min_train_days``) dates before the gap.
``yearly_splits`` instead makes one test fold per calendar year, trained on everything before it
(minus the gap).

``evaluate_walk_forward`` fits a fresh learner per fold (``make_learner()``) on the fold's
training rows, predicts the test rows (plus ``learner.context_days`` earlier dates of features for
sequence models, whose predictions are discarded), and scores each fold, all folds together, and
three baselines on exactly the same rows:

* ``zero``: expected return 0, ``prob_up`` 0.5;
* ``momentum_20``: the ticker's 20-day past return (``adj_close_t / adj_close_{t-20} - 1``) as the
  signal, scaled to the horizon (``* h / 20``: the recent daily drift continues);
* ``reversal_5``: minus the 5-day past return, scaled to the horizon (``* h / 5``).

Baseline signals use only prices up to ``t``; their ``prob_up`` is 1 / 0 / 0.5 by the sign.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.common import jsonable
from registry.metrics import METRIC_KEYS, MIN_CROSS_SECTION, compute_metrics
from training.learners.base import Learner

OOF_COLUMNS = ["ticker", "date", "expected_return", "prob_up", "confidence"]
BASELINES = ("zero", "momentum_20", "reversal_5")


@dataclass(frozen=True)
class Split:
    fold: int
    train_dates: np.ndarray  # sorted datetime64[ns]
    test_dates: np.ndarray  # sorted datetime64[ns]
    gap_days: int

    @property
    def train_start(self) -> pd.Timestamp:
        return pd.Timestamp(self.train_dates[0])

    @property
    def train_end(self) -> pd.Timestamp:
        return pd.Timestamp(self.train_dates[-1])

    @property
    def test_start(self) -> pd.Timestamp:
        return pd.Timestamp(self.test_dates[0])

    @property
    def test_end(self) -> pd.Timestamp:
        return pd.Timestamp(self.test_dates[-1])

    def describe(self) -> dict[str, Any]:
        return {
            "fold": self.fold,
            "train_start": self.train_start.date().isoformat(),
            "train_end": self.train_end.date().isoformat(),
            "test_start": self.test_start.date().isoformat(),
            "test_end": self.test_end.date().isoformat(),
            "n_train_dates": len(self.train_dates),
            "n_test_dates": len(self.test_dates),
            "gap_days": self.gap_days,
        }


def _unique_dates(dates: Any) -> np.ndarray:
    return np.unique(pd.to_datetime(pd.Series(np.asarray(dates))).to_numpy())


def walk_forward_splits(
    dates: Any,
    *,
    n_folds: int,
    test_days: int,
    gap_days: int,
    min_train_days: int,
    horizon: int | None = None,
    expanding: bool = True,
    train_days: int | None = None,
) -> list[Split]:
    """Walk-forward folds over the sorted unique ``dates`` (see the module docstring)."""
    if n_folds < 1 or test_days < 1 or min_train_days < 1 or gap_days < 0:
        raise ValueError("n_folds, test_days and min_train_days must be >= 1 and gap_days >= 0")
    if horizon is not None and gap_days < horizon:
        raise ValueError(
            f"gap_days={gap_days} is shorter than the label horizon {horizon}: training labels "
            "would overlap the test window (purge at least `horizon` dates)"
        )
    window = int(train_days if train_days is not None else min_train_days)
    if not expanding and window < min_train_days:
        raise ValueError("train_days must be >= min_train_days")
    u = _unique_dates(dates)
    total = len(u)
    needed = min_train_days + gap_days + n_folds * test_days
    if total < needed:
        raise ValueError(
            f"{total} dates are too few for {n_folds} folds of {test_days} test dates after "
            f"{min_train_days} training and {gap_days} gap dates (need {needed})"
        )
    splits: list[Split] = []
    for k in range(n_folds):
        test_start = total - (n_folds - k) * test_days
        train_stop = test_start - gap_days  # exclusive
        train_start = 0 if expanding else max(0, train_stop - window)
        splits.append(
            Split(
                fold=k,
                train_dates=u[train_start:train_stop],
                test_dates=u[test_start : test_start + test_days],
                gap_days=gap_days,
            )
        )
    return splits


def yearly_splits(dates: Any, *, horizon: int, gap_days: int, min_train_days: int) -> list[Split]:
    """One test fold per calendar year, each refitted on an expanding window (Qlib-style protocol).

    Over the sorted unique ``dates``: the folds are the calendar years whose first date has at least
    ``min_train_days + gap_days`` dates before it; a fold tests every date of its year that lies in
    ``dates`` (the last year may be partial, where the data ends) and trains on all dates before
    the year minus the ``gap_days`` purge (``gap_days >= horizon``, as in ``walk_forward_splits``).
    """
    if min_train_days < 1 or gap_days < 0:
        raise ValueError("min_train_days must be >= 1 and gap_days >= 0")
    if gap_days < horizon:
        raise ValueError(
            f"gap_days={gap_days} is shorter than the label horizon {horizon}: training labels "
            "would overlap the test window (purge at least `horizon` dates)"
        )
    u = _unique_dates(dates)
    years = pd.DatetimeIndex(u).year.to_numpy()
    starts = np.flatnonzero(np.r_[True, years[1:] != years[:-1]])
    stops = np.r_[starts[1:], len(u)]
    splits: list[Split] = []
    for start, stop in zip(starts, stops, strict=True):
        if start - gap_days < min_train_days:
            continue
        splits.append(
            Split(fold=len(splits), train_dates=u[: start - gap_days], test_dates=u[start:stop], gap_days=gap_days)
        )
    if not splits:
        raise ValueError(
            f"{len(u)} dates hold no calendar year with {min_train_days} training and {gap_days} gap dates "
            "before it"
        )
    return splits


# --------------------------------------------------------------------------------------------------
# baselines


def baseline_predictions(frame: pd.DataFrame, *, horizon: int) -> dict[str, pd.DataFrame]:
    """``expected_return``/``prob_up`` of each baseline for every row of ``frame`` (same index)."""
    data = pd.DataFrame(
        {
            "ticker": frame["ticker"].to_numpy(),
            "date": pd.to_datetime(frame["date"]).to_numpy(),
            "close": frame["adj_close"].to_numpy(dtype=np.float64),
        },
        index=frame.index,
    )
    data = data.sort_values(["ticker", "date"], kind="stable")
    by = data.groupby("ticker", sort=False)["close"]
    mom = (data["close"] / by.shift(20) - 1.0) * (horizon / 20.0)
    rev = -(data["close"] / by.shift(5) - 1.0) * (horizon / 5.0)

    def pack(expected: pd.Series) -> pd.DataFrame:
        expected = expected.reindex(frame.index)
        prob = np.where(expected > 0, 1.0, np.where(expected < 0, 0.0, 0.5))
        prob = np.where(np.isfinite(expected), prob, np.nan)
        return pd.DataFrame({"expected_return": expected.to_numpy(), "prob_up": prob}, index=frame.index)

    zero = pd.Series(0.0, index=frame.index)
    return {"zero": pack(zero), "momentum_20": pack(mom), "reversal_5": pack(rev)}


# --------------------------------------------------------------------------------------------------


@dataclass
class FoldResult:
    split: dict[str, Any]
    n_train_rows: int
    n_test_rows: int
    fit_seconds: float
    predict_seconds: float
    fit_extra: dict[str, Any]
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]


@dataclass
class EvaluationResult:
    learner: str
    horizon: int
    folds: list[FoldResult]
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    oof: pd.DataFrame = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no OOF rows), e.g. for the model registry's metadata."""
        return jsonable(
            {
                "learner": self.learner,
                "horizon": self.horizon,
                "metrics": self.metrics,
                "baselines": self.baselines,
                "folds": [
                    {
                        **f.split,
                        "n_train_rows": f.n_train_rows,
                        "n_test_rows": f.n_test_rows,
                        "fit_seconds": f.fit_seconds,
                        "predict_seconds": f.predict_seconds,
                        "metrics": f.metrics,
                        "baselines": f.baselines,
                    }
                    for f in self.folds
                ],
            }
        )


def _score(rows: pd.DataFrame, expected: Any, prob: Any, *, horizon: int, min_names: int) -> dict[str, float]:
    return compute_metrics(
        dates=rows["date"].to_numpy(),
        expected_return=expected,
        prob_up=prob,
        adj_close=rows["adj_close"].to_numpy(dtype=np.float64),
        realized_return=rows[f"fwd_ret_{horizon}"].to_numpy(dtype=np.float64),
        next_day_return=rows["fwd_ret_1"].to_numpy(dtype=np.float64) if "fwd_ret_1" in rows else None,
        horizon=horizon,
        min_names=min_names,
    )


def _accepts(func: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def evaluate_walk_forward(
    make_learner: Callable[[], Learner],
    frame: pd.DataFrame,
    *,
    feature_columns: list[str],
    horizon: int,
    splits: Sequence[Split] | None = None,
    n_folds: int = 3,
    test_days: int = 63,
    gap_days: int | None = None,
    min_train_days: int = 252,
    expanding: bool = True,
    train_days: int | None = None,
    warm_start: bool = False,
    baselines: bool = True,
    min_names: int = MIN_CROSS_SECTION,
    progress: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Fit a fresh learner per fold on purged training rows and score it on the unseen test rows.

    ``warm_start=True`` passes the previous fold's learner as ``fit(..., warm_start=previous)`` to
    learners that accept it (Prophet). ``progress`` gets one line per fold (rows, seconds, rank IC).
    ``frame`` must hold ``ticker``, ``date``, ``adj_close``, ``fwd_ret_{h}`` (and preferably
    ``fwd_ret_1``) besides the features.
    """
    ret_col = f"fwd_ret_{horizon}"
    missing = [c for c in ["ticker", "date", "adj_close", ret_col, *feature_columns] if c not in frame]
    if missing:
        raise KeyError(f"frame is missing columns: {missing}")
    frame = frame.reset_index(drop=True)
    dates = pd.to_datetime(frame["date"]).to_numpy()
    frame = frame.assign(date=dates)
    u = _unique_dates(dates)
    if splits is None:
        splits = walk_forward_splits(
            u,
            n_folds=n_folds,
            test_days=test_days,
            gap_days=horizon if gap_days is None else gap_days,
            min_train_days=min_train_days,
            horizon=horizon,
            expanding=expanding,
            train_days=train_days,
        )
    pos = np.searchsorted(u, dates)
    base = baseline_predictions(frame, horizon=horizon) if baselines else {}

    folds: list[FoldResult] = []
    oof_parts: list[pd.DataFrame] = []
    previous: Learner | None = None
    name = "unknown"
    for split in splits:
        if split.gap_days < horizon:
            raise ValueError(f"fold {split.fold}: gap_days={split.gap_days} < horizon {horizon}")
        train_hi = np.searchsorted(u, split.train_dates[-1])
        test_lo = np.searchsorted(u, split.test_dates[0])
        test_hi = np.searchsorted(u, split.test_dates[-1])
        # purging: the last training label (train_hi + horizon) ends before the test window
        if train_hi + horizon >= test_lo:
            raise ValueError(f"fold {split.fold}: training labels reach into the test window")
        train_mask = np.isin(dates, split.train_dates)
        test_mask = np.isin(dates, split.test_dates)
        train = frame.loc[train_mask]

        learner = make_learner()
        name = getattr(learner, "name", type(learner).__name__)
        kwargs: dict[str, Any] = {"feature_columns": list(feature_columns), "horizon": horizon}
        if warm_start and previous is not None and _accepts(learner.fit, "warm_start"):
            kwargs["warm_start"] = previous
        report = learner.fit(train, **kwargs)

        context = int(getattr(learner, "context_days", 0) or 0)
        predict_mask = (pos >= max(0, test_lo - context)) & (pos <= test_hi)
        predict_rows = frame.loc[predict_mask]
        started = time.perf_counter()
        preds = learner.predict(predict_rows)
        predict_seconds = time.perf_counter() - started
        keep = test_mask[predict_mask]
        test = predict_rows.loc[keep]
        er, pu, conf = preds.expected_return[keep], preds.prob_up[keep], preds.confidence[keep]

        oof_parts.append(
            pd.DataFrame(
                {
                    "ticker": test["ticker"].to_numpy(),
                    "date": test["date"].to_numpy(),
                    "expected_return": er,
                    "prob_up": pu,
                    "confidence": conf,
                    "fold": split.fold,
                },
                index=test.index,
            )
        )
        fold_base = {
            b: _score(
                test,
                p.loc[test.index, "expected_return"].to_numpy(),
                p.loc[test.index, "prob_up"].to_numpy(),
                horizon=horizon,
                min_names=min_names,
            )
            for b, p in base.items()
        }
        folds.append(
            FoldResult(
                split=split.describe(),
                n_train_rows=int(train_mask.sum()),
                n_test_rows=int(test_mask.sum()),
                fit_seconds=float(report.seconds),
                predict_seconds=predict_seconds,
                fit_extra=dict(report.extra),
                metrics=_score(test, er, pu, horizon=horizon, min_names=min_names),
                baselines=fold_base,
            )
        )
        previous = learner
        if progress is not None:
            f = folds[-1]
            progress(f"{name} fold {len(folds)}/{len(splits)} {f.split['test_start']}..{f.split['test_end']}: "
                     f"fit {f.n_train_rows:,} rows in {f.fit_seconds:.1f}s ({f.n_train_rows / max(f.fit_seconds, 1e-9):,.0f}"
                     f" rows/s), {f.n_test_rows:,} test rows, rank IC {f.metrics['rank_ic']:+.4f}")

    oof = pd.concat(oof_parts) if oof_parts else pd.DataFrame(columns=[*OOF_COLUMNS, "fold"])
    rows = frame.loc[oof.index]
    metrics = _score(
        rows,
        oof["expected_return"].to_numpy(),
        oof["prob_up"].to_numpy(),
        horizon=horizon,
        min_names=min_names,
    )
    overall_base = {
        b: _score(
            rows,
            p.loc[oof.index, "expected_return"].to_numpy(),
            p.loc[oof.index, "prob_up"].to_numpy(),
            horizon=horizon,
            min_names=min_names,
        )
        for b, p in base.items()
    }
    assert set(metrics) == set(METRIC_KEYS)
    return EvaluationResult(
        learner=name,
        horizon=horizon,
        folds=folds,
        metrics=metrics,
        baselines=overall_base,
        oof=oof.reset_index(drop=True),
    )
