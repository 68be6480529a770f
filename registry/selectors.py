"""Reads from the model registry: versions, their history, and their stored artifacts verified against
the registry's checksums (the promotion gate's decision is ``registry.gate_decision``, its statistics
``registry.gate``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
from django.conf import settings
from django.db.models import QuerySet

from registry import artifacts, loaders
from registry.artifacts import ArtifactIntegrityError
from registry.models import DeploymentEvent, ModelVersion, RegisteredModel

# --------------------------------------------------------------------------------------------------
# reads


def version_label(version: ModelVersion) -> str:
    return f"{version.model.name}@{version.version}"


def registered_models() -> QuerySet[RegisteredModel]:
    return RegisteredModel.objects.all()


def versions(*, model_name: str | None = None, statuses: Iterable[str] | None = None) -> QuerySet[ModelVersion]:
    qs = ModelVersion.objects.select_related("model", "training_run", "parent", "feature_set_version")
    if model_name:
        qs = qs.filter(model__name=model_name)
    if statuses:
        qs = qs.filter(status__in=list(statuses))
    return qs.order_by("model__name", "-major", "-minor", "-patch", "-id")


def active_version(*, model_name: str) -> ModelVersion | None:
    return versions(model_name=model_name, statuses=[ModelVersion.Status.ACTIVE]).first()


def latest_version(*, model_name: str) -> ModelVersion | None:
    return versions(model_name=model_name).first()


def evaluation_source_id(*, version: ModelVersion) -> int:
    """The pk of the version whose walk-forward evaluation ``version`` reports: its own, or, for a
    daily refit, the evaluated version it carries the evaluation of."""
    carried = (version.evaluation or {}).get("carried_from") or {}
    return int(carried.get("id") or version.pk)


def latest_evaluated_version(*, model_name: str) -> ModelVersion | None:
    """The newest version of ``model_name`` that ran its own walk-forward evaluation (not a refit)."""
    for version in versions(model_name=model_name).iterator(chunk_size=20):
        if evaluation_source_id(version=version) == version.pk:
            return version
    return None


def get_version(*, model_name: str, version: str | None = None) -> ModelVersion:
    """``model_name@version``; without a version the active one, else the newest.

    Raises ``ModelVersion.DoesNotExist`` with a message naming what was asked for.
    """
    if version:
        found = versions(model_name=model_name).filter(version=version.lstrip("v")).first()
        if found is None:
            known = ", ".join(v.version for v in versions(model_name=model_name)[:10]) or "none"
            raise ModelVersion.DoesNotExist(f"no version {version} of model {model_name!r} (known: {known})")
        return found
    found = active_version(model_name=model_name) or latest_version(model_name=model_name)
    if found is None:
        raise ModelVersion.DoesNotExist(
            f"model {model_name!r} has no versions; train it first: python manage.py retrain --models {model_name}"
        )
    return found


def deployment_history(*, model_name: str | None = None, version: ModelVersion | None = None,
                       limit: int = 100) -> list[DeploymentEvent]:
    qs = DeploymentEvent.objects.select_related("version", "version__model")
    if version is not None:
        qs = qs.filter(version=version)
    elif model_name:
        qs = qs.filter(version__model__name=model_name)
    return list(qs.order_by("-created_at", "-id")[:limit])


def rollback_target(*, active: ModelVersion) -> ModelVersion | None:
    """The version that was active before ``active`` was promoted (skipping archived ones)."""
    seen = {active.pk}
    candidate = active.previous_active
    while candidate is not None and candidate.pk not in seen:
        if candidate.status != ModelVersion.Status.ARCHIVED:
            return candidate
        seen.add(candidate.pk)
        candidate = candidate.previous_active
    return None


def feature_importance(*, version: ModelVersion, top: int = 20) -> list[dict[str, Any]]:
    """The final fit's feature importance, highest gain first: ``feature``, ``gain_share`` (of the
    total gain) and ``permutation`` (validation rank IC lost when the feature is shuffled; None
    where not measured). Empty for learners that report none."""
    importance = ((version.evaluation or {}).get("final_fit") or {}).get("importance") or {}
    gain = {k: float(v) for k, v in (importance.get("gain") or {}).items()}
    permutation = importance.get("permutation") or {}
    total = sum(gain.values())
    ranked = sorted(gain, key=gain.get, reverse=True)[:top]
    return [{"feature": name, "gain_share": gain[name] / total if total > 0 else 0.0,
             "permutation": permutation.get(name)} for name in ranked]


# --------------------------------------------------------------------------------------------------
# stored artifacts


def load_version(*, version: ModelVersion) -> loaders.StoredLearner:
    """The version's learner, after checking its artifact's size and sha256 against the registry
    (loaded by training's loader, ``registry.loaders``)."""
    label = version_label(version)
    data = artifacts.read_verified(
        root=settings.ML_MODELS_PATH, relpath=version.artifact_path, sha256=version.artifact_sha256,
        size=version.artifact_bytes or None, label=label,
    )
    load = loaders.installed()
    try:
        return load.load_learner(data)
    except load.artifact_error as exc:  # pragma: no cover - the sha256 check catches changes first
        raise ArtifactIntegrityError(f"ERROR: Failed to load model {label}: {exc}") from exc


def load_oof(*, version: ModelVersion) -> pd.DataFrame | None:
    """The version's stored walk-forward out-of-sample table (verified), or None if it has none."""
    if not version.oof_path:
        return None
    data = artifacts.read_verified(
        root=settings.ML_MODELS_PATH, relpath=version.oof_path, sha256=version.oof_sha256,
        size=version.oof_bytes or None, label=f"{version_label(version)} (out-of-sample predictions)",
    )
    return artifacts.oof_from_bytes(data)


def predict_version(*, version: ModelVersion, frame: pd.DataFrame) -> Any:
    """Predictions of ``version`` for ``frame``'s rows (``training.learners.Predictions``); an
    ensemble first asks its member versions."""
    learner = load_version(version=version)
    if getattr(learner, "name", "") == "ensemble":
        member_predictions = {
            member.model.name: predict_version(version=member, frame=frame).expected_return
            for member in version.members.select_related("model")
        }
        return learner.predict_members(member_predictions)
    return learner.predict(frame)
