from django.apps import AppConfig


class InferenceConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "inference"

    def ready(self) -> None:
        # Only signal and atexit hooks: no database access, so manage.py commands and tests are unaffected.
        from inference import authentication, prediction_log

        prediction_log.connect()
        authentication.connect()
