"""Model artifacts on disk: atomic writes, sha256, verified reads (framework-free, no Django).

Layout under ``ML_MODELS_PATH`` (the root is passed in; paths derive from registry ids only)::

    <model name>/<version id>.bin       the learner artifact (``Learner.to_bytes()``)
    <model name>/<version id>.oof.npz   its walk-forward out-of-sample predictions and labels

``<model name>`` is the registered model's name as the registry stores it (checked against
``^[a-z][a-z0-9_]{0,99}$``) and ``<version id>`` its integer primary key: nothing a user types
reaches a path, and every resolved path is checked to stay inside the root.

Writes are atomic: the bytes go to a temporary file in the same folder, are flushed and fsynced, and
the file is renamed over the final name (then the folder is fsynced), so a reader sees the old file
or the complete new one, never a partial one. The root may also be ``s3://bucket/prefix``
(``features.storage``): there each file is one PUT (atomic) to a name that is never reused, and the
registry row that records its path, size and sha256 is the commit pointer; reads go to memory.
Reads check the size and the sha256 recorded in the registry before the bytes are handed to a
loader; any difference raises
:class:`ArtifactIntegrityError` with a message naming the model version (``model@1.2.0``), the
file, and what is wrong.

The out-of-sample table is a NumPy ``.npz`` written and read with ``allow_pickle=False`` (tickers as
fixed-width unicode, dates as ``datetime64[D]``), never a pickle.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features import storage

MODEL_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
ARTIFACT_SUFFIX = ".bin"
OOF_SUFFIX = ".oof.npz"


class ArtifactIntegrityError(Exception):
    """An artifact file is missing, of the wrong size, or its sha256 differs from the registry's."""


@dataclass(frozen=True)
class StoredFile:
    relpath: str
    sha256: str
    size: int


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def relative_path(*, model_name: str, version_id: int, suffix: str = ARTIFACT_SUFFIX) -> str:
    """``<model name>/<version id><suffix>``, from registry values only."""
    if not isinstance(model_name, str) or not MODEL_NAME_RE.match(model_name):
        raise ValueError(f"model name {model_name!r} is not a registry name (lowercase letters, digits, _)")
    if isinstance(version_id, bool) or not isinstance(version_id, int) or version_id < 1:
        raise ValueError(f"version id must be a positive integer, got {version_id!r}")
    if suffix not in (ARTIFACT_SUFFIX, OOF_SUFFIX):
        raise ValueError(f"unknown artifact suffix {suffix!r}")
    return f"{model_name}/{version_id}{suffix}"


def resolve(root: Path | str, relpath: str) -> Path:
    """``root / relpath``, refusing anything that would land outside ``root``."""
    base = Path(root).resolve()
    path = (base / relpath).resolve()
    if path == base or base not in path.parents:
        raise ValueError(f"artifact path {relpath!r} escapes the models folder")
    return path


def write_atomic(*, root: Path | str, relpath: str, data: bytes) -> StoredFile:
    """Write ``data`` to ``root/relpath`` atomically (temp file, fsync, rename, fsync folder; on
    S3 one PUT)."""
    if storage.is_remote(root):
        storage.location(root).write_bytes(relpath, data)
        return StoredFile(relpath=relpath, sha256=sha256_bytes(data), size=len(data))
    path = resolve(root, relpath)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return StoredFile(relpath=relpath, sha256=sha256_bytes(data), size=len(data))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def remove(*, root: Path | str, relpath: str) -> None:
    if storage.is_remote(root):
        storage.location(root).remove(relpath)
        return
    try:
        resolve(root, relpath).unlink()
    except FileNotFoundError:
        pass


def read_verified(*, root: Path | str, relpath: str, sha256: str, size: int | None, label: str) -> bytes:
    """The file's bytes if they match the registry's size and sha256; else ArtifactIntegrityError.

    ``label`` names the model version in the message (``"lstm_predictor@1.2.0"``).
    """
    if not relpath or not sha256:
        raise ArtifactIntegrityError(
            f"ERROR: Failed to load model {label}: the registry has no artifact for it "
            "(the training run did not finish registering it)"
        )
    remote = storage.location(root) if storage.is_remote(root) else None
    try:
        path = resolve(root, relpath) if remote is None else remote.path(relpath)
    except ValueError as exc:
        raise ArtifactIntegrityError(f"ERROR: Failed to load model {label}: {exc}") from exc
    try:
        data = path.read_bytes() if remote is None else remote.read_bytes(relpath)
    except FileNotFoundError:
        raise ArtifactIntegrityError(
            f"ERROR: Failed to load model {label}: FileNotFoundError: artifact file {path} is missing. "
            "Verify the model files exist in ML_MODELS_PATH, or retrain "
            "(python manage.py retrain --models "
            f"{label.split('@')[0]} --sync)"
        ) from None
    except OSError as exc:
        raise ArtifactIntegrityError(
            f"ERROR: Failed to load model {label}: cannot read artifact file {path}: {exc} "
            "(check the file permissions)"
        ) from exc
    if size is not None and len(data) != size:
        raise ArtifactIntegrityError(
            f"ERROR: Failed to load model {label}: artifact file {path} is {len(data)} bytes, the registry "
            f"recorded {size}: the file was truncated or replaced; refusing to load it"
        )
    actual = sha256_bytes(data)
    if actual != sha256:
        raise ArtifactIntegrityError(
            f"ERROR: Failed to load model {label}: sha256 mismatch for artifact file {path} "
            f"(registry {sha256[:16]}..., file {actual[:16]}...): the file was modified; refusing to load it"
        )
    return data


def remove_empty_folder(*, root: Path | str, relpath: str) -> None:
    """Remove the folder ``root/relpath`` if it is empty (object stores have no folders)."""
    storage.location(root).remove_empty_folder(relpath)


# --------------------------------------------------------------------------------------------------
# out-of-sample predictions table

OOF_FLOAT_COLUMNS = (
    "expected_return",
    "prob_up",
    "confidence",
    "adj_close",
    "realized",  # fwd_ret_h
    "next_return",  # fwd_ret_1
    "momentum_20",  # baseline expected returns for the same rows
    "reversal_5",
)


def oof_to_bytes(frame: pd.DataFrame) -> bytes:
    """``ticker, date, fold`` and ``OOF_FLOAT_COLUMNS`` as an ``.npz`` (no pickle)."""
    missing = [c for c in ("ticker", "date", "fold", *OOF_FLOAT_COLUMNS) if c not in frame.columns]
    if missing:
        raise KeyError(f"out-of-sample frame is missing columns: {missing}")
    arrays = {
        "ticker": frame["ticker"].astype(str).to_numpy().astype("U"),
        "date": pd.to_datetime(frame["date"]).to_numpy().astype("datetime64[D]"),
        "fold": frame["fold"].to_numpy(dtype=np.int32),
    }
    for col in OOF_FLOAT_COLUMNS:
        arrays[col] = frame[col].to_numpy(dtype=np.float64)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def oof_from_bytes(data: bytes) -> pd.DataFrame:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        out = {
            "ticker": npz["ticker"].astype(str),
            "date": npz["date"].astype("datetime64[ns]"),
            "fold": npz["fold"].astype(np.int64),
        }
        for col in OOF_FLOAT_COLUMNS:
            out[col] = npz[col].astype(np.float64)
    return pd.DataFrame(out)
