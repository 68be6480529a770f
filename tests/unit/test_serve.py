"""The API server's command line (``python -m investml.serve``): options from the environment, the
command line over them, bad values refused with the setting named; Procfile and Dockerfile start it."""

from __future__ import annotations

from pathlib import Path

import pytest

from investml.serve import server_options

REPO = Path(__file__).resolve().parents[2]


def test_options_come_from_the_environment_and_the_command_line_overrides_them(monkeypatch):
    for name in ("ML_API_HOST", "ML_API_PORT", "ML_WORKERS", "ML_API_ACCESS_LOG"):
        monkeypatch.delenv(name, raising=False)
    defaults = server_options([])
    assert (defaults.host, defaults.port, defaults.workers, defaults.access_log) == ("0.0.0.0", 8001, 4, True)

    monkeypatch.setenv("ML_API_HOST", "127.0.0.1")
    monkeypatch.setenv("ML_API_PORT", "9100")
    monkeypatch.setenv("ML_WORKERS", "3")
    monkeypatch.setenv("ML_API_ACCESS_LOG", "false")
    from_env = server_options([])
    assert (from_env.host, from_env.port, from_env.workers, from_env.access_log) == ("127.0.0.1", 9100, 3, False)

    given = server_options(["--port", "9200", "--workers", "1", "--access-log"])
    assert (given.host, given.port, given.workers, given.access_log) == ("127.0.0.1", 9200, 1, True)


@pytest.mark.parametrize(("argv", "environment", "named"), [
    (["--workers", "0"], {}, "--workers (ML_WORKERS) must be at least 1, got 0"),
    (["--port", "70000"], {}, "--port (ML_API_PORT) must be 1-65535, got 70000"),
    ([], {"ML_WORKERS": "four"}, "ML_WORKERS must be an integer, got 'four'"),
])
def test_bad_values_are_refused_naming_the_setting(argv, environment, named, capsys, monkeypatch):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exc:
        server_options(argv)
    assert exc.value.code == 2
    assert named in capsys.readouterr().err


def test_procfile_and_dockerfile_start_this_server():
    procfile = {line.split(":", 1)[0]: line.split(":", 1)[1].strip()
                for line in (REPO / "Procfile").read_text().splitlines() if ":" in line}
    assert procfile["web"] == ".venv/bin/python -m investml.serve"
    assert 'CMD ["python", "-m", "investml.serve"]' in (REPO / "Dockerfile").read_text()
