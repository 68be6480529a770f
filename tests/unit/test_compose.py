"""docker-compose.yml parses and names the spec's services (no Docker engine runs here)."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_compose_services_share_one_image_and_have_healthchecks():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "ml-api", "worker", "beat"} <= set(services)
    app_services = ["ml-api", "worker", "beat", "migrate"]
    assert {services[name]["build"] for name in app_services} == {"."}
    assert (REPO / "Dockerfile").is_file()
    assert "8001" in services["ml-api"]["ports"][0]
    for name in ("postgres", "redis", "ml-api", "worker"):
        assert services[name]["healthcheck"]["test"], name
    assert "/health" in " ".join(services["ml-api"]["healthcheck"]["test"])
    assert "worker" in services["worker"]["command"] and "beat" in services["beat"]["command"]
    mounted = {v.split(":")[1] for v in services["worker"]["volumes"]}
    env = services["worker"]["environment"]
    assert {env["ML_MODELS_PATH"], env["ML_LOGS_PATH"], env["ML_REGISTRY_PATH"]} <= mounted
    assert env["DATABASE_URL"].startswith("postgresql://") and env["REDIS_URL"].startswith("redis://")


def test_compose_has_no_default_secret_key():
    """A default key in the compose file would be the production key of every deployment that forgot
    to set one; unset, it reaches Django empty, which production refuses."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        key = (service.get("environment") or {}).get("DJANGO_SECRET_KEY")
        assert key in (None, "${DJANGO_SECRET_KEY:-}", "${DJANGO_SECRET_KEY}"), (name, key)
