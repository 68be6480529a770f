"""Feature-set versions: the ``FeatureSetVersion`` row a spec's content maps to, created on first use.

A version pins the ordered features with their parameters (``features.versioning``); the same
content always maps to the same row, new content gets the next semantic version of its set.
"""

from __future__ import annotations

import re

from django.db import IntegrityError, transaction

from features.feature_sets import DEFAULT_SPEC, FEATURE_SETS, FeatureSpec
from features.models import FeatureSet, FeatureSetVersion
from features.selectors import DEFAULT_FEATURE_SET
from features.services.store_errors import FeatureStoreError
from features.versioning import content_hash, next_feature_set_version, version_content

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def _semver_key(version: FeatureSetVersion) -> tuple[int, ...]:
    return tuple(int(p) for p in version.version.split("."))


def ensure_feature_set_version(*, name: str = DEFAULT_FEATURE_SET, spec: FeatureSpec | dict | None = DEFAULT_SPEC,
                               description: str = "") -> FeatureSetVersion:
    """The version row of ``spec`` in feature set ``name``: the existing row when the content hash
    (ordered features with parameters, engine parameters, storage format) is known, else a new row
    whose semantic version bumps the highest one (see ``features.versioning.next_feature_set_version``)."""
    if not _NAME_RE.match(name):
        raise FeatureStoreError(f"invalid feature set name {name!r} (letters, digits, '_', '.', '-')")
    spec = FeatureSpec.from_params(spec)
    content = version_content(spec)
    digest = content_hash(content)
    for _attempt in range(3):
        try:
            with transaction.atomic():
                feature_set, _ = FeatureSet.objects.get_or_create(name=name, defaults={"description": description})
                # serialize version creation per feature set (a row lock on PostgreSQL)
                feature_set = FeatureSet.objects.select_for_update().get(pk=feature_set.pk)
                existing = feature_set.versions.filter(content_hash=digest).first()
                if existing is not None:
                    return existing
                previous = max(feature_set.versions.all(), key=_semver_key, default=None)
                number = next_feature_set_version(
                    previous.version if previous else None,
                    previous.features if previous else None,
                    previous.params if previous else None,
                    content["features"],
                    content["params"],
                )
                return FeatureSetVersion.objects.create(
                    feature_set=feature_set, version=number, features=content["features"],
                    params=content["params"], content_hash=digest,
                )
        except IntegrityError:  # a concurrent caller created it first
            continue
    return FeatureSetVersion.objects.get(feature_set__name=name, content_hash=digest)


def version_for_build(*, feature_set: str) -> FeatureSetVersion:
    if feature_set in FEATURE_SETS:  # the engine's named sets: their current spec
        return ensure_feature_set_version(name=feature_set, spec=FEATURE_SETS[feature_set])
    version = (
        FeatureSetVersion.objects.select_related("feature_set")
        .filter(feature_set__name=feature_set)
        .order_by("-id")
        .first()
    )
    if version is None:
        known = ", ".join(FeatureSet.objects.order_by("name").values_list("name", flat=True)) or "none"
        raise FeatureStoreError(f"unknown feature set {feature_set!r} (known: {known})")
    return version
