"""Shared fixtures. Tests run on SQLite by default, on PostgreSQL/Redis when DATABASE_URL/REDIS_URL are set."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real market data beside the checkout (read-only)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real market data not found at {SHARED_DATA}")
    return SHARED_DATA
