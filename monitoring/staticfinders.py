"""A static files finder for JavaScript that ships inside installed Python packages.

The dashboard's charts use ``plotly.min.js`` from the ``plotly`` wheel (``plotly/package_data/``),
served as the static file ``investml/vendor/plotly.min.js``: ``runserver`` and the test live server
find it through this finder, ``collectstatic`` copies it into ``STATIC_ROOT`` where WhiteNoise
serves it in production. Nothing is fetched from a CDN. Enable it with::

    STATICFILES_FINDERS = [
        "django.contrib.staticfiles.finders.FileSystemFinder",
        "django.contrib.staticfiles.finders.AppDirectoriesFinder",
        "monitoring.staticfinders.PackageAssetsFinder",
    ]
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from django.contrib.staticfiles.finders import BaseFinder
from django.core.checks import Error
from django.core.files.storage import FileSystemStorage

# static path -> (package, file inside the package)
ASSETS: dict[str, tuple[str, str]] = {
    "investml/vendor/plotly.min.js": ("plotly", "package_data/plotly.min.js"),
}


def package_file(package: str, relpath: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relpath
        if candidate.is_file():
            return candidate
    return None


class PackageAssetsFinder(BaseFinder):
    def check(self, **kwargs):
        errors = []
        for static_path, (package, relpath) in ASSETS.items():
            if package_file(package, relpath) is None:
                errors.append(Error(
                    f"{static_path}: {package}/{relpath} not found; install the {package!r} package "
                    "(requirements/base.txt)", id="monitoring.E001",
                ))
        return errors

    def find(self, path, find_all=False, **kwargs):
        find_all = find_all or kwargs.get("all", False)
        target = ASSETS.get(path.replace(os.sep, "/"))
        found = package_file(*target) if target else None
        if found is None:
            return [] if find_all else None
        return [str(found)] if find_all else str(found)

    def list(self, ignore_patterns):
        for static_path, (package, relpath) in ASSETS.items():
            found = package_file(package, relpath)
            if found is None:
                continue
            storage = FileSystemStorage(location=str(found.parent))
            storage.prefix = os.path.dirname(static_path)
            yield found.name, storage
