"""The API and dashboard server: ``python -m investml.serve`` (Procfile, Dockerfile, the tests and
``bench_api.py`` all start it this way, so they run the same server with the same options).

granian (a Rust HTTP server) serving the WSGI application ``investml.wsgi``: every request goes
through Django's handler and every middleware, the same as under ASGI. On the 2-core bench machine
(README, "ML API") it answered 12-28% more single ``POST /predict`` requests per second than
gunicorn's sync workers in the same rounds, at a 1.6-4.1 ms lower median, with 0.1-0.2 ms less
server CPU per request (HTTP parsed in Rust; connections kept alive instead of one per request).

- ``workers`` processes (``ML_WORKERS``, default 4; one per core), each loading the models lazily
  on its first request.
- One blocking thread per worker: Python holds the GIL through a prediction, so a second thread
  only queues behind the first and lengthens the tail (gunicorn's threaded workers measured a p99 of
  118 ms against 23 ms).
- A worker that dies (killed, out of memory) is replaced (``respawn_failed_workers``).
- Unlike gunicorn's ``--timeout``, nothing kills a request that hangs. SQLite waits at most 30 s
  for a lock and PostgreSQL at most ``DATABASE_CONNECT_TIMEOUT`` (10 s) for a connection, but a query
  to a database server that stops answering waits as long as the connection does.

Options come from the environment (django-environ, as the settings): ``ML_API_HOST`` (0.0.0.0),
``ML_API_PORT`` (8001), ``ML_WORKERS`` (4), ``ML_API_ACCESS_LOG`` (true: one line per request on
stdout); the command line overrides them.
"""

from __future__ import annotations

import argparse
import os

import environ
from granian import Granian
from granian.constants import Interfaces

TARGET = "investml.wsgi:application"


def server_options(argv: list[str] | None = None) -> argparse.Namespace:
    env = environ.Env()
    parser = argparse.ArgumentParser(prog="python -m investml.serve", description=__doc__.split("\n\n")[0])

    def env_int(name: str, default: int) -> int:
        try:
            return env.int(name, default=default)
        except ValueError:
            parser.error(f"{name} must be an integer, got {os.environ.get(name)!r}")

    parser.add_argument("--host", default=env.str("ML_API_HOST", default="0.0.0.0"))
    parser.add_argument("--port", type=int, default=env_int("ML_API_PORT", 8001))
    parser.add_argument("--workers", type=int, default=env_int("ML_WORKERS", 4))
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction,
                        default=env.bool("ML_API_ACCESS_LOG", default=True))
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    options = parser.parse_args(argv)
    if options.workers < 1:
        parser.error(f"--workers (ML_WORKERS) must be at least 1, got {options.workers}")
    if not 0 < options.port < 65536:
        parser.error(f"--port (ML_API_PORT) must be 1-65535, got {options.port}")
    return options


def main(argv: list[str] | None = None) -> None:
    options = server_options(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "investml.settings")
    Granian(
        TARGET,
        address=options.host,
        port=options.port,
        interface=Interfaces.WSGI,
        workers=options.workers,
        blocking_threads=1,
        runtime_threads=1,
        websockets=False,
        respawn_failed_workers=True,
        respawn_interval=0.5,
        workers_kill_timeout=30,  # a graceful stop waits this long for requests in flight
        log_level=options.log_level,
        log_access=options.access_log,
    ).serve()


if __name__ == "__main__":
    main()
