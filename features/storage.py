"""Where ``ML_MODELS_PATH`` and ``ML_FEATURES_PATH`` point: a local folder or an S3 prefix.
Framework-free (no Django), the bottom of the dependency direction, so the feature store, the
registry's artifacts, training and monitoring all use it.

``location(root)`` gives a :class:`Location` for ``root``: a local path (``/srv/ml_models``), or
``s3://bucket/prefix`` on any S3-compatible store through fsspec/s3fs. The endpoint comes from the
standard ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``), the credentials and region from the
standard AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``...),
as botocore resolves them.

Both kinds keep the same promises, made differently:

* **Atomic writes.** Locally: a temporary file in the same folder, fsynced, renamed over the name,
  the folder fsynced (unchanged from before). On S3 there is no rename, but a single PUT (or a
  completed multipart upload) is atomic: a reader gets the old object or the complete new one.
  Data objects are written once under unique names (a registry version id, a random part id) and
  only become part of anything when a commit pointer names them: the registry row in the database
  (path, size, sha256) for artifacts, ``_manifest.json`` for the feature store.
* **Commit pointers.** :meth:`Location.read_pointer` returns the pointer's bytes and a token (the
  ETag); :meth:`Location.write_pointer` replaces it only if it still has that token (S3's
  conditional PUT, ``If-Match`` / ``If-None-Match: *``), else :class:`CommitConflict`: a writer
  that lost a race never overwrites another's commit.
* **Exclusive sections.** :meth:`Location.lock` is ``flock`` locally; on S3 a lease object created
  with ``If-None-Match: *`` (taken over with ``If-Match`` once expired, so a killed writer does not
  block the store for ever). The conditional pointer write above stays the safety net.
* Nothing is cached on local disk: S3 objects are read into memory (pyarrow reads Parquet from
  buffers, learners load from bytes).

Relative paths come from registry ids and generated names, never from user input; every one is
checked to stay under the root (no ``..``, no absolute path).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import posixpath
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REMOTE_SCHEMES = ("s3://",)
# How long an S3 lease lock stays valid without being released (a killed writer's lock expires):
# settings.ML_STORAGE_LOCK_TTL_SECONDS, set through ``configure`` (this module is Django-free).
_lock_ttl_s = 900.0
LOCK_POLL_S = 0.2
# Objects read at once by ``read_many`` (s3fs runs the GETs concurrently).
READ_BATCH = 64


class StorageError(Exception):
    """A storage root that cannot be used (bad URL, missing bucket...)."""


class CommitConflict(Exception):  # noqa: N818 - the name says what happened
    """Another writer replaced the commit pointer after this one read it: nothing was overwritten."""

    retryable = True  # the orchestrator retries a stage that failed with it


def configure(*, lock_ttl_seconds: float) -> None:
    """Set how long an S3 lease lock holds (``investml.settings`` calls it with its setting)."""
    global _lock_ttl_s
    _lock_ttl_s = float(lock_ttl_seconds)


def is_remote(root: Any) -> bool:
    """Whether ``root`` is an object-store URL (``s3://...``) rather than a local path."""
    return isinstance(root, str) and root.startswith(REMOTE_SCHEMES)


def storage_root(value: str | os.PathLike) -> str | Path:
    """A setting's value as a root: the URL string (no trailing slash) for S3, else a ``Path``."""
    text = os.fspath(value)
    if text.startswith(REMOTE_SCHEMES):
        scheme, rest = text.split("://", 1)
        rest = rest.strip("/")
        bucket = rest.split("/", 1)[0]
        if not bucket:
            raise StorageError(f"{text!r}: no bucket name (expected s3://bucket/prefix)")
        return f"{scheme}://{rest}"
    if "://" in text:
        raise StorageError(f"{text!r}: only local paths and s3://bucket/prefix are supported")
    return Path(text)


def join(root: str | os.PathLike, *parts: str) -> str | Path:
    """``root / part / ...`` for either kind of root (parts checked like any relative path)."""
    rel = _clean("/".join(str(p) for p in parts))
    if is_remote(root):
        return f"{root}/{rel}"
    return Path(root) / rel


def _clean(relpath: str) -> str:
    rel = str(relpath).replace("\\", "/")
    norm = posixpath.normpath(rel)
    if not rel or rel.startswith("/") or norm in (".", "..") or norm.startswith("../"):
        raise ValueError(f"path {relpath!r} escapes the storage root")
    return norm


@dataclass(frozen=True)
class FileInfo:
    relpath: str
    size: int
    mtime: float  # seconds since the epoch


class Location:
    """A storage root. Subclasses: :class:`LocalLocation`, :class:`S3Location`."""

    remote = False
    url: str

    def path(self, relpath: str) -> str:
        """The full path or URL of ``relpath`` (for messages and pyarrow)."""
        raise NotImplementedError

    def read_bytes(self, relpath: str) -> bytes:
        """The object's bytes; ``FileNotFoundError`` when it does not exist."""
        raise NotImplementedError

    def read_many(self, relpaths: Iterable[str]) -> dict[str, bytes]:
        return {rel: self.read_bytes(rel) for rel in relpaths}

    def write_bytes(self, relpath: str, data: Any, *, fsync: bool = True) -> None:
        """Write ``data`` (bytes-like) atomically: readers see the old object or the whole new one."""
        raise NotImplementedError

    def write_many(self, blobs: dict[str, Any]) -> None:
        """``write_bytes`` of each (relative path, data) without fsync; on failure none is left."""
        done: list[str] = []
        try:
            for rel, data in blobs.items():
                self.write_bytes(rel, data, fsync=False)
                done.append(rel)
        except BaseException:
            for rel in done:
                with contextlib.suppress(OSError):
                    self.remove(rel)
            raise

    def remove(self, relpath: str) -> None:
        """Delete the object (nothing when it is missing)."""
        raise NotImplementedError

    def remove_empty_folder(self, relpath: str) -> None:
        """Remove a folder left empty (object stores have none: nothing to do there)."""

    def exists(self, relpath: str) -> bool:
        raise NotImplementedError

    def files(self, prefix: str = "") -> Iterator[FileInfo]:
        """Every object (regular file) under ``prefix``, links not followed."""
        raise NotImplementedError

    def total_bytes(self) -> int:
        return sum(f.size for f in self.files())

    def read_pointer(self, relpath: str) -> tuple[bytes | None, str | None]:
        """(bytes or None when absent, token for :meth:`write_pointer`)."""
        raise NotImplementedError

    def write_pointer(self, relpath: str, data: bytes, *, token: str | None) -> None:
        """Replace the pointer only if it is still as read with ``token`` (None: still absent)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def lock(self, relpath: str) -> Iterator[None]:
        raise NotImplementedError
        yield  # pragma: no cover


# --------------------------------------------------------------------------------------------
# Local folders: what the project always did
# --------------------------------------------------------------------------------------------


def fsync_path(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_local(path: Path, data: Any, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, renamed over it;
    fsynced (file, then folder) when ``fsync``. On failure the temporary file is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if fsync:
        fsync_path(path.parent)


class LocalLocation(Location):
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.url = str(self.root)

    def _full(self, relpath: str) -> Path:
        base = self.root.resolve()
        path = (base / _clean(relpath)).resolve()
        if path == base or base not in path.parents:
            raise ValueError(f"path {relpath!r} escapes the storage root")
        return path

    def path(self, relpath: str) -> str:
        return str(self._full(relpath))

    def read_bytes(self, relpath: str) -> bytes:
        return self._full(relpath).read_bytes()

    def write_bytes(self, relpath: str, data: Any, *, fsync: bool = True) -> None:
        atomic_write_local(self._full(relpath), data, fsync=fsync)

    def remove(self, relpath: str) -> None:
        self._full(relpath).unlink(missing_ok=True)

    def remove_empty_folder(self, relpath: str) -> None:
        with contextlib.suppress(OSError):
            self._full(relpath).rmdir()

    def exists(self, relpath: str) -> bool:
        return self._full(relpath).exists()

    def files(self, prefix: str = "") -> Iterator[FileInfo]:
        base = self._full(prefix) if prefix else self.root
        for folder, _dirs, names in os.walk(base):
            for name in names:
                full = os.path.join(folder, name)
                try:
                    st = os.lstat(full)
                except OSError:  # removed while walking
                    continue
                if os.path.islink(full):
                    continue
                yield FileInfo(Path(full).relative_to(self.root).as_posix(), st.st_size, st.st_mtime)

    def read_pointer(self, relpath: str) -> tuple[bytes | None, str | None]:
        try:
            data = self.read_bytes(relpath)
        except FileNotFoundError:
            return None, None
        return data, hashlib.sha256(data).hexdigest()

    def write_pointer(self, relpath: str, data: bytes, *, token: str | None) -> None:
        # Writers of a local root hold ``lock`` (flock) around read and write: the rename suffices.
        self.write_bytes(relpath, data, fsync=True)

    @contextlib.contextmanager
    def lock(self, relpath: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self._full(relpath), "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# S3 (any S3-compatible store) through fsspec/s3fs
# --------------------------------------------------------------------------------------------


def s3_filesystem() -> Any:
    """The process's s3fs filesystem (fsspec caches one instance per arguments and process).

    Listings are not cached: another machine may have written since. The endpoint is passed
    explicitly when set, so older botocore releases that ignore ``AWS_ENDPOINT_URL`` work too.
    """
    import fsspec

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs: dict[str, Any] = {"use_listings_cache": False}
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    return fsspec.filesystem("s3", **kwargs)


def _precondition_failed(exc: BaseException) -> bool:
    """s3fs turns 412 Precondition Failed (and 409 ConditionalRequestConflict) into OSErrors; the
    botocore error is the cause."""
    cause = exc.__cause__
    code = str(((getattr(cause, "response", None) or {}).get("Error") or {}).get("Code", ""))
    return code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


class S3Location(Location):
    remote = True

    def __init__(self, url: str):
        root = storage_root(url)
        assert isinstance(root, str)
        self.url = root
        self.bucket_path = root.split("://", 1)[1]  # "bucket/prefix"
        self.bucket = self.bucket_path.split("/", 1)[0]
        self._fs: Any = None

    @property
    def fs(self) -> Any:
        if self._fs is None:
            self._fs = s3_filesystem()
        return self._fs

    def key(self, relpath: str) -> str:
        """``bucket/prefix/relpath`` (fsspec's form, without the scheme)."""
        return f"{self.bucket_path}/{_clean(relpath)}"

    def path(self, relpath: str) -> str:
        return f"{self.url}/{_clean(relpath)}"

    def _split(self, relpath: str) -> tuple[str, str]:
        bucket, _, key = self.key(relpath).partition("/")
        return bucket, key

    def read_bytes(self, relpath: str) -> bytes:
        try:
            return self.fs.cat_file(self.key(relpath))
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path(relpath)} does not exist") from None

    def read_many(self, relpaths: Iterable[str]) -> dict[str, bytes]:
        rels = list(relpaths)
        out: dict[str, bytes] = {}
        for i in range(0, len(rels), READ_BATCH):
            batch = rels[i:i + READ_BATCH]
            keys = {self.key(rel): rel for rel in batch}
            if len(keys) == 1:
                out.update({rel: self.read_bytes(rel) for rel in batch})
                continue
            got = self.fs.cat(list(keys), on_error="return")
            for key, value in got.items():
                if isinstance(value, BaseException):
                    if isinstance(value, FileNotFoundError):
                        raise FileNotFoundError(f"{self.path(keys[key])} does not exist") from None
                    raise value
                out[keys[key]] = value
        return out

    def write_bytes(self, relpath: str, data: Any, *, fsync: bool = True) -> None:
        # one PUT (a multipart upload past 100 MB) is atomic; fsync has no meaning here
        self.fs.pipe_file(self.key(relpath), _as_bytes(data))

    def write_many(self, blobs: dict[str, Any]) -> None:
        # s3fs uploads a batch concurrently (one PUT each); a failed batch is deleted again
        items = list(blobs.items())
        for i in range(0, len(items), READ_BATCH):
            batch = {self.key(rel): _as_bytes(data) for rel, data in items[i:i + READ_BATCH]}
            try:
                self.fs.pipe(batch)
            except BaseException:
                with contextlib.suppress(OSError):
                    self.fs.rm(list(batch))
                for rel, _data in items[:i]:
                    with contextlib.suppress(OSError):
                        self.remove(rel)
                raise

    def remove(self, relpath: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.key(relpath))

    def exists(self, relpath: str) -> bool:
        return bool(self.fs.exists(self.key(relpath)))

    def files(self, prefix: str = "") -> Iterator[FileInfo]:
        base = self.key(prefix) if prefix else self.bucket_path
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return
        start = len(self.bucket_path) + 1
        for name, info in sorted(found.items()):
            if info.get("type") != "file":
                continue
            modified = info.get("LastModified")
            mtime = modified.timestamp() if hasattr(modified, "timestamp") else time.time()
            yield FileInfo(name[start:], int(info.get("size") or 0), mtime)

    def _get(self, relpath: str) -> tuple[bytes | None, str | None]:
        from fsspec.asyn import sync

        bucket, key = self._split(relpath)

        async def get() -> tuple[bytes | None, str | None]:
            try:
                resp = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)
            except FileNotFoundError:
                return None, None
            try:
                return await resp["Body"].read(), resp["ETag"]
            finally:
                resp["Body"].close()

        return sync(self.fs.loop, get)

    def _put(self, relpath: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> None:
        bucket, key = self._split(relpath)
        condition: dict[str, str] = {}
        if if_match is not None:
            condition["IfMatch"] = if_match
        elif if_none_match:
            condition["IfNoneMatch"] = "*"
        try:
            self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
        except FileExistsError as exc:  # 412 on If-None-Match
            raise CommitConflict(f"{self.path(relpath)} was created by another writer") from exc
        except OSError as exc:
            if _precondition_failed(exc):
                raise CommitConflict(f"{self.path(relpath)} was replaced by another writer") from exc
            raise

    def read_pointer(self, relpath: str) -> tuple[bytes | None, str | None]:
        return self._get(relpath)

    def write_pointer(self, relpath: str, data: bytes, *, token: str | None) -> None:
        self._put(relpath, _as_bytes(data), if_match=token, if_none_match=token is None)

    @contextlib.contextmanager
    def lock(self, relpath: str) -> Iterator[None]:
        """A lease: ``relpath`` created with If-None-Match (or taken over with If-Match once its
        ``expires`` passed), deleted on release if it is still this holder's."""
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        deadline = time.monotonic() + _lock_ttl_s + 60
        while True:
            body = json.dumps({"owner": owner, "expires": time.time() + _lock_ttl_s}).encode()
            try:
                self._put(relpath, body, if_none_match=True)
                break
            except CommitConflict:
                pass
            held, etag = self._get(relpath)
            if held is None:
                continue  # released meanwhile
            try:
                expired = float(json.loads(held).get("expires", 0)) < time.time()
            except (ValueError, TypeError, AttributeError):
                expired = True  # unreadable lease: not anyone's
            if expired:
                try:
                    self._put(relpath, body, if_match=etag)
                    break
                except CommitConflict:
                    pass  # another waiter took it first
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.path(relpath)} is held by another writer ({held[:200]!r})")
            time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            held, _etag = self._get(relpath)
            if held is not None and owner.encode() in held:
                self.remove(relpath)


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    to_pybytes = getattr(data, "to_pybytes", None)  # pyarrow.Buffer
    return to_pybytes() if to_pybytes is not None else bytes(data)


def location(root: str | os.PathLike) -> Location:
    """The :class:`Location` of a root setting (``Path``, local path string or ``s3://`` URL)."""
    if isinstance(root, Location):
        return root
    value = storage_root(root)
    return S3Location(value) if isinstance(value, str) else LocalLocation(value)

