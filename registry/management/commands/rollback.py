import getpass

from django.core.management.base import BaseCommand, CommandError

from registry.selectors import version_label
from registry.services import RegistryError, rollback


class Command(BaseCommand):
    help = "Reactivate the version that was active before the current one (one action, recorded)."

    def add_arguments(self, parser):
        parser.add_argument("model", help="Registered model name, e.g. lstm_predictor")
        parser.add_argument("--reason", default="", help="Why (recorded in the deployment history)")

    def handle(self, *args, model, reason, **options):
        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no login name in some containers
            user = "unknown user"
        try:
            target = rollback(model_name=model, actor=f"{user} (manage.py rollback)", reason=reason)
        except RegistryError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{version_label(target)} is active again ({target.status_reason})")
