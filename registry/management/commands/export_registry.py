import json

from django.core.management.base import BaseCommand

from registry.services import registry_export


class Command(BaseCommand):
    help = ("Export the model registry (models, versions with metrics, gate decisions and lineage, deployment "
            "events) to ML_REGISTRY_PATH/registry-<UTC time>.json, Django's fixture format (loaddata reads it).")

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="End with one JSON line: the file and its counts")

    def handle(self, *args, **options):
        summary = registry_export()
        self.stdout.write(f"registry exported to {summary['path']}: {summary['models']} models, "
                          f"{summary['versions']} versions, {summary['events']} events, {summary['bytes']:,} bytes")
        if options["json"]:
            self.stdout.write(json.dumps(summary))
