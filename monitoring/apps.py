from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "monitoring"

    def ready(self) -> None:
        # monitoring's side of the apps below: the cost ledger and alerts, signals, pipeline stages
        from monitoring import hooks

        hooks.connect()
