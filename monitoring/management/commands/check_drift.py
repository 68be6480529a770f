"""``manage.py check_drift``: recent features against the active versions' training profiles, or any
two stored periods against each other."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from monitoring import selectors, services


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"not a date (YYYY-MM-DD): {value!r}") from exc


def _features(features: dict[str, Any]) -> dict[str, Any]:
    keys = ("psi", "ks_statistic", "ks_pvalue", "drifted", "reference_mean", "current_mean", "reference_n",
            "current_n")
    return {name: {k: f.get(k) for k in keys if k in f} for name, f in sorted(features.items())}


class Command(BaseCommand):
    help = (
        "Compare the most recent window of stored features with each active model version's training "
        "profile (stores a drift report, alerts and requests a retrain when drift exceeds DATA_DRIFT_THRESHOLD), "
        "or, with --reference-start/--reference-end/--start/--end, compare two stored periods without a model."
    )

    def add_arguments(self, parser):
        parser.add_argument("--model", help="Model name (default: every model with an active version)")
        parser.add_argument("--window-days", type=int, help="Trading days in the recent window (default 20)")
        parser.add_argument("--reference-start", type=_date, help="Explicit reference period start (YYYY-MM-DD)")
        parser.add_argument("--reference-end", type=_date, help="Explicit reference period end")
        parser.add_argument("--start", type=_date, help="Explicit current period start")
        parser.add_argument("--end", type=_date,
                            help="Current period end; alone, the last day of the recent window (default: latest)")
        parser.add_argument("--feature-set-version", help="Feature set version for explicit periods (default latest)")
        parser.add_argument("--no-alert", action="store_true", help="Store reports but raise no alert or retrain")
        parser.add_argument("--json", action="store_true", help="End with one JSON line per report")

    def handle(self, *args, **options):
        explicit = [options[k] for k in ("reference_start", "reference_end", "start")]
        if any(v is not None for v in explicit):
            if not all(v is not None for v in explicit) or options["end"] is None:
                raise CommandError("explicit periods need all of --reference-start, --reference-end, --start, --end")
            return self._periods(options)
        if options["window_days"] is not None and options["window_days"] < 2:
            raise CommandError("--window-days must be at least 2")
        model = options["model"]
        if model and not selectors.active_versions(model_name=model):
            raise CommandError(f"model {model!r} has no active version (promote one, or compare explicit periods)")
        reports = services.check_drift(model_name=model, window_days=options["window_days"], as_of=options["end"],
                                       alert=not options["no_alert"])
        if not reports:
            raise CommandError(
                "no drift report: no active model version with a drift reference and stored features"
            )
        for report in reports:
            version = report.model_version
            self._print_summary(
                title=f"{version.model.name}@{version.version}",
                window=(report.window_start, report.window_end),
                share=report.drift_share, detected=report.drift_detected, threshold=report.threshold,
                features=report.features,
            )
        if options["json"]:
            for report in reports:
                self.stdout.write(json.dumps({
                    "model": report.model_version.model.name,
                    "version": report.model_version.version,
                    "window": [report.window_start.isoformat(), report.window_end.isoformat()],
                    "drift_detected": bool(report.drift_detected),
                    "drift_share": float(report.drift_share),
                    "threshold": float(report.threshold),
                    "report_id": report.pk,
                    "features": _features(report.features or {}),
                }))

    def _periods(self, options):
        if options["reference_start"] > options["reference_end"] or options["start"] > options["end"]:
            raise CommandError("a period's start is after its end")
        try:
            result, reference, current = selectors.compare_feature_periods(
                reference_start=options["reference_start"], reference_end=options["reference_end"],
                start=options["start"], end=options["end"], feature_set_version=options["feature_set_version"],
            )
        except Exception as exc:  # DoesNotExist from the feature store names what is missing
            raise CommandError(str(exc)) from exc
        if reference.frame.empty or current.frame.empty:
            raise CommandError("no stored features in one of the periods (build them: manage.py build_features)")
        features = {name: asdict(f) for name, f in result.features.items()}
        self._print_summary(
            title=f"reference {reference.start}..{reference.end}", window=(current.start, current.end),
            share=result.drift_share, detected=result.drift_detected, threshold=result.threshold, features=features,
        )
        if options["json"]:
            self.stdout.write(json.dumps({
                "model": None,
                "version": None,
                "reference": [reference.start.isoformat(), reference.end.isoformat()],
                "window": [current.start.isoformat(), current.end.isoformat()],
                "drift_detected": bool(result.drift_detected),
                "drift_share": float(result.drift_share),
                "threshold": float(result.threshold),
                "features": _features(features),
            }))

    def _print_summary(self, *, title, window, share, detected, threshold, features):
        style = self.style.ERROR if detected else self.style.SUCCESS
        verdict = "DRIFT" if detected else "no drift"
        self.stdout.write(style(
            f"{title}: window {window[0]}..{window[1]}: {verdict} "
            f"({share:.0%} of {len(features)} features drifted; threshold {threshold:.0%})"
        ))
        rows = sorted(features.items(), key=lambda item: -float(item[1].get("psi") or 0))
        for name, f in rows:
            mark = "*" if f.get("drifted") else " "
            self.stdout.write(
                f"  {mark} {name:<22} psi {float(f.get('psi') or 0):7.3f}  ks {float(f.get('ks_statistic') or 0):5.3f}"
                f"  mean {float(f.get('reference_mean') or 0):+.4f} -> {float(f.get('current_mean') or 0):+.4f}"
            )
