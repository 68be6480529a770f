"""A real S3 server on loopback for the tests: moto's standalone server in a subprocess (as pandas
and s3fs test theirs), reached over HTTP by this process and by any subprocess a test starts.
Nothing is patched in process: the code under test talks to it through s3fs/botocore exactly as it
would to MinIO or AWS, with the standard ``AWS_*`` variables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.servers import free_port


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen
    log: Path

    @property
    def env(self) -> dict[str, str]:
        """The standard variables a client of this server needs (fake credentials: moto takes any)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "investml-test",
            "AWS_SECRET_ACCESS_KEY": "investml-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def new_bucket(self) -> str:
        """A fresh, empty bucket (one per test keeps tests apart on one server)."""
        import boto3

        name = f"investml-{uuid.uuid4().hex[:16]}"
        client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="investml-test",
                              aws_secret_access_key="investml-test-secret", region_name="us-east-1")
        client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="investml-test",
                              aws_secret_access_key="investml-test-secret", region_name="us-east-1")
        out: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            out += [item["Key"] for item in page.get("Contents", [])]
        return out

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the test process dies, even killed (no orphan server)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux: stop() still runs at the end
        pass


def start_s3_server(log: Path, *, attempts: int = 3) -> S3Server:
    """Start ``python -m moto.server`` on a free loopback port and wait until it answers."""
    last = ""
    for _ in range(attempts):
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        handle = log.open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                    return S3Server(endpoint=endpoint, process=process, log=log)
            except OSError:
                time.sleep(0.1)
        process.kill()
        process.wait()
        last = log.read_text()[-2000:]  # the port was taken meanwhile, or the server failed
    raise RuntimeError(f"the moto S3 server did not start: {last}")
