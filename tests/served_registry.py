"""A small served registry built from the bundled sample, for the inference tests and benchmark.

``build_served_registry()`` ingests a few real tickers of ``sample_data`` into the database, builds
their features (offline and online store under ``settings.ML_FEATURES_PATH``), trains the four
learners directly with ``training.learners`` (tiny sizes by default, the pipeline's default sizes
with ``size="default"``), registers each with ``registry.services.register_version`` and promotes
it (``force=True``: there is no walk-forward evaluation here). Trained artifacts are memoized in
the process by the training data's hash, so repeated builds (one per test) only pay for the
database and store writes.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.core.management import call_command

SAMPLE = Path(settings.BASE_DIR) / "sample_data" / "prices" / "sp500_sample_2013-05-21_2018-05-18.csv.gz"
TICKERS = ("AAPL", "JPM", "MSFT", "XOM")
FIRST_DAY = "2017-03-01"
HORIZON = 5

SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "xgboost_classifier": {"n_estimators": 10, "max_depth": 3, "n_jobs": 1},
        "lstm_predictor": {"features": 20, "sequence_length": 10, "hidden_size": 8, "epochs": 1, "device": "cpu"},
        "prophet_forecaster": {"history_days": 120, "uncertainty_samples": 20},
    },
    # the spec's model sizes (config/pipeline.json), trained briefly: for serving benchmarks
    "default": {
        "xgboost_classifier": {"n_estimators": 100, "max_depth": 6, "n_jobs": 1},
        "lstm_predictor": {"features": 20, "sequence_length": 60, "hidden_size": 128, "epochs": 1,
                           "device": "cpu"},
        "prophet_forecaster": {"history_days": 250, "uncertainty_samples": 50},
    },
}

_CSV_MEMO: dict[tuple, bytes] = {}
_ARTIFACT_MEMO: dict[tuple, dict[str, bytes]] = {}


@dataclass
class ServedRegistry:
    tickers: list[str]
    feature_set_version: Any
    versions: dict[str, Any]  # model name -> ModelVersion (active)
    frame: pd.DataFrame
    feature_columns: list[str]
    learners: dict[str, Any] = field(default_factory=dict)


def sample_csv(tickers: tuple[str, ...], first_day: str) -> bytes:
    key = (tickers, first_day)
    if key not in _CSV_MEMO:
        out = io.StringIO()
        with gzip.open(SAMPLE, "rt") as src:
            reader = csv.DictReader(src)
            writer = csv.DictWriter(out, fieldnames=reader.fieldnames)
            writer.writeheader()
            for row in reader:
                if row["ticker"] in tickers and row["date"] >= first_day:
                    writer.writerow(row)
        _CSV_MEMO[key] = out.getvalue().encode()
    return _CSV_MEMO[key]


def ingest_and_build(*, tickers: tuple[str, ...] = TICKERS, first_day: str = FIRST_DAY, workdir: Path) -> Any:
    """Bars into the database, features into the offline and online stores; the feature-set version."""
    from features.selectors import resolve_feature_set_version
    from features.services.feature_store import build_features

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "bars.csv"
    path.write_bytes(sample_csv(tuple(tickers), first_day))
    call_command("ingest_prices", str(path), stdout=io.StringIO(), stderr=io.StringIO())
    build_features(tickers=list(tickers))
    return resolve_feature_set_version(version=None)


def _train(frame: pd.DataFrame, columns: list[str], size: str) -> dict[str, bytes]:
    from training.learners.ensemble import EnsembleLearner
    from training.learners.lstm import LSTMLearner
    from training.learners.prophet_learner import ProphetLearner
    from training.learners.xgb import XGBoostLearner

    params = SIZES[size]
    xgb = XGBoostLearner(**params["xgboost_classifier"])
    xgb.fit(frame, feature_columns=columns, horizon=HORIZON)
    lstm = LSTMLearner(**params["lstm_predictor"])
    lstm.fit(frame, feature_columns=columns, horizon=HORIZON)
    prophet = ProphetLearner(**params["prophet_forecaster"])
    prophet.fit(frame, horizon=HORIZON)
    members = {
        "lstm_predictor": lstm.predict(frame).expected_return,
        "prophet_forecaster": prophet.predict(frame).expected_return,
        "xgboost_classifier": xgb.predict(frame).expected_return,
    }
    ensemble = EnsembleLearner(members=sorted(members))
    ensemble.fit_from_oof(members, frame[f"fwd_ret_{HORIZON}"].to_numpy(dtype=np.float64), horizon=HORIZON)
    return {
        "xgboost_classifier": xgb.to_bytes(),
        "lstm_predictor": lstm.to_bytes(),
        "prophet_forecaster": prophet.to_bytes(),
        "ensemble": ensemble.to_bytes(),
    }


def trained_artifacts(frame: pd.DataFrame, columns: list[str], *, size: str = "tiny") -> dict[str, bytes]:
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()
    key = (digest, size)
    if key not in _ARTIFACT_MEMO:
        _ARTIFACT_MEMO[key] = _train(frame, columns, size)
    return _ARTIFACT_MEMO[key]


def register(*, name: str, data: bytes, fsv: Any, members: list[Any] = (),
             data_hash: str = "h1", promote: bool = True) -> Any:
    """Register artifact bytes as the next version of ``name`` (and promote it past the gate)."""
    from registry.services import promote as promote_version
    from registry.services import register_version
    from training.learners import load_learner

    learner = load_learner(data)
    target = f"fwd_dir_{HORIZON}" if name == "xgboost_classifier" else f"fwd_ret_{HORIZON}"
    version = register_version(
        model_name=name, learner=learner, feature_set_version=fsv,
        feature_columns=list(getattr(learner, "feature_columns", None) or []),
        target=target, horizon=HORIZON, metrics={}, training_data_hash=data_hash, members=list(members),
        actor="tests",
    )
    if promote:
        promote_version(version=version, actor="tests", force=True)
        version.refresh_from_db()
    return version


def build_served_registry(*, workdir: Path, tickers: tuple[str, ...] = TICKERS, first_day: str = FIRST_DAY,
                          size: str = "tiny") -> ServedRegistry:
    from features.selectors import training_frame

    fsv = ingest_and_build(tickers=tickers, first_day=first_day, workdir=workdir)
    frame = training_frame(feature_set_version=fsv, horizons=(HORIZON,))
    columns = list(fsv.feature_names)
    artifacts = trained_artifacts(frame, columns, size=size)
    versions = {}
    for name in ("xgboost_classifier", "lstm_predictor", "prophet_forecaster"):
        versions[name] = register(name=name, data=artifacts[name], fsv=fsv)
    versions["ensemble"] = register(
        name="ensemble", data=artifacts["ensemble"], fsv=fsv,
        members=[versions["lstm_predictor"], versions["prophet_forecaster"], versions["xgboost_classifier"]],
    )
    return ServedRegistry(tickers=list(tickers), feature_set_version=fsv, versions=versions, frame=frame,
                          feature_columns=columns)
