from django.apps import AppConfig


class InferenceConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "inference"

    def ready(self) -> None:
        # Only signal and atexit hooks: no database access, so manage.py commands and tests are unaffected.
        from inference import authentication, prediction_log

        prediction_log.connect()
        authentication.connect()
        # the pipeline's batch_predict stage is this app's (the orchestrator, in training, cannot import it)
        from inference.services import batch_predict
        from training.orchestrator.stage_work import register_stage_hook

        register_stage_hook(stage="batch_predict", work=batch_predict)
