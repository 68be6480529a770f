"""The learner interface, its result types and the safe artifact container.

Framework-free: nothing here (or in any learner module) imports Django, so the same code runs in
Celery workers, management commands, notebooks and tests.

Data contract (the feature store's "training frame"): a DataFrame with ``ticker``, ``date``, float
feature columns (NaN allowed), ``adj_close`` and labels ``fwd_ret_{h}`` (simple return of adjusted
close from ``t`` to ``t+h`` trading days) and ``fwd_dir_{h}`` (1 if ``fwd_ret_{h} > 0`` else 0).
Learners are told their feature columns explicitly and never read a label column in ``predict``.

Targets are CROSS-SECTIONAL (``cross_sectional_targets``): the learners fit which stocks beat the
others on a day, not the market's direction. They are computed per date over the frame's tickers,
or read from ``fwd_csrank_{h}``/``fwd_csup_{h}``/``fwd_csexcess_{h}`` where the frame carries them
(``with_cross_sectional_targets``: a caller that subsamples labelled rows adds them first, so a
subsample keeps the full universe's ranks).

Confidence, for every learner, is ``|2 * prob_up - 1|``: 0 is a coin flip, 1 is certainty about the
direction. Each learner derives ``prob_up`` in its own way (documented in its module).

Artifacts (``to_bytes``/``from_bytes``) never use pickle. The container is::

    MAGIC (8 bytes) | SHA-256 of the zip (32 bytes) | zip

and the zip holds ``meta.json`` (learner name, format version, params, feature columns, scaler and
calibration parameters...) plus the native artifacts (XGBoost UBJ, Prophet JSON, tensors as ``.npy``
written and read with ``allow_pickle=False``). Any changed, missing or added byte fails the checksum
before anything is parsed, with :class:`ArtifactError`.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from features.common import jsonable
from features.labels import cs_beats_median, cs_demean, cs_rank_norm

ARTIFACT_MAGIC = b"IMLART1\n"
ARTIFACT_FORMAT_VERSION = 1
_DIGEST_SIZE = 32
MAX_UNCOMPRESSED_BYTES = 4 * 1024**3


class ArtifactError(ValueError):
    """The bytes are not a learner artifact, were modified, or belong to another learner."""


class NotFittedError(RuntimeError):
    """``predict``/``to_bytes`` called on a learner that has not been fitted or loaded."""


@dataclass
class FitReport:
    n_samples: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Predictions:
    """Arrays aligned to the rows (positions) of the frame given to ``predict``.

    ``expected_return``: forecast of ``fwd_ret_{h}`` (simple return), so a price forecast is
    ``adj_close * (1 + expected_return)``. ``prob_up``: probability that ``fwd_ret_{h} > 0``.
    ``confidence``: ``|2 * prob_up - 1|`` in [0, 1]. NaN marks a row the learner has no opinion on
    (e.g. Prophet for a ticker it has no model for); metrics drop such rows.
    """

    expected_return: np.ndarray
    prob_up: np.ndarray
    confidence: np.ndarray

    def __post_init__(self) -> None:
        self.expected_return = np.asarray(self.expected_return, dtype=np.float64).reshape(-1)
        self.prob_up = np.asarray(self.prob_up, dtype=np.float64).reshape(-1)
        self.confidence = np.asarray(self.confidence, dtype=np.float64).reshape(-1)
        n = len(self.expected_return)
        if len(self.prob_up) != n or len(self.confidence) != n:
            raise ValueError("Predictions arrays must have the same length")

    def __len__(self) -> int:
        return len(self.expected_return)

    @classmethod
    def from_prob(cls, expected_return: np.ndarray, prob_up: np.ndarray) -> Predictions:
        prob_up = np.clip(np.asarray(prob_up, dtype=np.float64), 0.0, 1.0)
        return cls(expected_return, prob_up, confidence_from_prob(prob_up))

    def predicted_price(self, adj_close: np.ndarray) -> np.ndarray:
        return np.asarray(adj_close, dtype=np.float64) * (1.0 + self.expected_return)

    def to_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``ticker, date, expected_return, prob_up, confidence`` with ``frame``'s index."""
        if len(frame) != len(self):
            raise ValueError(f"frame has {len(frame)} rows, predictions {len(self)}")
        return pd.DataFrame(
            {
                "ticker": frame["ticker"].to_numpy(),
                "date": frame["date"].to_numpy(),
                "expected_return": self.expected_return,
                "prob_up": self.prob_up,
                "confidence": self.confidence,
            },
            index=frame.index,
        )


@runtime_checkable
class Learner(Protocol):
    """What the training pipeline, the registry and inference need from a model.

    ``context_days`` (a class or instance attribute, 0 when absent) is how many trading days of
    earlier rows per ticker ``predict`` needs to see before the first row it should score (the LSTM
    reads sequences); callers pass those rows along and keep only the rows they want.
    """

    name: ClassVar[str]
    model_type: ClassVar[str]

    def fit(self, frame: pd.DataFrame, *, feature_columns: list[str], horizon: int) -> FitReport: ...

    def predict(self, frame: pd.DataFrame) -> Predictions: ...

    def to_bytes(self) -> bytes: ...

    @classmethod
    def from_bytes(cls, data: bytes) -> Learner: ...


# --------------------------------------------------------------------------------------------------
# helpers shared by the learners


def label_columns(horizon: int) -> tuple[str, str]:
    return f"fwd_ret_{horizon}", f"fwd_dir_{horizon}"


def cs_label_columns(horizon: int) -> tuple[str, str, str]:
    """Cross-sectional target columns: rank-normalized return, beats-the-median class, excess return."""
    return f"fwd_csrank_{horizon}", f"fwd_csup_{horizon}", f"fwd_csexcess_{horizon}"


@dataclass(frozen=True)
class Targets:
    """Per-row targets of one horizon (NaN where unlabelled)."""

    ret: np.ndarray  # fwd_ret_h
    rank: np.ndarray  # CSRankNorm of fwd_ret_h (about unit variance)
    up: np.ndarray  # 1 above the day's median, 0 below, 0.5 on it
    excess: np.ndarray  # fwd_ret_h minus the day's mean


def with_cross_sectional_targets(frame: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """``frame`` with the cross-sectional target columns of ``horizon`` (computed per date over its
    rows from ``fwd_ret_{h}``); returned as is when they are already there."""
    rank_col, up_col, excess_col = cs_label_columns(horizon)
    if rank_col in frame and up_col in frame and excess_col in frame:
        return frame
    ret_col, _ = label_columns(horizon)
    dates = pd.to_datetime(frame["date"]).to_numpy()
    ret = frame[ret_col].to_numpy(dtype=np.float64)
    out = frame.copy(deep=False)  # new columns only: the feature block is shared, not copied
    out[rank_col] = cs_rank_norm(dates, ret)
    out[up_col] = cs_beats_median(dates, ret)
    out[excess_col] = cs_demean(dates, ret)
    return out


def cross_sectional_targets(frame: pd.DataFrame, horizon: int) -> Targets:
    ret_col, _ = label_columns(horizon)
    full = with_cross_sectional_targets(frame, horizon)
    rank_col, up_col, excess_col = cs_label_columns(horizon)
    ret = full[ret_col].to_numpy(dtype=np.float64)
    unlabelled = ~np.isfinite(ret)

    def col(name: str) -> np.ndarray:
        values = full[name].to_numpy(dtype=np.float64).copy()
        values[unlabelled] = np.nan  # a subsample masks fwd_ret_h only: follow it
        return values

    return Targets(ret=ret, rank=col(rank_col), up=col(up_col), excess=col(excess_col))


def confidence_from_prob(prob_up: np.ndarray) -> np.ndarray:
    return np.abs(2.0 * np.asarray(prob_up, dtype=np.float64) - 1.0)


def normal_cdf(x: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(np.asarray(x, dtype=np.float64))


def check_frame(frame: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in ["ticker", "date", *columns] if c not in frame.columns]
    if missing:
        raise KeyError(f"frame is missing columns: {missing}")


def split_validation_dates(
    dates: np.ndarray, *, fraction: float, gap: int, min_fit_dates: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Split sorted unique ``dates`` into (fit dates, validation dates) with ``gap`` dates purged.

    The validation window is the last ``fraction`` of the dates. The ``gap`` (the label horizon)
    dates just before it belong to neither part: a label at date ``d`` looks ``h`` days ahead, so a
    fit row must end its label before the validation window starts. Returns an empty validation
    window when there are too few dates to afford one.
    """
    dates = np.asarray(dates)
    n = len(dates)
    n_val = int(round(n * fraction)) if fraction > 0 else 0
    if n_val < 1 or n - n_val - gap < max(min_fit_dates, 1):
        return dates, dates[:0]
    return dates[: n - n_val - gap], dates[n - n_val :]


def column_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NaN/inf-aware column means and standard deviations (0 and 1 where undefined or constant)."""
    x = np.where(np.isfinite(x), x, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        mean = np.nanmean(x, axis=0)
        std = np.nanstd(x, axis=0)
    mean = np.nan_to_num(mean, nan=0.0)
    std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
    return mean, std


def ticker_date_order(frame: pd.DataFrame) -> np.ndarray:
    """Positions of ``frame``'s rows sorted by (ticker, date), stable."""
    keyed = pd.DataFrame({"t": frame["ticker"].to_numpy(), "d": pd.to_datetime(frame["date"]).to_numpy()})
    return keyed.sort_values(["t", "d"], kind="stable").index.to_numpy()


def filter_params(params: Mapping[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    """The learner's constructor arguments from a validated ``models.<name>`` config block.

    Config-only keys (``type``, ``enabled``, ``horizon_days``) and unknown keys are dropped; the
    horizon reaches the learner through ``fit``.
    """
    return {k: v for k, v in params.items() if k in allowed and v is not None}


# --------------------------------------------------------------------------------------------------
# artifact container


def array_to_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def array_from_bytes(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def pack_artifact(learner: str, meta: Mapping[str, Any], files: Mapping[str, bytes] | None = None) -> bytes:
    """Serialize ``meta`` (JSON) and native ``files`` into the checksummed container."""
    files = dict(files or {})
    if "meta.json" in files:
        raise ValueError("meta.json is reserved")
    header = {"learner": learner, "format_version": ARTIFACT_FORMAT_VERSION, **jsonable(dict(meta))}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        # Fixed timestamps: the same model always gives the same bytes.
        info = zipfile.ZipInfo("meta.json", date_time=(1980, 1, 1, 0, 0, 0))
        zf.writestr(info, json.dumps(header, sort_keys=True, allow_nan=False), zipfile.ZIP_DEFLATED)
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, files[name], zipfile.ZIP_DEFLATED)
    payload = buf.getvalue()
    return ARTIFACT_MAGIC + hashlib.sha256(payload).digest() + payload


def read_artifact_meta(data: bytes) -> dict[str, Any]:
    return unpack_artifact(data)[0]


def unpack_artifact(
    data: bytes, *, expected_learner: str | None = None
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Verify and open the container: ``(meta, files)``; :class:`ArtifactError` on any problem."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ArtifactError(f"artifact must be bytes, got {type(data).__name__}")
    data = bytes(data)
    head = len(ARTIFACT_MAGIC) + _DIGEST_SIZE
    if len(data) <= head or not data.startswith(ARTIFACT_MAGIC):
        raise ArtifactError("not an investml learner artifact (bad header or truncated)")
    digest, payload = data[len(ARTIFACT_MAGIC) : head], data[head:]
    if hashlib.sha256(payload).digest() != digest:
        raise ArtifactError("artifact checksum mismatch: the bytes were modified or truncated")
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            infos = zf.infolist()
            if sum(i.file_size for i in infos) > MAX_UNCOMPRESSED_BYTES:
                raise ArtifactError("artifact too large when uncompressed")
            files = {i.filename: zf.read(i) for i in infos}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise ArtifactError(f"artifact zip is corrupt: {exc}") from exc
    if "meta.json" not in files:
        raise ArtifactError("artifact has no meta.json")
    try:
        meta = json.loads(files.pop("meta.json").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"artifact meta.json is not valid JSON: {exc}") from exc
    if meta.get("format_version") != ARTIFACT_FORMAT_VERSION:
        raise ArtifactError(f"unsupported artifact format version {meta.get('format_version')!r}")
    if expected_learner is not None and meta.get("learner") != expected_learner:
        raise ArtifactError(f"artifact holds a {meta.get('learner')!r} model, not {expected_learner!r}")
    return meta, files
