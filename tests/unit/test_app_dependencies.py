"""The apps depend one way (README, "Architecture"): features < registry < training < inference <
monitoring. A module may import a lower app's modules freely; from a higher app only modules with
no Django in them (the numeric core: engine, store, learners, metrics, drift, alert rules...).

``KNOWN_UPWARD`` lists the Django-level imports that still go up, each with why: the list can only
shrink (a new upward import fails this test, and so does an entry that no longer exists, so a fix
is recorded by deleting its line)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ORDER = ["features", "registry", "training", "inference", "monitoring"]
FRAMEWORKS = ("django", "rest_framework", "celery", "django_celery_beat", "drf_spectacular")

# module -> the higher apps' Django modules it still imports (issue 13: to be inverted)
KNOWN_UPWARD: dict[str, set[str]] = {
    # the cost ledger and budget reads live in monitoring
    "features/services/limits.py": {"monitoring.selectors"},
    "features/services/market_updates.py": {"monitoring.selectors", "monitoring.services"},
    "features/services/monthly_budget.py": {"monitoring.selectors"},
    "features/services/news.py": {"monitoring.services"},
    "training/services.py": {"monitoring.services"},
    # request metrics and model-load failures are recorded into monitoring
    "inference/fastlane.py": {"monitoring.request_metrics"},
    "inference/model_manager.py": {"monitoring.services"},
    # the registry reads a training frame to re-score a version
    "registry/services.py": {"training.selectors"},
    # the pipeline's last stage (batch predictions) and its cost checks and alerts
    "training/orchestrator.py": {"inference.services", "monitoring.selectors", "monitoring.services"},
}


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return out


def _uses_a_framework(path: Path) -> bool:
    return any(name.split(".")[0] in FRAMEWORKS for name in _imports(path))


def upward_imports() -> dict[str, set[str]]:
    rank = {app: i for i, app in enumerate(ORDER)}
    found: dict[str, set[str]] = {}
    for app in ORDER:
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for name in _imports(path):
                top = name.split(".")[0]
                if top not in rank or rank[top] <= rank[app]:
                    continue
                target = _module_file(name)
                if target is not None and _uses_a_framework(target):
                    found.setdefault(path.relative_to(ROOT).as_posix(), set()).add(name)
    return found


def test_apps_depend_one_way_except_the_known_imports_being_inverted():
    found = upward_imports()
    new = {m: found[m] - KNOWN_UPWARD.get(m, set()) for m in found if found[m] - KNOWN_UPWARD.get(m, set())}
    assert not new, f"imports against the dependency direction {' < '.join(ORDER)}: {new}"
    gone = {m: KNOWN_UPWARD[m] - found.get(m, set()) for m in KNOWN_UPWARD if KNOWN_UPWARD[m] - found.get(m, set())}
    assert not gone, f"fixed, delete them from KNOWN_UPWARD: {gone}"


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The scan is real: a Django module of a higher app imported from a lower one is reported."""
    fake_root = tmp_path
    for app in ORDER:
        (fake_root / app).mkdir()
        (fake_root / app / "__init__.py").write_text("")
    (fake_root / "monitoring" / "views.py").write_text("from django.http import HttpResponse\n")
    (fake_root / "monitoring" / "drift.py").write_text("import numpy as np\n")
    (fake_root / "features" / "x.py").write_text("from monitoring.views import HttpResponse\nfrom monitoring import drift\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", fake_root)
    assert upward_imports() == {"features/x.py": {"monitoring.views"}}  # drift has no Django: allowed
