"""The embedded broker never exposes a half-written message to a consumer."""

import json
from pathlib import Path
from types import SimpleNamespace

from kombu.transport import filesystem

import investml.celery  # noqa: F401 - installs the atomic put


def test_messages_appear_complete_under_their_final_name(tmp_path: Path):
    channel = SimpleNamespace(data_folder_out=str(tmp_path))
    filesystem.Channel._put(channel, "celery", {"body": "x" * 10_000})
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name.endswith(".celery.msg")
    assert json.loads(files[0].read_text())["body"] == "x" * 10_000
