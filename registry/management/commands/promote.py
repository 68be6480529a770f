import getpass

from django.core.management.base import BaseCommand, CommandError

from registry.models import ModelVersion
from registry.selectors import get_version
from registry.services import ArtifactIntegrityError, RegistryError, promote


class Command(BaseCommand):
    help = (
        "Promote a model version to active through the promotion gate (threshold and beating the active "
        "version on the same out-of-sample window); --force skips the gate and records that it was forced."
    )

    def add_arguments(self, parser):
        parser.add_argument("model", help="Registered model name, e.g. xgboost_classifier")
        parser.add_argument("version", help="Semantic version, e.g. 1.3.0")
        parser.add_argument("--force", action="store_true", help="Skip the gate (recorded in the history)")
        parser.add_argument("--reason", default="", help="Why (recorded in the deployment history)")

    def handle(self, *args, model, version, force, reason, **options):
        try:
            mv = get_version(model_name=model, version=version)
            decision = promote(version=mv, actor=f"{_user()} (manage.py promote)", reason=reason, force=force)
        except (ModelVersion.DoesNotExist, RegistryError, ArtifactIntegrityError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(decision.reason)
        if not decision.passed:
            raise CommandError(f"{model}@{mv.version} was not promoted (it stays {mv.status})")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown user"
