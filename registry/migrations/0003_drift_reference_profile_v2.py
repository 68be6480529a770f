"""Stored drift references to the one profile format (``features.profile``, version 2).

Training used to store per-feature histograms (``edges`` from min to max, ``counts``) and monitoring
its own format (inner ``edges``, ``shares``, a ``sample``); both become inner edges, shares and the
101 percentiles. The conversion is written out here, not imported, so it stays what it was when the
app code moves on.
"""

import numpy as np
from django.db import migrations, models

PROBS = np.linspace(0.0, 1.0, 101)
MIN_VALUES = 50


def _from_histogram(entry):
    edges = np.asarray(entry.get("edges") or [], dtype="float64")
    counts = np.asarray(entry.get("counts") or [], dtype="float64")
    n = int(counts.sum()) if len(counts) else 0
    if len(edges) < 2 or len(counts) != len(edges) - 1 or n < MIN_VALUES:
        return None
    cdf = np.concatenate([[0.0], np.cumsum(counts) / n])
    centers = (edges[:-1] + edges[1:]) / 2.0
    return {"edges": edges[1:-1].tolist(), "shares": (counts / n).tolist(),
            "quantiles": np.interp(PROBS, cdf, edges).tolist(), "n": n,
            "missing": int(entry.get("missing") or 0), "mean": float(np.sum(centers * counts) / n)}


def _from_sample(entry):
    sample = np.asarray(entry["sample"], dtype="float64")
    if len(sample) == 0:
        return None
    return {"edges": list(entry["edges"]), "shares": list(entry["shares"]),
            "quantiles": np.quantile(sample, PROBS).tolist(), "n": int(entry["n"]), "missing": 0,
            "mean": float(entry["mean"])}


def profile_v2(profile):
    """``profile`` in version 2; None when it already is (nothing to write)."""
    if not profile or profile.get("version") == 2:
        return None
    features = {}
    for name, entry in (profile.get("features") or {}).items():
        if "quantiles" in entry:
            converted = entry
        elif "sample" in entry:
            converted = _from_sample(entry)
        else:
            converted = _from_histogram(entry)
        if converted is not None:
            features[name] = converted
    rest = {key: value for key, value in profile.items() if key not in ("features", "version", "converted_from")}
    return {**rest, "version": 2, "features": features}


def forwards(apps, schema_editor):
    ModelVersion = apps.get_model("registry", "ModelVersion")
    for version in ModelVersion.objects.exclude(drift_reference={}).only("pk", "drift_reference").iterator():
        converted = profile_v2(version.drift_reference)
        if converted is not None:
            ModelVersion.objects.filter(pk=version.pk).update(drift_reference=converted)


class Migration(migrations.Migration):

    dependencies = [
        ("registry", "0002_modelversion_evaluation_modelversion_gate_and_more"),
    ]

    operations = [
        migrations.AlterField(
            model_name="modelversion",
            name="drift_reference",
            field=models.JSONField(blank=True, default=dict, help_text="Training feature profile: decile bins and percentiles (features.profile)"),
        ),
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
