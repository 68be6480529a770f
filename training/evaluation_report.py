"""The evaluation report: every learner, the ensemble and the naive baselines evaluated walk-forward
on one training frame, nothing registered (``manage.py evaluation_report``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings

from features.common import chunked
from training import selectors
from training.config import (
    BASE_LEARNERS,
    ENSEMBLE,
    horizon_days,
    model_config,
    resolve_models,
    walk_forward_settings,
)
from training.evaluation import Split, evaluate_walk_forward, yearly_splits
from training.fitting import make_learner
from training.learners.base import with_cross_sectional_targets
from training.prophet_chunks import fit_prophet_chunk
from training.report_table import report_from_tables, reused_predictions
from training.walk_forward import (
    WalkForward,
    describe_folds,
    evaluate_ensemble,
    iso_date,
    label_table,
    oof_table,
)


def evaluation_report(
    *,
    start: Any = None,
    end: Any = None,
    tickers: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    splits: Sequence[Split] | None = None,
    folds: int | None = None,
    test_days: int | None = None,
    min_train_days: int | None = None,
    yearly: bool = False,
    cost_bps: float | None = None,
    horizon: int | None = None,
    hold_days: int = 1,
    member_predictions: Mapping[str, pd.DataFrame] | None = None,
    on_predictions: Callable[[str, pd.DataFrame], None] | None = None,
) -> dict[str, Any]:
    """Walk-forward evaluation of every learner, the ensemble and the baselines on one frame.

    Every row of the table is scored on the same out-of-sample rows: those the ensemble scored
    (its first member fold only trains the stack), which all members and baselines scored too.

    The folds: ``splits`` when given (over the frame's dates); else with ``yearly=True`` one fold per
    calendar year, each refitted on all earlier dates (``training.evaluation.yearly_splits``); else
    ``folds`` folds of ``test_days`` dates. ``folds``, ``test_days`` and ``min_train_days`` override
    ``ML_WALK_FORWARD_FOLDS``/``_TEST_DAYS``/``_MIN_TRAIN_DAYS``; the purge gap is
    ``ML_WALK_FORWARD_GAP_DAYS`` (at least the horizon). ``cost_bps``: the long-short book's cost
    per side traded (``training.report.decile_book``, default 10). ``horizon``: the label's trading
    days (default ``training.horizon_days``). ``member_predictions``: a learner's out-of-sample
    predictions (``ticker, date, expected_return, prob_up, confidence, fold``) from an earlier report
    over the same folds, used instead of training it again (e.g. to re-stack the ensemble);
    ``on_predictions(name, table)`` receives each learner's and the ensemble's predictions.
    """
    if splits is not None and yearly:
        raise ValueError("pass either splits or yearly=True, not both")
    say = progress or (lambda _msg: None)
    names = [n for n in resolve_models(models) if n in BASE_LEARNERS]
    horizon = horizon_days() if horizon is None else int(horizon)
    configured = walk_forward_settings(horizon=horizon)
    wf = WalkForward(
        n_folds=configured.n_folds if folds is None else int(folds),
        test_days=configured.test_days if test_days is None else int(test_days),
        min_train_days=configured.min_train_days if min_train_days is None else int(min_train_days),
        gap_days=configured.gap_days,
    )
    data = selectors.load_training_frame(tickers=list(tickers) if tickers else None, start=start, end=end,
                                         horizon=horizon)
    frame = data.frame
    if frame.empty:
        raise selectors.NoTrainingData("the feature store returned no rows for the report's window")
    frame = with_cross_sectional_targets(frame, horizon)
    dates = np.unique(frame["date"].to_numpy())
    if splits is not None:
        protocol, splits = "given", list(splits)
    elif yearly:
        protocol = "yearly"
        splits = yearly_splits(dates, horizon=horizon, gap_days=wf.gap_days, min_train_days=wf.min_train_days)
    else:
        protocol, splits = "folds", wf.splits(dates, horizon=horizon)
    fold_windows = describe_folds(splits, dates, horizon=horizon)
    wf_members = wf
    if protocol != "folds":
        # The ensemble stacks on its members' out-of-fold dates (ensemble_walk_forward): equal folds
        # over the members' later folds, so its first member fold (year) only trains the stack.
        lengths = [len(s.test_dates) for s in splits]
        per_fold = sum(lengths[1:]) // (len(splits) - 1) if len(splits) > 1 else lengths[0]
        wf_members = WalkForward(n_folds=len(splits), test_days=max(1, per_fold),
                                 min_train_days=len(splits[0].train_dates),
                                 gap_days=min(s.gap_days for s in splits))
    labels = label_table(frame, horizon=horizon)
    shape = (f"{len(splits)} yearly folds {fold_windows[0]['test_start'][:4]}..{fold_windows[-1]['test_end'][:4]}"
             if protocol == "yearly" else f"{len(splits)} folds of {wf.test_days} days" if protocol == "folds"
             else f"{len(splits)} given folds")
    say(f"{frame['ticker'].nunique()} tickers, {len(dates)} dates, {len(frame):,} rows; "
        f"{shape}, gap {wf.gap_days}")
    tables: dict[str, pd.DataFrame] = {}
    seconds: dict[str, float] = {}
    max_rows = settings.ML_LSTM_MAX_TRAIN_ROWS
    test_dates = np.unique(np.concatenate([np.asarray(s.test_dates) for s in splits]))
    for name in names:
        started = time.perf_counter()
        if member_predictions and name in member_predictions:
            tables[name] = reused_predictions(name, member_predictions[name], labels, test_dates)
            say(f"{name}: {len(tables[name]):,} out-of-sample predictions reused")
        elif name == "prophet_forecaster":
            parts = []
            chunks = chunked(sorted(frame["ticker"].unique()), settings.ML_PROPHET_CHUNK_TICKERS)
            for i, part in enumerate(chunks, start=1):
                sub = frame.loc[frame["ticker"].isin(part)]
                parts.append(fit_prophet_chunk(frame=sub, splits=splits, horizon=horizon, final_fit=False).table)
                elapsed = time.perf_counter() - started
                say(f"{name} chunk {i}/{len(chunks)}: {len(part)} tickers x {len(splits)} folds, {elapsed:.0f}s so far "
                    f"({sum(len(c) for c in chunks[:i]) / max(elapsed, 1e-9):.2f} tickers/s)")
            tables[name] = pd.concat(parts, ignore_index=True)
        else:
            result = evaluate_walk_forward(make_learner(name, max_rows=max_rows), frame,
                                           feature_columns=data.feature_columns, horizon=horizon, splits=splits,
                                           baselines=False, progress=say)
            tables[name] = oof_table(result.oof, labels)
        seconds[name] = time.perf_counter() - started
        say(f"{name}: evaluated in {seconds[name]:.1f}s")
        if on_predictions is not None:
            on_predictions(name, tables[name])
    rows: dict[str, pd.DataFrame] = dict(tables)
    if len(tables) >= 2 and (models is None or ENSEMBLE in models):
        started = time.perf_counter()
        ev = evaluate_ensemble(tables, horizon=horizon, wf_members=wf_members, config=model_config(ENSEMBLE))
        rows[ENSEMBLE] = ev.table
        seconds[ENSEMBLE] = time.perf_counter() - started
        say(f"ensemble: evaluated in {seconds[ENSEMBLE]:.1f}s")
        if on_predictions is not None:
            on_predictions(ENSEMBLE, ev.table)
    walk_forward = {**asdict(wf), "protocol": protocol, "n_folds": len(splits)}
    if protocol != "folds":
        walk_forward["test_days"] = None
    return report_from_tables(rows, horizon=horizon, cost_bps=cost_bps, hold_days=hold_days, extra={
        "tickers": int(frame["ticker"].nunique()), "rows": int(len(frame)), "seconds": seconds,
        "walk_forward": walk_forward, "folds": fold_windows,
        "data_start": iso_date(dates[0]), "data_end": iso_date(dates[-1]),
    })
