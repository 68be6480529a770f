"""The architecture contracts (README, "Layout"; ``[tool.importlinter]`` in pyproject.toml), run by
``make lint`` as ``lint-imports``: the apps depend one way (monitoring > inference > training >
registry > features > investml, the composition root aside) and the numeric core imports no Django.

The real tree keeps both; a copy of it with a forbidden import added breaks them (the check is
real, it sees function-local imports, and indirect ones through another module)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("investml", "features", "registry", "training", "inference", "monitoring")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the packages under ``root`` with the project's contracts."""
    return subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
         "--config", str(ROOT / "pyproject.toml"), "--no-cache", "--no-logo"],
        cwd=root, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}, capture_output=True, text=True,
        timeout=300,
    )


def test_the_tree_keeps_the_contracts():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_a_forbidden_import_breaks_the_contracts(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # upward, at module level: a features service reading monitoring
    (tmp_path / "features" / "probe_upward.py").write_text("from monitoring import selectors  # noqa\n")
    # upward, inside a function (as cycle-dodging imports used to be)
    (tmp_path / "training" / "probe_local.py").write_text(
        "def predict():\n    from inference.services import batch_predict\n\n    return batch_predict()\n")
    # the composition root may import any app, other investml modules may not
    (tmp_path / "investml" / "probe_bottom.py").write_text("import registry.services  # noqa\n")
    # the numeric core reaching Django through a Django module of its own app
    engine = tmp_path / "features" / "engine.py"
    engine.write_text(engine.read_text() + "\nfrom features import models  # noqa: E402\n")

    result = lint_imports(tmp_path)
    out = " ".join(result.stdout.split())  # long lines are wrapped
    assert result.returncode == 1, out
    assert "Contracts: 0 kept, 2 broken." in out
    assert "features is not allowed to import monitoring" in out and "features.probe_upward -> monitoring.selectors" in out
    assert "training is not allowed to import inference" in out and "training.probe_local -> inference.services" in out
    assert "investml is not allowed to import registry" in out and "investml.probe_bottom -> registry.services" in out
    assert "features.engine is not allowed to import django" in out and "features.engine -> features.models" in out
    assert "investml.wsgi" not in out  # the composition root's imports stay allowed
