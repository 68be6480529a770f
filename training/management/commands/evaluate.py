import json as jsonlib

from django.core.management.base import BaseCommand, CommandError

from features.common import jsonable
from registry.metrics import METRIC_KEYS
from registry.models import ModelVersion
from registry.selectors import get_version, version_label


class Command(BaseCommand):
    help = (
        "Walk-forward out-of-sample evaluation of a registered model version (the active one, else the "
        "newest): overall metrics, the naive baselines on the same rows, and every fold."
    )

    def create_parser(self, prog_name, subcommand, **kwargs):
        # --version names the model version here, replacing Django's "show the Django version"
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("--model", required=True, help="Registered model name, e.g. lstm_predictor")
        parser.add_argument("--version", help="Semantic version, e.g. 1.2.0 (default: active, else newest)")
        parser.add_argument("--json", action="store_true", help="End with one JSON line")

    def handle(self, *args, model, version, **options):
        try:
            mv = get_version(model_name=model, version=version)
        except ModelVersion.DoesNotExist as exc:
            raise CommandError(str(exc)) from exc
        folds = mv.evaluation.get("folds", [])
        window = mv.evaluation.get("window", {})
        self.stdout.write(
            f"{version_label(mv)} ({mv.status}), target {mv.target}, horizon {mv.horizon_days} days; walk-forward "
            f"out of sample {window.get('start') or mv.evaluation_start}..{window.get('end') or mv.evaluation_end}, "
            f"{len(folds)} folds"
        )
        names = ["model", *mv.baselines]
        self.stdout.write(f"  {'metric':<14}" + "".join(f"{n:>14}" for n in names))
        for key in METRIC_KEYS:
            values = [mv.metrics.get(key), *[mv.baselines[b].get(key) for b in mv.baselines]]
            self.stdout.write(f"  {key:<14}" + "".join(f"{_fmt(v):>14}" for v in values))
        for fold in folds:
            m = fold.get("metrics", {})
            self.stdout.write(
                f"  fold {fold['fold']}: train {fold['train_start']}..{fold['train_end']}, gap {fold['gap_days']}, "
                f"test {fold['test_start']}..{fold['test_end']} ({fold.get('n_test_rows', 0):,} rows): "
                f"rank_ic {_fmt(m.get('rank_ic'))}, accuracy {_fmt(m.get('accuracy'))}, sharpe {_fmt(m.get('sharpe'))}"
            )
        if options["json"]:
            payload = {
                "model": mv.model.name,
                "version": mv.version,
                "status": mv.status,
                "metrics": {k: mv.metrics.get(k) for k in METRIC_KEYS},
                "baselines": mv.baselines,
                "folds": folds,
                "window": window,
            }
            self.stdout.write(jsonlib.dumps(jsonable(payload), allow_nan=False))


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"
