"""One reader for the settings that come from Django's settings or else the environment.

Used where a value may be set either way (monitoring's and inference's knobs): a Django setting of
the name wins (tests override these), then the environment variable; typed parsing stays with the
caller (``features.common.env_number`` for numbers that must parse).
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings


def setting_or_env(name: str) -> Any:
    """``settings.<name>`` when defined, else the environment variable ``name`` (None when unset)."""
    return getattr(settings, name) if hasattr(settings, name) else os.environ.get(name)
