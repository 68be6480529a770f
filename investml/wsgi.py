import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "investml.settings")

application = get_wsgi_application()

from inference.fastlane import PredictFastLane  # noqa: E402 - needs the apps loaded above

# POST /predict, the hot path, skips Django's full handler (see inference/fastlane.py)
application = PredictFastLane(application)
