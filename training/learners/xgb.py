"""``xgboost_classifier``: gradient-boosted trees for the direction over the horizon (``fwd_dir_{h}``).

Training: ``tree_method="hist"``, seeded, with ``n_estimators``, ``max_depth``, ``learning_rate``,
``subsample`` and ``colsample_bytree``; NaN features are handled natively by XGBoost. The booster
is fitted on the training dates except the last ``validation_fraction`` of them and a purge of
``h`` dates before that window (labels look ``h`` days ahead).

Calibration: the booster's raw margins on the held-out validation window are mapped to
probabilities with Platt scaling (``p = sigmoid(a * margin + b)``, fitted by maximum likelihood
with Platt's smoothed targets; the default) or isotonic regression (pool-adjacent-violators, then
linear interpolation). The parameters live in ``meta.json``. Without a validation window (too few
dates) the identity map ``sigmoid(margin)`` is used and ``extra["calibration"]`` says so.

Outputs: ``prob_up`` is the calibrated probability; ``expected_return = (2 * prob_up - 1) *
mean(|fwd_ret_h|)`` over the training rows, i.e. the expected return if up- and down-moves have the
same average size; ``confidence = |2 * prob_up - 1|``.

Artifact: ``meta.json`` + ``model.ubj`` (the booster's own UBJSON format, ``save_raw("ubj")``).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import xgboost as xgb
from scipy.optimize import minimize
from scipy.special import expit

from training.learners.base import (
    FitReport,
    NotFittedError,
    Predictions,
    check_frame,
    filter_params,
    label_columns,
    pack_artifact,
    split_validation_dates,
    unpack_artifact,
)
from training.learners.tree_table import TreeTable

CALIBRATIONS = ("platt", "isotonic", "none")


# --------------------------------------------------------------------------------------------------
# calibration (numpy/scipy only)


def fit_platt(margin: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Platt scaling: ``p = sigmoid(a * margin + b)`` fitted by regularized-target log-likelihood."""
    margin = np.asarray(margin, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    # Platt (1999): smoothed targets keep a, b finite on separable or tiny sets.
    t = np.where(y > 0.5, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = theta[0] * margin + theta[1]
        p = expit(z)
        # log(1 + exp(z)) - t * z, numerically stable
        value = float(np.sum(np.logaddexp(0.0, z) - t * z))
        g = p - t
        return value, np.array([float(np.sum(g * margin)), float(np.sum(g))])

    res = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    a, b = (float(v) for v in res.x)
    return {"method": "platt", "a": a, "b": b}


def fit_isotonic(margin: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Non-decreasing step fit of ``y`` on ``margin`` (pool adjacent violators)."""
    order = np.argsort(margin, kind="stable")
    x = np.asarray(margin, dtype=np.float64)[order]
    yy = np.asarray(y, dtype=np.float64)[order]
    # Blocks: value, weight, x-range
    values: list[float] = []
    weights: list[float] = []
    x_lo: list[float] = []
    x_hi: list[float] = []
    for xi, yi in zip(x, yy, strict=True):
        values.append(yi)
        weights.append(1.0)
        x_lo.append(xi)
        x_hi.append(xi)
        while len(values) > 1 and values[-2] >= values[-1]:
            w = weights[-2] + weights[-1]
            v = (values[-2] * weights[-2] + values[-1] * weights[-1]) / w
            values[-2:] = [v]
            weights[-2:] = [w]
            x_hi[-2:] = [x_hi[-1]]
            x_lo[-2:] = [x_lo[-2]]
    # Knots at both ends of each block: flat within a block, linear between blocks.
    xs = np.column_stack([x_lo, x_hi]).reshape(-1)
    ys = np.repeat(np.asarray(values), 2)
    keep = np.concatenate([[True], np.diff(xs) > 0])  # np.interp needs increasing x
    return {"method": "isotonic", "x": xs[keep].tolist(), "y": ys[keep].tolist()}


def apply_calibration(calibration: dict[str, Any], margin: np.ndarray) -> np.ndarray:
    margin = np.asarray(margin, dtype=np.float64)
    method = calibration["method"]
    if method == "platt":
        return expit(calibration["a"] * margin + calibration["b"])
    if method == "isotonic":
        return np.interp(margin, np.asarray(calibration["x"]), np.asarray(calibration["y"]))
    if method == "none":
        return expit(margin)
    raise ValueError(f"unknown calibration {method!r}")


# --------------------------------------------------------------------------------------------------

TABLE_MAX_ROWS = 32  # beyond this XGBoost's own predict is faster than the tree table


class XGBoostLearner:
    name: ClassVar[str] = "xgboost_classifier"
    model_type: ClassVar[str] = "tree_ensemble"
    context_days: ClassVar[int] = 0
    PARAMS: ClassVar[tuple[str, ...]] = (
        "n_estimators",
        "max_depth",
        "learning_rate",
        "subsample",
        "colsample_bytree",
        "seed",
        "validation_fraction",
        "calibration",
        "min_child_weight",
        "n_jobs",
        "device",
    )

    def __init__(
        self,
        *,
        n_estimators: int = 100,
        max_depth: int = 6,
        learning_rate: float = 0.1,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        seed: int = 42,
        validation_fraction: float = 0.2,
        calibration: str = "platt",
        min_child_weight: float = 1.0,
        n_jobs: int | None = None,
        device: str = "cpu",
    ):
        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}")
        self.params: dict[str, Any] = {
            "n_estimators": int(n_estimators),
            "max_depth": int(max_depth),
            "learning_rate": float(learning_rate),
            "subsample": float(subsample),
            "colsample_bytree": float(colsample_bytree),
            "seed": int(seed),
            "validation_fraction": float(validation_fraction),
            "calibration": calibration,
            "min_child_weight": float(min_child_weight),
        }
        self.n_jobs = n_jobs
        self.device = device
        self.feature_columns: list[str] | None = None
        self.horizon: int | None = None
        self.booster: xgb.Booster | None = None
        self._table: TreeTable | bool | None = None  # None: not built yet; False: unsupported
        self.calibration: dict[str, Any] = {"method": "none"}
        self.mean_abs_return: float = 0.0

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> XGBoostLearner:
        return cls(**filter_params(config, cls.PARAMS))

    def _booster_params(self) -> dict[str, Any]:
        p = self.params
        out: dict[str, Any] = {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "tree_method": "hist",
            "max_depth": p["max_depth"],
            "eta": p["learning_rate"],
            "subsample": p["subsample"],
            "colsample_bytree": p["colsample_bytree"],
            "min_child_weight": p["min_child_weight"],
            "seed": p["seed"],
            "device": self.device,
            "verbosity": 0,
        }
        if self.n_jobs:
            out["nthread"] = int(self.n_jobs)
        return out

    def _matrix(self, frame: pd.DataFrame, label: np.ndarray | None = None) -> xgb.DMatrix:
        assert self.feature_columns is not None
        x = frame[self.feature_columns].to_numpy(dtype=np.float32)
        x[~np.isfinite(x)] = np.nan
        return xgb.DMatrix(x, label=label, missing=np.nan, nthread=self.n_jobs or -1)

    def fit(self, frame: pd.DataFrame, *, feature_columns: list[str], horizon: int) -> FitReport:
        started = time.perf_counter()
        ret_col, dir_col = label_columns(horizon)
        cols = list(feature_columns)
        check_frame(frame, [*cols, ret_col])
        self.feature_columns, self.horizon = cols, int(horizon)

        ret = frame[ret_col].to_numpy(dtype=np.float64)
        labelled = np.isfinite(ret)
        if dir_col in frame.columns:
            direction = frame[dir_col].to_numpy(dtype=np.float64)
            labelled &= np.isfinite(direction)
        else:
            direction = (ret > 0).astype(np.float64)
        data = frame.loc[labelled]
        ret, direction = ret[labelled], direction[labelled]
        if len(data) == 0:
            raise ValueError("no labelled training rows")

        dates = pd.to_datetime(data["date"]).to_numpy()
        fit_dates, val_dates = split_validation_dates(
            np.unique(dates), fraction=self.params["validation_fraction"], gap=horizon, min_fit_dates=2
        )
        in_fit = np.isin(dates, fit_dates)
        in_val = np.isin(dates, val_dates)

        dtrain = self._matrix(data.loc[in_fit], direction[in_fit])
        self.booster = xgb.train(self._booster_params(), dtrain, num_boost_round=self.params["n_estimators"])
        self._table = None
        self.mean_abs_return = float(np.mean(np.abs(ret)))

        method = self.params["calibration"]
        n_val = int(in_val.sum())
        if method != "none" and n_val >= 20 and 0 < direction[in_val].sum() < n_val:
            margin = self.booster.predict(self._matrix(data.loc[in_val]), output_margin=True)
            fitter = fit_platt if method == "platt" else fit_isotonic
            self.calibration = fitter(margin, direction[in_val])
        else:
            self.calibration = {"method": "none"}

        return FitReport(
            n_samples=int(in_fit.sum()),
            seconds=time.perf_counter() - started,
            extra={
                "n_validation": n_val,
                "calibration": self.calibration["method"],
                "mean_abs_return": self.mean_abs_return,
                "feature_columns": cols,
            },
        )

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        if self.booster is None or self.feature_columns is None:
            raise NotFittedError("xgboost_classifier is not fitted")
        check_frame(frame, self.feature_columns)
        if len(frame) == 0:
            return np.empty(0)
        margin = self.booster.predict(self._matrix(frame), output_margin=True)
        return np.clip(apply_calibration(self.calibration, margin), 0.0, 1.0)

    def predict(self, frame: pd.DataFrame) -> Predictions:
        prob = self.predict_proba(frame)
        return Predictions.from_prob((2.0 * prob - 1.0) * self.mean_abs_return, prob)

    def predict_matrix(self, x: np.ndarray) -> Predictions:
        """``predict`` for rows already in ``feature_columns`` order (the API's feature vectors):
        no frame and no DMatrix; up to ``TABLE_MAX_ROWS`` rows through the verified tree table."""
        if self.booster is None or self.feature_columns is None:
            raise NotFittedError("xgboost_classifier is not fitted")
        x = np.array(x, dtype=np.float32, ndmin=2)
        if x.shape[1] != len(self.feature_columns):
            raise ValueError(f"expected {len(self.feature_columns)} columns, got {x.shape[1]}")
        x[~np.isfinite(x)] = np.nan
        table = self.tree_table() if len(x) <= TABLE_MAX_ROWS else None
        margin = table.margin(x) if table is not None else self._booster_margin(x)
        prob = np.clip(apply_calibration(self.calibration, margin), 0.0, 1.0)
        return Predictions.from_prob((2.0 * prob - 1.0) * self.mean_abs_return, prob)

    def _booster_margin(self, x: np.ndarray) -> np.ndarray:
        assert self.booster is not None
        return np.asarray(self.booster.inplace_predict(x, predict_type="margin", missing=np.nan), dtype=np.float64)

    def tree_table(self) -> TreeTable | None:
        """The booster as a verified ``TreeTable`` (built on first use), None where unsupported."""
        if self._table is None and self.booster is not None:
            table = TreeTable.from_booster_json(self.booster.save_raw("json"), n_features=len(self.feature_columns))
            self._table = table if table is not None and table.verified(self._booster_margin) else False
        return self._table or None

    # ----------------------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        if self.booster is None:
            raise NotFittedError("xgboost_classifier is not fitted")
        meta = {
            "params": self.params,
            "feature_columns": self.feature_columns,
            "horizon": self.horizon,
            "calibration": self.calibration,
            "mean_abs_return": self.mean_abs_return,
            "xgboost_version": xgb.__version__,
        }
        return pack_artifact(self.name, meta, {"model.ubj": bytes(self.booster.save_raw("ubj"))})

    @classmethod
    def from_bytes(cls, data: bytes, *, n_jobs: int | None = None, device: str = "cpu") -> XGBoostLearner:
        meta, files = unpack_artifact(data, expected_learner=cls.name)
        learner = cls(**meta["params"], n_jobs=n_jobs, device=device)
        learner.feature_columns = list(meta["feature_columns"])
        learner.horizon = meta["horizon"]
        learner.calibration = meta["calibration"]
        learner.mean_abs_return = float(meta["mean_abs_return"])
        booster = xgb.Booster()
        booster.load_model(bytearray(files["model.ubj"]))
        learner.booster = booster
        return learner
