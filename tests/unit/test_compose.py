"""docker-compose.yml parses and names the spec's services (no Docker engine runs here)."""

import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
    # maintenance tasks have their own worker (never queued behind a training task); the main
    # worker takes every queue, so a deployment without the second one still runs them
    assert not any(arg.startswith("--queues") for arg in services["worker"]["command"])
    assert "--queues=maintenance" in services["maintenance-worker"]["command"]
    mounted = {v.split(":")[1] for v in services["worker"]["volumes"]}
    env = services["worker"]["environment"]
    assert {env["ML_LOGS_PATH"], env["ML_REGISTRY_PATH"]} <= mounted
    assert env["DATABASE_URL"].startswith("postgresql://") and env["REDIS_URL"].startswith("redis://")


def _default(value: str) -> str:
    """The default of a ``${NAME:-default}`` value (the value itself otherwise)."""
    return value.split(":-", 1)[1].rstrip("}") if value.startswith("${") and ":-" in value else value


def test_compose_stores_models_and_features_in_minio_by_default():
    """Artifacts and the offline store live in the object store, not on a service's disk: MinIO is
    a service, a one-shot mc container creates the bucket before any app service starts, and every
    app service points ML_MODELS_PATH / ML_FEATURES_PATH at it (issue 14, item 2)."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert "minio" in services["minio"]["image"] and services["minio"]["healthcheck"]["test"]
    assert "ports" not in services["minio"]  # the published default keys stay on the compose network
    setup = services["minio-setup"]
    assert setup["depends_on"]["minio"]["condition"] == "service_healthy" and setup["restart"] == "no"
    script = " ".join(setup["entrypoint"])
    assert "mc mb --ignore-existing local/investml" in script and "http://minio:9000" in script
    for name in ("ml-api", "worker", "maintenance-worker", "beat", "migrate"):
        env = services[name]["environment"]
        models, features = _default(env["ML_MODELS_PATH"]), _default(env["ML_FEATURES_PATH"])
        assert models.startswith("s3://investml/") and features.startswith("s3://investml/"), name
        assert models != features
        assert _default(env["AWS_ENDPOINT_URL"]) == "http://minio:9000", name
        assert _default(env["AWS_ACCESS_KEY_ID"]) == _default(services["minio"]["environment"]["MINIO_ROOT_USER"])
        assert _default(env["AWS_SECRET_ACCESS_KEY"]) == \
            _default(services["minio"]["environment"]["MINIO_ROOT_PASSWORD"])
        mounted = {v.split(":")[1] for v in services[name].get("volumes", [])}
        assert models not in mounted and "/app/ml_models" not in mounted, name
    # the app services wait for the bucket (migrate directly, the others through migrate)
    assert services["migrate"]["depends_on"]["minio-setup"]["condition"] == "service_completed_successfully"
    assert services["worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_has_no_default_secret_key():
    """A default key in the compose file would be the production key of every deployment that forgot
    to set one; unset, it reaches Django empty, which production refuses."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        key = (service.get("environment") or {}).get("DJANGO_SECRET_KEY")
        assert key in (None, "${DJANGO_SECRET_KEY:-}", "${DJANGO_SECRET_KEY}"), (name, key)


def _run_healthcheck(test: list[str], url: str) -> int:
    """Run a compose healthcheck ``test`` (CMD or CMD-SHELL form) with its URL pointed at ``url``."""
    kind, *args = test
    args = [a.replace("$$", "$").replace("http://127.0.0.1:8001", url) for a in args]  # compose unescapes $$
    command = ["sh", "-c", args[0]] if kind == "CMD-SHELL" else args
    return subprocess.run(command, capture_output=True, timeout=30).returncode


def test_api_healthcheck_fails_on_anything_but_a_2xx():
    """curl -f counts a 301 (production's HTTPS redirect) as success: the check must not."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    test = compose["services"]["ml-api"]["healthcheck"]["test"]
    assert "http://127.0.0.1:8001/health" in " ".join(test)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            code = int(self.path.strip("/").split("/")[0])
            self.send_response(code)
            if 300 <= code < 400:
                self.send_header("Location", "https://127.0.0.1/health")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        results = {code: _run_healthcheck(test, f"{base}/{code}") for code in (200, 301, 302, 404, 503)}
    finally:
        server.shutdown()
        server.server_close()
    assert results[200] == 0, results
    assert all(results[code] != 0 for code in (301, 302, 404, 503)), results


def test_compose_migrates_then_creates_the_first_admin():
    """The one-shot migrate service (which also seeds the beat schedules, by post_migrate) creates
    the first admin: ensure_admin says where its password is."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    command = compose["services"]["migrate"]["command"]
    text = " ".join(command) if isinstance(command, list) else command
    assert "manage.py migrate" in text and "manage.py ensure_admin" in text
    assert text.index("manage.py migrate") < text.index("manage.py ensure_admin")
    assert "&&" in text  # no admin without a migrated database, and a failed migrate fails the service
