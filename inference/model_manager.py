"""The model manager: which model versions this process serves, loaded once and kept warm.

* **Active versions.** The registry's active version of each model is re-read at most every
  ``ML_ACTIVE_VERSION_CHECK_SECONDS`` (one small query). When a newer version was promoted, the
  first request that notices loads it (artifact sha256 verified by ``registry.selectors.load_version``)
  while concurrent requests keep being answered by the old version; the new one is swapped in under
  a lock once it is ready. A promoted version that fails to load leaves the old one serving (and
  ``/health`` degraded): no request fails because of a promotion.
* **Loaded versions** are kept in an LRU of at most ``ML_MAX_LOADED_MODELS``; an ensemble's members
  are the member versions it was fitted with (pinned), loaded like any other version.
* **Failures** are remembered per version for ``ML_MODEL_RETRY_SECONDS`` (no retry storm on a broken
  artifact) and reported by ``status()``; a request for a model that cannot load gets
  :class:`ModelUnavailable` (503) with the reason, never a 500.
* **Load / unload on request.** ``unload(name)`` takes a model out of direct serving in every
  process: the flag lives in the shared cache and each process reads it with the active versions.
  ``load(name)`` clears it and loads the active version now.

One manager per process (``get_manager()``); each server worker loads lazily on its first request.
It then freezes its heap for the garbage collector (``heap_freeze``), again after each later load or
unload.
"""

from __future__ import annotations

import copy
import gc
import logging
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from django.core.cache import cache
from django.utils import timezone

from inference import conf, signals
from inference.exceptions import Conflict, ModelUnavailable, NotFound
from registry.models import ModelVersion
from registry.selectors import load_version, registered_models, versions

logger = logging.getLogger(__name__)

UNLOADED_KEY = "inference:models:unloaded"

# how each learner takes its input
VECTOR = "vector"  # one row of feature columns (xgboost)
SEQUENCE = "sequence"  # the ticker's last sequence_length rows; a lone vector is a one-day sequence (lstm)
TICKER = "ticker"  # ticker, date and price only (prophet)
ENSEMBLE = "ensemble"  # its members' predictions for the same tickers
KINDS = {
    "xgboost_classifier": VECTOR,
    "lstm_predictor": SEQUENCE,
    "prophet_forecaster": TICKER,
    "ensemble": ENSEMBLE,
}


@dataclass
class ServedModel:
    """A loaded model version, immutable once published to the manager."""

    name: str
    version_id: int
    version: str
    model_type: str
    kind: str
    learner: Any
    loaded_at: datetime
    horizon_days: int
    feature_columns: list[str]
    feature_set_version_id: int | None
    score: float | None
    members: dict[str, int] = field(default_factory=dict)  # member model name -> pinned version id
    load_seconds: float = 0.0
    quantization: dict[str, Any] = field(default_factory=dict)
    onnx: dict[str, Any] = field(default_factory=dict)  # ML_LSTM_ONNX: serving through ONNX Runtime

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def accepts_vectors(self) -> bool:
        return self.kind in (VECTOR, SEQUENCE)


@dataclass
class LoadFailure:
    name: str
    label: str
    message: str
    at: float


def model_load_failure_message(exc: BaseException, label: str) -> str:
    """``Failed to load model name@version: <error>`` (the registry's own messages start that way)."""
    text = str(exc).strip()
    if text.startswith("ERROR: "):
        text = text[len("ERROR: "):]
    if text.startswith("Failed to load model"):
        return text
    return f"Failed to load model {label}: {type(exc).__name__}: {text}"


def _score(version: Any) -> float | None:
    gate = version.gate or {}
    value = gate.get("score")
    if isinstance(value, int | float) and np.isfinite(value):
        return float(value)
    return None


# --------------------------------------------------------------------------------------------------
# performance settings applied at load


def _tune_threads(learner: Any) -> None:
    threads = conf.inference_threads()
    name = getattr(learner, "name", "")
    if name == "xgboost_classifier" and getattr(learner, "booster", None) is not None:
        learner.n_jobs = threads
        learner.booster.set_param({"nthread": threads})
    elif name == "lstm_predictor":
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _torch_runner(net: Any) -> Any:
    """``net`` as a function of float32 windows (n, L, F) -> numpy outputs, without gradients."""
    import torch

    def run(windows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(windows)).float().numpy()

    return run


def _best_of(run: Any, probe: np.ndarray, repeats: int) -> tuple[float, np.ndarray]:
    """The fastest of ``repeats`` calls of ``run(probe)`` in ms, and its output."""
    best, out = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        out = run(probe)
        best = min(best, time.perf_counter() - started)
    return best * 1000.0, np.asarray(out)


def quantization_check(learner: Any, *, rows: int = 256, repeats: int = 5, seed: int = 0) -> dict[str, Any]:
    """Dynamic int8 quantization of an LSTM learner's network (``nn.LSTM`` and ``nn.Linear``), timed
    and compared with float32 on a seeded probe batch of standardized inputs.

    Returns ``{"float_ms", "quantized_ms", "max_abs_diff", "tolerance", "faster", "close", "net"}``;
    ``max_abs_diff`` is in target standard deviations (the network's output units).
    """
    import torch
    from torch import nn

    net = learner._net
    length = learner.params["sequence_length"]
    n_inputs = len(learner.feature_columns)
    with warnings.catch_warnings():  # torch marks torch.ao.quantization deprecated (torchao replaces it)
        warnings.simplefilter("ignore")
        qnet = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(net).to("cpu").eval(), {nn.LSTM, nn.Linear}, dtype=torch.qint8
        )
    rng = np.random.default_rng(seed)
    probe = rng.standard_normal((rows, length, n_inputs)).astype(np.float32)
    float_net = net.to("cpu").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        float_ms, ref = _best_of(_torch_runner(float_net), probe, repeats)
        quant_ms, got = _best_of(_torch_runner(qnet), probe, repeats)
    diff = float(np.max(np.abs(ref - got))) if len(ref) else 0.0
    tolerance = conf.lstm_quantize_tolerance()
    return {
        "float_ms": float_ms,
        "quantized_ms": quant_ms,
        "max_abs_diff": diff,
        "tolerance": tolerance,
        "faster": quant_ms < float_ms,
        "close": diff <= tolerance,
        "rows": rows,
        "net": qnet,
    }


def onnx_check(learner: Any, *, repeats: int = 20, seed: int = 0) -> dict[str, Any]:
    """The LSTM learner's network exported to ONNX and run by ONNX Runtime, timed against torch on
    seeded probe windows of 1 and 256 rows (best of ``repeats``).

    Returns ``{"torch_ms_1", "onnx_ms_1", "torch_ms_256", "onnx_ms_256", "max_abs_diff", "tolerance",
    "faster", "close", "runner"}``: ``faster`` when ONNX Runtime wins on one row (the API's call) and
    is at most 10% slower on 256 rows (the daily batch); ``max_abs_diff`` in target standard deviations.
    """
    import torch  # heavy (~1 s): only the ONNX check needs it in the API process

    from training.learners.lstm_onnx import OnnxLSTMRunner, export_onnx  # heavy: onnx, onnxruntime

    length, n_inputs = learner.params["sequence_length"], learner._net.lstm.input_size
    runner = OnnxLSTMRunner(model=export_onnx(learner._net, sequence_length=length, n_inputs=n_inputs),
                            threads=torch.get_num_threads())
    by_torch = _torch_runner(learner._net.to("cpu").eval())
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"runner": runner, "max_abs_diff": 0.0}
    for rows in (1, 256):
        probe = rng.standard_normal((rows, length, n_inputs)).astype(np.float32)
        out[f"torch_ms_{rows}"], ref = _best_of(by_torch, probe, repeats)
        out[f"onnx_ms_{rows}"], got = _best_of(runner, probe, repeats)
        out["max_abs_diff"] = max(out["max_abs_diff"], float(np.max(np.abs(ref - got))))
    out["tolerance"] = conf.lstm_quantize_tolerance()
    out["faster"] = out["onnx_ms_1"] < out["torch_ms_1"] and out["onnx_ms_256"] <= 1.1 * out["torch_ms_256"]
    out["close"] = out["max_abs_diff"] <= out["tolerance"]
    return out


def _maybe_onnx(learner: Any) -> dict[str, Any]:
    if getattr(learner, "name", "") != "lstm_predictor" or not conf.lstm_onnx():
        return {}
    if getattr(learner, "device", None) is not None and learner.device.type != "cpu":
        return {"used": False, "reason": "ONNX Runtime is used for CPU serving only"}
    try:
        check = onnx_check(learner)
    except Exception as exc:  # noqa: BLE001 - an optimization, never a failure (e.g. onnxruntime missing)
        logger.warning("LSTM ONNX check failed: %s", exc)
        return {"used": False, "reason": f"check failed: {exc}"}
    runner = check.pop("runner")
    check["used"] = check["faster"] and check["close"]
    if check["used"]:
        learner.use_runner(runner)
    else:
        check["reason"] = "not faster" if not check["faster"] else "outside the tolerance"
    logger.info("LSTM through ONNX Runtime %s: 1 row %.2f ms (torch %.2f), 256 rows %.1f ms (torch %.1f), "
                "max |diff| %.1e", "used" if check["used"] else f"not used ({check['reason']})", check["onnx_ms_1"],
                check["torch_ms_1"], check["onnx_ms_256"], check["torch_ms_256"], check["max_abs_diff"])
    return check


def _maybe_quantize(learner: Any) -> dict[str, Any]:
    if getattr(learner, "name", "") != "lstm_predictor" or not conf.lstm_quantize():
        return {}
    try:
        if getattr(learner, "device", None) is not None and learner.device.type != "cpu":
            return {"used": False, "reason": "quantization is for CPU serving"}
        check = quantization_check(learner)
    except Exception as exc:  # noqa: BLE001 - quantization is an optimization, never a failure
        logger.warning("LSTM quantization check failed: %s", exc)
        return {"used": False, "reason": f"check failed: {exc}"}
    qnet = check.pop("net")
    used = check["faster"] and check["close"]
    if used:
        learner._net = qnet
    check["used"] = used
    if not used:
        check["reason"] = "not faster" if not check["faster"] else "outside the tolerance"
    return check


# --------------------------------------------------------------------------------------------------
# load failures are signalled (monitoring opens the ``model_load_failed`` alert), a later good load too

_reported: set[str] = set()


def _report_failure(name: str, message: str) -> None:
    try:
        signals.model_load_failed.send(sender=ModelManager, model=name, error=message)
        _reported.add(name)
    except Exception as exc:  # noqa: BLE001 - monitoring must never break serving
        logger.warning("could not record the load failure of %s: %s", name, exc)


def _report_recovery(name: str) -> None:
    if name not in _reported:  # nothing to resolve (and no database access on the hot path)
        return
    try:
        signals.model_load_recovered.send(sender=ModelManager, model=name)
        _reported.discard(name)
    except Exception as exc:  # noqa: BLE001
        logger.warning("could not clear the load failure of %s: %s", name, exc)


def heap_freeze(*, full: bool) -> None:
    """Put every object alive now out of the cyclic garbage collector's reach (``gc.freeze``), after
    collecting the young garbage (what the loads just left) or, with ``full``, every generation with
    an earlier freeze undone (so that the cycles of a dropped model can go).

    Why: a worker that has loaded its models holds about 400,000 tracked objects (Django, pandas,
    torch, the models). Python's full collection walks every one of them, 100-200 ms on the bench
    machine, every few seconds under load, and every request queued on the worker waits for it: the
    p99 by ticker was 80-120 ms at a p50 of 8 ms. Frozen objects are skipped, so a full collection
    walks only what requests created since; they are still freed by reference counting. A young
    collection costs about a millisecond, a full one about 0.2 s (only when a model is dropped)."""
    if full:
        gc.unfreeze()
        gc.collect()
    else:
        gc.collect(1)
    gc.freeze()


# --------------------------------------------------------------------------------------------------


class ModelManager:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._loaded: OrderedDict[int, ServedModel] = OrderedDict()  # version id -> model, LRU order
        self._loading: dict[int, threading.Lock] = {}
        self._failures: dict[int, LoadFailure] = {}
        self._active: dict[str, Any] = {}  # model name -> its active ModelVersion
        self._registered: dict[str, str] = {}  # model name -> model type
        self._serving: dict[str, int] = {}  # model name -> version id last served (the fallback)
        self._unloaded: set[str] = set()
        self._checked_at = 0.0
        self._started = False
        self._heap_frozen = False  # set once this process has loaded its models (``ensure_started``)

    # ---------------------------------------------------------------------------------- registry

    def refresh(self, *, force: bool = False) -> None:
        """Re-read the active versions and the shared unload flags when due (or now with ``force``)."""
        now = time.monotonic()
        if not force and self._checked_at and now - self._checked_at < conf.active_check_seconds():
            return
        active = {v.model.name: v for v in versions(statuses=[ModelVersion.Status.ACTIVE])}
        registered = dict(registered_models().values_list("name", "model_type"))
        try:
            unloaded = set(cache.get(UNLOADED_KEY) or [])
        except Exception:  # noqa: BLE001 - a cache outage keeps the last known flags
            unloaded = self._unloaded
        with self._lock:
            self._active, self._registered, self._unloaded = active, registered, unloaded
            self._checked_at = now

    def ensure_started(self) -> None:
        """Load every active model once per process (the first request pays for it)."""
        if self._started:
            return
        self.refresh()
        with self._lock:
            if self._started:
                return
            self._started = True
            names = [n for n in self._active if n not in self._unloaded]
        for name in names[: conf.max_loaded_models()]:
            try:
                served = self.get(name)
                for version_id in served.members.values():
                    self.get_version(version_id)
            except (ModelUnavailable, NotFound, Conflict):
                pass  # recorded in the failures, reported by /health
        heap_freeze(full=False)
        self._heap_frozen = True

    # ---------------------------------------------------------------------------------- serving

    def get(self, name: str) -> ServedModel:
        """The served model of ``name`` (its active version, or the previous one while the newly
        promoted version loads or if it cannot load)."""
        self.refresh()
        with self._lock:
            if name in self._unloaded:
                raise ModelUnavailable(
                    f"model {name!r} was unloaded; POST /models/{name}/load to serve it again", field="model_name"
                )
            version = self._active.get(name)
            if version is None:
                if name in self._registered:
                    raise ModelUnavailable(
                        f"model {name!r} has no active version (train it and promote one)", field="model_name"
                    )
                raise NotFound(self._unknown(name), field="model_name")
            served = self._loaded.get(version.pk)
            if served is not None:
                self._loaded.move_to_end(version.pk)
                self._serving[name] = version.pk
                return served
            previous_id = self._serving.get(name)
            previous = self._loaded.get(previous_id) if previous_id is not None else None
        return self._load_or_fallback(version, previous=previous)

    def get_version(self, version_id: int) -> ServedModel:
        """A specific version (an ensemble's pinned member), loaded if needed."""
        with self._lock:
            served = self._loaded.get(version_id)
            if served is not None:
                self._loaded.move_to_end(version_id)
                return served
        try:
            version = ModelVersion.objects.select_related("model").get(pk=version_id)
        except ModelVersion.DoesNotExist:
            raise ModelUnavailable(f"model version id {version_id} no longer exists in the registry") from None
        return self._load_or_fallback(version, previous=None)

    def _unknown(self, name: str) -> str:
        known = ", ".join(sorted(self._registered)) or "none registered yet"
        return f"unknown model {name!r} (known: {known})"

    def _load_or_fallback(self, version: Any, *, previous: ServedModel | None) -> ServedModel:
        failure = self._failures.get(version.pk)
        if failure is not None and time.monotonic() - failure.at < conf.retry_seconds():
            if previous is not None:
                return previous
            raise ModelUnavailable(f"{failure.message} (see GET /health)", field=None)
        lock = self._version_lock(version.pk)
        if previous is not None:
            if not lock.acquire(blocking=False):
                return previous  # another request is loading the new version: keep serving the old one
        else:
            lock.acquire()
        try:
            with self._lock:
                served = self._loaded.get(version.pk)
            if served is None:
                try:
                    served = self._load(version)
                except Exception as exc:  # noqa: BLE001 - every load failure becomes a recorded 503
                    label = f"{version.model.name}@{version.version}"
                    message = model_load_failure_message(exc, label)
                    logger.error("ERROR: %s", message)
                    with self._lock:
                        self._failures[version.pk] = LoadFailure(version.model.name, label, message, time.monotonic())
                    _report_failure(version.model.name, message)
                    if previous is not None:
                        return previous
                    raise ModelUnavailable(f"{message} (see GET /health)") from exc
            with self._lock:
                if self._active.get(served.name) is not None and self._active[served.name].pk == served.version_id:
                    self._serving[served.name] = served.version_id
            return served
        finally:
            lock.release()

    def _version_lock(self, version_id: int) -> threading.Lock:
        with self._lock:
            lock = self._loading.get(version_id)
            if lock is None:
                lock = self._loading[version_id] = threading.Lock()
            return lock

    def _load(self, version: Any) -> ServedModel:
        started = time.perf_counter()
        learner = load_version(version=version)  # verifies size and sha256 first
        name = version.model.name
        learner_name = getattr(learner, "name", name)
        kind = KINDS.get(learner_name, VECTOR)
        members: dict[str, int] = {}
        if kind == ENSEMBLE:
            pinned = {m.model.name: m.pk for m in version.members.select_related("model")}
            for member in getattr(learner, "members", None) or []:
                if member in pinned:
                    members[member] = pinned[member]
                else:  # an ensemble registered without its members: their active versions
                    active = self._active.get(member)
                    if active is None:
                        raise ModelUnavailable(f"ensemble member {member!r} has no pinned or active version")
                    members[member] = active.pk
        _tune_threads(learner)
        quantization = _maybe_quantize(learner)
        onnx = {} if quantization.get("used") else _maybe_onnx(learner)
        columns = list(getattr(learner, "feature_columns", None) or version.feature_columns or [])
        served = ServedModel(
            name=name,
            version_id=version.pk,
            version=version.version,
            model_type=version.model_type or version.model.model_type,
            kind=kind,
            learner=learner,
            loaded_at=timezone.now(),
            horizon_days=int(getattr(learner, "horizon", None) or version.horizon_days),
            feature_columns=columns,
            feature_set_version_id=version.feature_set_version_id,
            score=_score(version),
            members=members,
            load_seconds=time.perf_counter() - started,
            quantization=quantization,
            onnx=onnx,
        )
        with self._lock:
            self._loaded[version.pk] = served
            self._loaded.move_to_end(version.pk)
            self._failures.pop(version.pk, None)
            cap = conf.max_loaded_models()
            evicted_any = len(self._loaded) > cap
            while len(self._loaded) > cap:
                evicted_id, evicted = self._loaded.popitem(last=False)
                logger.info("unloaded %s (least recently used; ML_MAX_LOADED_MODELS=%d)", evicted.label, cap)
        logger.info("loaded %s in %.2fs", served.label, served.load_seconds)
        if self._heap_frozen:  # a version promoted after this process started
            heap_freeze(full=evicted_any)
        _report_recovery(name)
        return served

    # ---------------------------------------------------------------------------------- load/unload

    def load(self, name: str) -> ServedModel:
        """Serve ``name`` again (every process) and load its active version here, now."""
        self.refresh(force=True)
        with self._lock:
            if name not in self._registered:
                raise NotFound(self._unknown(name), field="model_name")
            version = self._active.get(name)
            if version is None:
                raise Conflict(f"model {name!r} has no active version to load", field="model_name")
            self._failures.pop(version.pk, None)  # an explicit load retries at once
            self._unloaded.discard(name)
        self._set_shared_unloaded(name, unloaded=False)
        served = self.get(name)
        for version_id in served.members.values():
            self._failures.pop(version_id, None)
            self.get_version(version_id)
        return served

    def unload(self, name: str) -> list[str]:
        """Stop serving ``name`` in every process; returns the versions this process dropped."""
        self.refresh(force=True)
        with self._lock:
            if name not in self._registered:
                raise NotFound(self._unknown(name), field="model_name")
            self._unloaded.add(name)
            dropped = [vid for vid, served in self._loaded.items() if served.name == name]
            labels = [self._loaded.pop(vid).label for vid in dropped]
            self._serving.pop(name, None)
        self._set_shared_unloaded(name, unloaded=True)
        if dropped and self._heap_frozen:
            heap_freeze(full=True)
        return labels

    def _set_shared_unloaded(self, name: str, *, unloaded: bool) -> None:
        current = set(cache.get(UNLOADED_KEY) or [])
        current = current | {name} if unloaded else current - {name}
        cache.set(UNLOADED_KEY, sorted(current), None)

    # ---------------------------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        """Per registered model: active version, what this process serves, failures."""
        self.refresh()
        now = time.monotonic()
        with self._lock:
            loaded = list(self._loaded.values())
            models = {}
            for name in sorted(set(self._registered) | set(self._active)):
                version = self._active.get(name)
                serving_id = self._serving.get(name)
                serving = self._loaded.get(serving_id) if serving_id is not None else None
                active_loaded = self._loaded.get(version.pk) if version is not None else None
                failure = self._failures.get(version.pk) if version is not None else None
                if failure is not None and now - failure.at >= conf.retry_seconds():
                    failure = None if active_loaded is not None else failure
                member_failures = []
                if active_loaded is not None:
                    for member_id in active_loaded.members.values():
                        if member_id in self._failures:
                            member_failures.append(f"{name} cannot serve: {self._failures[member_id].message}")
                models[name] = {
                    "name": name,
                    "model_type": self._registered.get(name, ""),
                    "active": version,
                    "active_loaded": active_loaded,
                    "serving": serving if serving is not None else active_loaded,
                    "unloaded": name in self._unloaded,
                    "error": failure.message if failure is not None else (member_failures[0] if member_failures else None),
                }
            return {
                "models": models,
                "loaded": loaded,
                "max_loaded": conf.max_loaded_models(),
            }

    def reset(self) -> None:
        """Forget everything (tests; a new process starts this way)."""
        with self._lock:
            self.__init__()
            _reported.clear()
            gc.unfreeze()


_MANAGER = ModelManager()


def get_manager() -> ModelManager:
    return _MANAGER
