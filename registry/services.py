"""Writes to the model registry: register versions (semver, artifacts) and the lifecycle (promotion,
deprecate, archive, rollback), each change with a deployment event. Verified artifact reads are
``registry.selectors``' (``load_version``, ``load_oof``, ``predict_version``).

Semantic versions, computed from the model's newest version:

* **major** (``x+1.0.0``): the feature set version, the target, or the model type changed;
* **minor** (``x.y+1.0``): a retrain on different data (another ``training_data_hash``) or with
  other hyperparameters;
* **patch** (``x.y.z+1``): a re-run on the same data with the same settings.

Promotion (``promote``) passes the gate first (``registry.gate_decision``; ``force=True`` skips it and
records that it was forced). A version that fails stays staging; the reason goes to ``status_reason`` and a ``gate_rejected``
deployment event.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import platform
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from django.conf import settings
from django.core import serializers
from django.db import transaction
from django.utils import timezone

from features.common import jsonable
from registry import artifacts, loaders
from registry.artifacts import ArtifactIntegrityError
from registry.gate_decision import GateDecision, evaluate_gate
from registry.models import DeploymentEvent, ModelVersion, RegisteredModel
from registry.selectors import (
    active_version,
    evaluation_source_id,
    rollback_target,
    version_label,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ArtifactIntegrityError",
    "RegistryError",
    "archive",
    "deprecate",
    "promote",
    "promote_refit",
    "register_version",
    "registry_export",
    "rollback",
    "same_hyperparameters",
]

LIBRARIES = {
    "numpy": "numpy",
    "pandas": "pandas",
    "scipy": "scipy",
    "xgboost": "xgboost",
    "torch": "torch",
    "prophet": "prophet",
    "cmdstanpy": "cmdstanpy",
    "talib": "TA-Lib",
    "django": "Django",
}
_COST_QUANTUM = Decimal("0.000001")


class RegistryError(Exception):
    """A lifecycle change that is not allowed (e.g. archiving the active version)."""


# --------------------------------------------------------------------------------------------------
# provenance


@lru_cache(maxsize=1)
def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else ""


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for key, dist in LIBRARIES.items():
        try:
            found[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[key] = ""
    return found


# --------------------------------------------------------------------------------------------------
# semantic versions


@dataclass(frozen=True)
class VersionBump:
    major: int
    minor: int
    patch: int
    why: str

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def next_model_version(
    *,
    previous: ModelVersion | None,
    feature_set_version_id: int | None,
    target: str,
    model_type: str,
    training_data_hash: str,
    hyperparameters: Mapping[str, Any],
) -> VersionBump:
    if previous is None:
        return VersionBump(1, 0, 0, "first version")
    major, minor, patch = previous.major, previous.minor, previous.patch
    reasons = []
    if previous.feature_set_version_id != feature_set_version_id:
        reasons.append(f"feature set version {previous.feature_set_version_id} -> {feature_set_version_id}")
    if previous.target != target:
        reasons.append(f"target {previous.target} -> {target}")
    if (previous.model_type or previous.model.model_type) != model_type:
        reasons.append(f"model type {previous.model_type or previous.model.model_type} -> {model_type}")
    if reasons:
        return VersionBump(major + 1, 0, 0, "major: " + "; ".join(reasons))
    if previous.training_data_hash != training_data_hash:
        return VersionBump(major, minor + 1, 0, "minor: retrained on new data")
    if not same_hyperparameters(previous.hyperparameters, hyperparameters):
        return VersionBump(major, minor + 1, 0, "minor: hyperparameters changed")
    return VersionBump(major, minor, patch + 1, "patch: re-run on the same data")


def same_hyperparameters(a: Any, b: Any) -> bool:
    """Equal as stored (JSON, keys in any order): what makes two fits the same procedure."""
    return json.dumps(jsonable(a), sort_keys=True) == json.dumps(jsonable(b), sort_keys=True)


def _usd(value: float | Decimal) -> Decimal:
    return Decimal(str(value)).quantize(_COST_QUANTUM)


def _event(version: ModelVersion, *, action: str, from_status: str, to_status: str, actor: str,
           reason: str) -> DeploymentEvent:
    return DeploymentEvent.objects.create(
        version=version, action=action, from_status=from_status, to_status=to_status,
        actor=(actor or "unknown")[:150], reason=reason,
    )


# --------------------------------------------------------------------------------------------------
# register / load


def register_version(
    *,
    model_name: str,
    learner: loaders.StoredLearner,
    feature_set_version: Any = None,
    feature_columns: Sequence[str] = (),
    target: str,
    horizon: int,
    metrics: Mapping[str, float],
    baselines: Mapping[str, Mapping[str, float]] | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    train_start: date | None = None,
    train_end: date | None = None,
    evaluation_start: date | None = None,
    evaluation_end: date | None = None,
    training_data_hash: str = "",
    training_run: Any = None,
    parent: ModelVersion | None = None,
    members: Sequence[ModelVersion] = (),
    oof: pd.DataFrame | None = None,
    evaluation: Mapping[str, Any] | None = None,
    tickers: int = 0,
    data_sources: Sequence[Any] = (),
    drift_reference: Mapping[str, Any] | None = None,
    training_seconds: float = 0.0,
    cost_usd: float | Decimal = 0,
    actor: str = "pipeline",
    description: str = "",
) -> ModelVersion:
    """Store ``learner`` as the next version of ``model_name`` (staging), artifact written atomically.

    ``parent`` defaults to the model's newest version. ``oof`` (the walk-forward out-of-sample
    table, ``registry.artifacts.OOF_FLOAT_COLUMNS``) is what the promotion gate and the ensemble
    read; a version without it can only be promoted with ``force``.
    """
    model_type = str(getattr(learner, "model_type", "")) or "unknown"
    hyperparameters = jsonable(dict(hyperparameters or getattr(learner, "params", {}) or {}))
    data = learner.to_bytes()
    oof_data = artifacts.oof_to_bytes(oof) if oof is not None else None
    root = settings.ML_MODELS_PATH
    written: list[str] = []
    try:
        with transaction.atomic():
            registered, _ = RegisteredModel.objects.get_or_create(
                name=model_name, defaults={"model_type": model_type, "description": description}
            )
            # Serialize registrations of one model: the version number is read, then written.
            registered = RegisteredModel.objects.select_for_update().get(pk=registered.pk)
            previous = registered.versions.order_by("-major", "-minor", "-patch", "-id").first()
            fsv_id = getattr(feature_set_version, "pk", feature_set_version)
            bump = next_model_version(
                previous=previous, feature_set_version_id=fsv_id, target=target, model_type=model_type,
                training_data_hash=training_data_hash, hyperparameters=hyperparameters,
            )
            if registered.model_type != model_type:
                registered.model_type = model_type
                registered.save(update_fields=["model_type"])
            version = ModelVersion.objects.create(
                model=registered,
                version=bump.version,
                major=bump.major,
                minor=bump.minor,
                patch=bump.patch,
                status=ModelVersion.Status.STAGING,
                status_reason="registered; not yet gated",
                model_type=model_type,
                target=target,
                horizon_days=int(horizon),
                feature_set_version_id=fsv_id,
                feature_columns=list(feature_columns),
                hyperparameters=hyperparameters,
                metrics=jsonable(dict(metrics)),
                baselines=jsonable(dict(baselines or {})),
                data_sources=jsonable(list(data_sources)),
                train_start=train_start,
                train_end=train_end,
                evaluation_start=evaluation_start,
                evaluation_end=evaluation_end,
                tickers=int(tickers),
                training_data_hash=training_data_hash,
                git_commit=git_commit(),
                library_versions=library_versions(),
                training_seconds=float(training_seconds),
                cost_usd=_usd(cost_usd),
                drift_reference=jsonable(dict(drift_reference or {})),
                evaluation=jsonable(dict(evaluation or {})),
                parent=parent if parent is not None else previous,
                training_run=training_run,
            )
            if members:
                version.members.set(members)
            stored = artifacts.write_atomic(
                root=root, relpath=artifacts.relative_path(model_name=model_name, version_id=version.pk), data=data
            )
            written.append(stored.relpath)
            version.artifact_path, version.artifact_sha256, version.artifact_bytes = (
                stored.relpath, stored.sha256, stored.size,
            )
            if oof_data is not None:
                oof_file = artifacts.write_atomic(
                    root=root,
                    relpath=artifacts.relative_path(
                        model_name=model_name, version_id=version.pk, suffix=artifacts.OOF_SUFFIX
                    ),
                    data=oof_data,
                )
                written.append(oof_file.relpath)
                version.oof_path, version.oof_sha256, version.oof_bytes = (
                    oof_file.relpath, oof_file.sha256, oof_file.size,
                )
            version.save(update_fields=[
                "artifact_path", "artifact_sha256", "artifact_bytes", "oof_path", "oof_sha256", "oof_bytes",
            ])
            _event(version, action="register", from_status="", to_status=version.status, actor=actor,
                   reason=f"registered {model_name}@{bump.version} ({bump.why})")
    except BaseException:
        for relpath in written:
            artifacts.remove(root=root, relpath=relpath)
        raise
    return version


# --------------------------------------------------------------------------------------------------
# lifecycle


def _lock(version: ModelVersion) -> tuple[ModelVersion, ModelVersion | None]:
    """Lock the model row (serializes lifecycle changes), re-read the version and the active one."""
    RegisteredModel.objects.select_for_update().get(pk=version.model_id)
    fresh = ModelVersion.objects.select_for_update().select_related("model").get(pk=version.pk)
    current = (
        ModelVersion.objects.select_for_update()
        .select_related("model")
        .filter(model_id=version.model_id, status=ModelVersion.Status.ACTIVE)
        .first()
    )
    return fresh, current


def promote(*, version: ModelVersion, actor: str, reason: str = "", force: bool = False) -> GateDecision:
    """Make ``version`` active if it passes the gate (see the module docstring), else keep it staging.

    Returns the gate decision; ``decision.passed`` says whether it is now active. The previously
    active version is deprecated in the same transaction.
    """
    label = version_label(version)
    version.refresh_from_db()
    if version.status == ModelVersion.Status.ACTIVE:
        raise RegistryError(f"{label} is already active")
    if version.status == ModelVersion.Status.ARCHIVED:
        raise RegistryError(f"{label} is archived; archived versions cannot be promoted")
    active = active_version(model_name=version.model.name)
    if force:
        try:
            would = evaluate_gate(version=version, active=active)
            note = "it would have passed the gate" if would.passed else f"the gate said: {would.reason}"
        except Exception as exc:  # noqa: BLE001 - a forced promotion must not depend on the gate
            would, note = None, f"the gate could not run: {exc}"
        decision = GateDecision(
            passed=True, forced=True, metric=would.metric if would else "", threshold=would.threshold if would else 0,
            score_kind=would.score_kind if would else "", score=would.score if would else None,
            new_value=would.new_value if would else None, active_value=would.active_value if would else None,
            active_version=would.active_version if would else None, window=would.window if would else {},
            reason=f"{label} promoted past the gate by {actor}" + (f" ({reason})" if reason else "") + f"; {note}",
        )
    else:
        decision = evaluate_gate(version=version, active=active)
    with transaction.atomic():
        fresh, current = _lock(version)
        if (current.pk if current else None) != (active.pk if active else None) and not force:
            raise RegistryError(
                f"the active version of {version.model.name} changed while the gate ran; promote {label} again"
            )
        from_status = fresh.status
        fresh.gate = decision.to_dict()
        if not decision.passed:
            fresh.status_reason = decision.reason
            fresh.save(update_fields=["status_reason", "gate"])
            _event(fresh, action="gate_rejected", from_status=from_status, to_status=from_status, actor=actor,
                   reason=decision.reason + (f" (requested: {reason})" if reason else ""))
            version.refresh_from_db()
            return decision
        if current is not None:
            current.status = ModelVersion.Status.DEPRECATED
            current.status_reason = f"superseded by {label}"
            current.save(update_fields=["status", "status_reason"])
            _event(current, action="deprecate", from_status=ModelVersion.Status.ACTIVE,
                   to_status=ModelVersion.Status.DEPRECATED, actor=actor,
                   reason=f"superseded by {label}" + (f": {reason}" if reason else ""))
        fresh.status = ModelVersion.Status.ACTIVE
        fresh.status_reason = decision.reason
        fresh.activated_at = timezone.now()
        fresh.previous_active = current
        fresh.save(update_fields=["status", "status_reason", "gate", "activated_at", "previous_active"])
        _event(fresh, action="promote", from_status=from_status, to_status=ModelVersion.Status.ACTIVE, actor=actor,
               reason=decision.reason + (f" (requested: {reason})" if reason and not force else ""))
    version.refresh_from_db()
    return decision


def promote_refit(*, version: ModelVersion, source: ModelVersion, actor: str) -> GateDecision:
    """Make ``version``, a daily refit of ``source``'s procedure (same learner, hyperparameters,
    features and target, fitted on the newer data; it carries ``source``'s out-of-sample evaluation),
    active when the active version is ``source`` or another refit of it: the procedure the gate
    accepted is unchanged, so the gate is not asked again (it would compare identical out-of-sample
    tables). Otherwise it stays staging with the reason."""
    label, source_label = version_label(version), version_label(source)
    with transaction.atomic():
        fresh, current = _lock(version)
        passed = current is not None and evaluation_source_id(version=current) == source.pk
        gate = dict(source.gate or {})
        if passed:
            why = (f"{label} activated as a refit of {source_label} on newer data (train end {version.train_end}); "
                   f"it carries {source_label}'s out-of-sample evaluation, which passed the gate")
        else:
            why = (f"{label} stays staging: it refits {source_label}'s procedure, which is not the active one "
                   f"(active: {version_label(current) if current else 'none'})")
        decision = GateDecision(
            passed=passed, reason=why, metric=str(gate.get("metric", "")), threshold=float(gate.get("threshold") or 0),
            score_kind=str(gate.get("score_kind", "")), score=gate.get("score"), new_value=gate.get("new_value"),
            active_value=gate.get("active_value"), active_version=version_label(current) if current else None,
            window=dict(gate.get("window") or {}), details={"refit_of": source_label},
        )
        fresh.gate = decision.to_dict()
        fresh.status_reason = why
        if not passed:
            fresh.save(update_fields=["status_reason", "gate"])
            _event(fresh, action="gate_rejected", from_status=fresh.status, to_status=fresh.status, actor=actor,
                   reason=why)
        else:
            from_status = fresh.status
            current.status = ModelVersion.Status.DEPRECATED
            current.status_reason = f"superseded by {label} (daily refit)"
            current.save(update_fields=["status", "status_reason"])
            _event(current, action="deprecate", from_status=ModelVersion.Status.ACTIVE,
                   to_status=ModelVersion.Status.DEPRECATED, actor=actor, reason=f"superseded by {label} (daily refit)")
            fresh.status = ModelVersion.Status.ACTIVE
            fresh.activated_at = timezone.now()
            fresh.previous_active = current
            fresh.save(update_fields=["status", "status_reason", "gate", "activated_at", "previous_active"])
            _event(fresh, action="promote", from_status=from_status, to_status=ModelVersion.Status.ACTIVE,
                   actor=actor, reason=why)
    version.refresh_from_db()
    return decision


def registry_export(*, now: datetime | None = None) -> dict[str, Any]:
    """Write the registry's rows (models, versions with metrics, gate, lineage and members, deployment
    events) in Django's fixture format to ``ML_REGISTRY_PATH/registry-<UTC time>.json``, atomically;
    ``manage.py loaddata`` reads it back. Artifacts stay in ``ML_MODELS_PATH`` (their checksums are in
    the rows). Returns the file's name, size, checksum and row counts."""
    stamp = (now or timezone.now()).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    querysets = {"models": RegisteredModel.objects.order_by("pk"), "versions": ModelVersion.objects.order_by("pk"),
                 "events": DeploymentEvent.objects.order_by("pk")}
    rows = [row for qs in querysets.values() for row in json.loads(serializers.serialize("json", qs))]
    data = json.dumps(rows, indent=1, sort_keys=True).encode()
    stored = artifacts.write_atomic(root=settings.ML_REGISTRY_PATH, relpath=f"registry-{stamp}.json", data=data)
    return {"path": str(Path(settings.ML_REGISTRY_PATH) / stored.relpath), "bytes": stored.size,
            "sha256": stored.sha256, **{name: qs.count() for name, qs in querysets.items()}}


def rollback(*, model_name: str, actor: str, reason: str = "") -> ModelVersion:
    """Reactivate the version that was active before the current one, in one transaction."""
    current = active_version(model_name=model_name)
    if current is None:
        raise RegistryError(f"model {model_name!r} has no active version to roll back from")
    with transaction.atomic():
        fresh, current = _lock(current)
        if current is None:
            raise RegistryError(f"model {model_name!r} has no active version to roll back from")
        target = rollback_target(active=current)
        if target is None:
            raise RegistryError(
                f"{version_label(current)} has no previous active version to roll back to "
                "(it was the first one promoted, or the earlier ones are archived)"
            )
        target = ModelVersion.objects.select_for_update().select_related("model").get(pk=target.pk)
        why = f": {reason}" if reason else ""
        current.status = ModelVersion.Status.DEPRECATED
        current.status_reason = f"rolled back to {version_label(target)}{why}"
        current.save(update_fields=["status", "status_reason"])
        _event(current, action="rollback", from_status=ModelVersion.Status.ACTIVE,
               to_status=ModelVersion.Status.DEPRECATED, actor=actor,
               reason=f"rolled back to {version_label(target)}{why}")
        from_status = target.status
        target.status = ModelVersion.Status.ACTIVE
        target.status_reason = f"reactivated by rollback from {version_label(current)}{why}"
        target.activated_at = timezone.now()
        target.save(update_fields=["status", "status_reason", "activated_at"])
        _event(target, action="rollback", from_status=from_status, to_status=ModelVersion.Status.ACTIVE,
               actor=actor, reason=f"rollback from {version_label(current)}{why}")
    return target


def deprecate(*, version: ModelVersion, actor: str, reason: str = "") -> ModelVersion:
    """Take a version out of service (an active one leaves its model without an active version)."""
    with transaction.atomic():
        fresh, _ = _lock(version)
        if fresh.status in (ModelVersion.Status.DEPRECATED, ModelVersion.Status.ARCHIVED):
            raise RegistryError(f"{version_label(fresh)} is already {fresh.status}")
        from_status = fresh.status
        fresh.status = ModelVersion.Status.DEPRECATED
        fresh.status_reason = reason or f"deprecated by {actor}"
        fresh.save(update_fields=["status", "status_reason"])
        _event(fresh, action="deprecate", from_status=from_status, to_status=fresh.status, actor=actor,
               reason=reason)
    version.refresh_from_db()
    return version


def archive(*, version: ModelVersion, actor: str, reason: str = "") -> ModelVersion:
    """Retire a staging or deprecated version for good (kept for lineage, never promoted again)."""
    with transaction.atomic():
        fresh, _ = _lock(version)
        if fresh.status == ModelVersion.Status.ACTIVE:
            raise RegistryError(f"{version_label(fresh)} is active: roll back or deprecate it before archiving")
        if fresh.status == ModelVersion.Status.ARCHIVED:
            raise RegistryError(f"{version_label(fresh)} is already archived")
        from_status = fresh.status
        fresh.status = ModelVersion.Status.ARCHIVED
        fresh.status_reason = reason or f"archived by {actor}"
        fresh.save(update_fields=["status", "status_reason"])
        _event(fresh, action="archive", from_status=from_status, to_status=fresh.status, actor=actor, reason=reason)
    version.refresh_from_db()
    return version
