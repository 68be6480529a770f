"""``xgboost_classifier``: gradient-boosted trees for "beats the day's median" over the horizon.

Target: cross-sectional (``training.learners.base.cross_sectional_targets``): a row's class is 1
when its ``fwd_ret_h`` is above the day's cross-sectional median, 0 below (0.5 on it). The absolute
direction is mostly the market's direction, which says nothing about how to rank the stocks of one
day. ``objective``: ``"binary"`` (logistic loss on that class, the default) or ``"rank"`` (XGBoost's
pairwise learning-to-rank with the date as the query group; pairs within a day only). Both were
measured walk-forward on S&P 500 2006-2012 (README, "Forecast skill"); binary was kept as default.

Training: ``tree_method="hist"``, seeded; regularized for a noisy target (small ``learning_rate``,
row and column subsampling, ``min_child_weight``, L1 ``reg_alpha`` and L2 ``reg_lambda``; defaults
in the spirit of Qlib's tuned GBDT on Alpha158). NaN features are handled natively. The booster is
fitted on the training dates except the last ``validation_fraction`` of them and a purge of ``h``
dates before that window (labels look ``h`` days ahead). Early stopping: every ``eval_every``
rounds the validation window's mean daily rank IC is measured; the booster is cut at the best
count (``extra["best_iteration"]``), so the number of trees is chosen on data before the test fold.

Calibration: the booster's raw margins on the held-out validation window are mapped to
probabilities with Platt scaling (``p = sigmoid(a * margin + b)``, fitted by maximum likelihood
with Platt's smoothed targets; the default) or isotonic regression (pool-adjacent-violators, then
linear interpolation). The parameters live in ``meta.json``. Without a validation window (too few
dates) the identity map ``sigmoid(margin)`` is used and ``extra["calibration"]`` says so.

Outputs: ``prob_up`` is the calibrated probability of beating the day's median; ``expected_return =
drift + (2 * prob_up - 1) * spread`` where ``drift`` is the mean ``fwd_ret_h`` and ``spread`` the
mean absolute excess return over the day's mean, both over the training rows (the market's drift
plus the stock's expected edge over the cross-section, if up- and down-edges have the same average
size); ``confidence = |2 * prob_up - 1|``.

Feature importance (``extra["importance"]``): total gain per feature, and permutation importance
on the validation window (the drop of its mean daily rank IC when one feature's values are
shuffled) for the ``permutation_top`` features of highest gain.

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

from registry.metrics import daily_ic
from training.learners.base import (
    FitReport,
    NotFittedError,
    Predictions,
    Targets,
    check_frame,
    cross_sectional_targets,
    filter_params,
    pack_artifact,
    split_validation_dates,
    unpack_artifact,
)
from training.learners.tree_table import TreeTable

CALIBRATIONS = ("platt", "isotonic", "none")
OBJECTIVES = {"binary": "binary:logistic", "rank": "rank:pairwise"}


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
        "objective",
        "reg_alpha",
        "reg_lambda",
        "eval_every",
        "permutation_top",
    )

    def __init__(
        self,
        *,
        n_estimators: int = 400,
        max_depth: int = 6,
        learning_rate: float = 0.05,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        seed: int = 42,
        validation_fraction: float = 0.2,
        calibration: str = "platt",
        min_child_weight: float = 100.0,
        n_jobs: int | None = None,
        device: str = "cpu",
        objective: str = "binary",
        reg_alpha: float = 10.0,
        reg_lambda: float = 100.0,
        eval_every: int = 25,
        permutation_top: int = 20,
    ):
        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {sorted(OBJECTIVES)}")
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
            "objective": objective,
            "reg_alpha": float(reg_alpha),
            "reg_lambda": float(reg_lambda),
            "eval_every": max(1, int(eval_every)),
            "permutation_top": max(0, int(permutation_top)),
        }
        self.n_jobs = n_jobs
        self.device = device
        self.feature_columns: list[str] | None = None
        self.horizon: int | None = None
        self.booster: xgb.Booster | None = None
        self._table: TreeTable | bool | None = None  # None: not built yet; False: unsupported
        self.calibration: dict[str, Any] = {"method": "none"}
        self.drift: float = 0.0
        self.spread: float = 0.0
        self.best_iteration: int = 0

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> XGBoostLearner:
        return cls(**filter_params(config, cls.PARAMS))

    def _booster_params(self) -> dict[str, Any]:
        p = self.params
        out: dict[str, Any] = {
            "objective": OBJECTIVES[p["objective"]],
            "tree_method": "hist",
            "alpha": p["reg_alpha"],
            "lambda": p["reg_lambda"],
            "max_depth": p["max_depth"],
            "eta": p["learning_rate"],
            "subsample": p["subsample"],
            "colsample_bytree": p["colsample_bytree"],
            "min_child_weight": p["min_child_weight"],
            "seed": p["seed"],
            "device": self.device,
            "verbosity": 0,
        }
        if p["objective"] == "rank":
            # one random pair per row within its date: the pairwise objective of the whole day
            out.update(lambdarank_pair_method="mean", lambdarank_num_pair_per_sample=1)
        if self.n_jobs:
            out["nthread"] = int(self.n_jobs)
        return out

    def _features(self, frame: pd.DataFrame, rows: np.ndarray | None = None) -> np.ndarray:
        """float32 feature matrix (NaN for missing or non-finite) of ``frame``, or of its ``rows``
        only: no copy of the frame's other columns (the frame may hold 200 features x 2M rows)."""
        assert self.feature_columns is not None
        columns = [frame[c].to_numpy() for c in self.feature_columns]
        n = len(frame) if rows is None else len(rows)
        x = np.empty((n, len(columns)), dtype=np.float32)
        for j, col in enumerate(columns):
            x[:, j] = col if rows is None else col[rows]
        x[~np.isfinite(x)] = np.nan
        return x

    def _matrix(self, frame: pd.DataFrame, label: np.ndarray | None = None) -> xgb.DMatrix:
        return xgb.DMatrix(self._features(frame), label=label, missing=np.nan, nthread=self.n_jobs or -1)

    def fit(self, frame: pd.DataFrame, *, feature_columns: list[str], horizon: int) -> FitReport:
        started = time.perf_counter()
        cols = list(feature_columns)
        check_frame(frame, [*cols, f"fwd_ret_{int(horizon)}"])
        self.feature_columns, self.horizon = cols, int(horizon)

        targets = cross_sectional_targets(frame, int(horizon))
        labelled = np.flatnonzero(np.isfinite(targets.up))
        if not len(labelled):
            raise ValueError("no labelled training rows (the cross-sectional target needs at least two tickers "
                             "with a known forward return on a date)")
        target = Targets(**{k: getattr(targets, k)[labelled] for k in ("ret", "rank", "up", "excess")})
        dates = pd.to_datetime(frame["date"]).to_numpy()[labelled]
        fit_dates, val_dates = split_validation_dates(
            np.unique(dates), fraction=self.params["validation_fraction"], gap=horizon, min_fit_dates=2
        )
        in_fit = np.isin(dates, fit_dates)
        in_val = np.isin(dates, val_dates)

        fit_pos = np.flatnonzero(in_fit)
        if self.params["objective"] == "rank":
            # query groups: the rows of one date, contiguous
            fit_pos = fit_pos[np.argsort(dates[fit_pos], kind="stable")]
        # QuantileDMatrix: the hist method's own compact copy, not a second float matrix
        dtrain = xgb.QuantileDMatrix(self._features(frame, labelled[fit_pos]), label=target.up[fit_pos],
                                     missing=np.nan, nthread=self.n_jobs or -1)
        if self.params["objective"] == "rank":
            dtrain.set_group(np.unique(dates[fit_pos], return_counts=True)[1])
        rounds = self.params["n_estimators"]
        booster = xgb.train(self._booster_params(), dtrain, num_boost_round=rounds)

        del dtrain
        n_val = int(in_val.sum())
        val_features = self._features(frame, labelled[in_val]) if n_val else None
        val_x = xgb.DMatrix(val_features, missing=np.nan) if val_features is not None else None
        curve: dict[int, float] = {}
        best, val_margin = rounds, None  # val_margin: the validation margins of the kept trees
        if val_x is not None:
            best_ic = -np.inf
            for k in sorted({*range(self.params["eval_every"], rounds, self.params["eval_every"]), rounds}):
                margin = booster.predict(val_x, iteration_range=(0, k), output_margin=True)
                ic = daily_ic(dates[in_val], margin, target.ret[in_val], rank=True)
                curve[k] = float(ic.mean()) if len(ic) else float("nan")
                if curve[k] > best_ic:  # the first count reaching the highest rank IC
                    best, best_ic, val_margin = k, curve[k], margin
            if val_margin is None:  # no finite rank IC at any count: keep every tree
                val_margin = booster.predict(val_x, output_margin=True)
        self.booster = booster[:best] if best < booster.num_boosted_rounds() else booster
        self.best_iteration = int(best)
        self._table = None
        self.drift = float(np.mean(target.ret))
        self.spread = float(np.nanmean(np.abs(target.excess)))

        method = self.params["calibration"]
        y_val = target.up[in_val]
        decided = y_val != 0.5
        if method != "none" and val_margin is not None and decided.sum() >= 20 and 0 < y_val[decided].sum() < decided.sum():
            fitter = fit_platt if method == "platt" else fit_isotonic
            self.calibration = fitter(val_margin[decided], y_val[decided])
        else:
            self.calibration = {"method": "none"}

        importance = self._importance(val_features, dates[in_val], target.ret[in_val], val_margin)
        return FitReport(
            n_samples=int(in_fit.sum()),
            seconds=time.perf_counter() - started,
            extra={
                "n_validation": n_val,
                "calibration": self.calibration["method"],
                "objective": self.params["objective"],
                "best_iteration": self.best_iteration,
                "validation_rank_ic": curve,
                "drift": self.drift,
                "spread": self.spread,
                "importance": importance,
                "feature_columns": cols,
            },
        )

    def _importance(self, x: np.ndarray | None, dates: np.ndarray, realized: np.ndarray,
                    margin: np.ndarray | None) -> dict[str, dict[str, float]]:
        """Gain per feature, and the validation rank IC lost when a feature is shuffled (for the
        ``permutation_top`` features of highest gain; seeded)."""
        assert self.booster is not None and self.feature_columns is not None
        raw = self.booster.get_score(importance_type="total_gain")
        # XGBoost names features f0, f1, ... when the matrix has no names
        gain = {c: float(raw.get(f"f{i}", raw.get(c, 0.0))) for i, c in enumerate(self.feature_columns)}
        out: dict[str, dict[str, float]] = {"gain": gain, "permutation": {}}
        top = self.params["permutation_top"]
        if margin is None or x is None or top == 0 or len(x) == 0:
            return out
        base_ic = daily_ic(dates, margin, realized, rank=True)
        if not len(base_ic):
            return out
        base = float(base_ic.mean())
        rng = np.random.default_rng(self.params["seed"])
        ranked = sorted(gain, key=gain.get, reverse=True)[:top]
        for name in ranked:
            j = self.feature_columns.index(name)
            original = x[:, j].copy()
            x[:, j] = original[rng.permutation(len(original))]  # in place: no copy of the matrix
            m = self._booster_margin(x)
            x[:, j] = original
            ic = daily_ic(dates, m, realized, rank=True)
            out["permutation"][name] = base - float(ic.mean()) if len(ic) else float("nan")
        return out

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        if self.booster is None or self.feature_columns is None:
            raise NotFittedError("xgboost_classifier is not fitted")
        check_frame(frame, self.feature_columns)
        if len(frame) == 0:
            return np.empty(0)
        margin = self.booster.predict(self._matrix(frame), output_margin=True)
        return np.clip(apply_calibration(self.calibration, margin), 0.0, 1.0)

    def predict(self, frame: pd.DataFrame) -> Predictions:
        return self._predictions(self.predict_proba(frame))

    def _predictions(self, prob: np.ndarray) -> Predictions:
        return Predictions.from_prob(self.drift + (2.0 * prob - 1.0) * self.spread, prob)

    def predict_matrix(self, x: np.ndarray) -> Predictions:
        """``predict`` for rows already in ``feature_columns`` order (the API's feature vectors):
        no frame and no DMatrix; up to ``TABLE_MAX_ROWS`` rows through the verified tree table."""
        if self.booster is None or self.feature_columns is None:
            raise NotFittedError("xgboost_classifier is not fitted")
        x = np.array(x, dtype=np.float64, ndmin=2)
        if x.shape[1] != len(self.feature_columns):
            raise ValueError(f"expected {len(self.feature_columns)} columns, got {x.shape[1]}")
        x[~np.isfinite(x)] = np.nan
        # a finite value past float32's range stays past every split instead of becoming inf
        limit = float(np.finfo(np.float32).max)
        x = np.clip(x, -limit, limit).astype(np.float32)
        table = self.tree_table() if len(x) <= TABLE_MAX_ROWS else None
        margin = table.margin(x) if table is not None else self._booster_margin(x)
        return self._predictions(np.clip(apply_calibration(self.calibration, margin), 0.0, 1.0))

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
            "drift": self.drift,
            "spread": self.spread,
            "best_iteration": self.best_iteration,
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
        learner.drift = float(meta["drift"])
        learner.spread = float(meta["spread"])
        learner.best_iteration = int(meta["best_iteration"])
        booster = xgb.Booster()
        booster.load_model(bytearray(files["model.ubj"]))
        learner.booster = booster
        return learner
