"""The entrypoint in the sandbox, as uid 1000 on a read-only root: config errors, pull failures, a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import eventually

from .conftest import bucket_tree, key
from .sandbox import Sandbox

pytestmark = pytest.mark.sandbox

PYTHON = "/opt/cloudide/.venv/bin/python"


def entrypoint(box: Sandbox, *args: str) -> list[str]:
    drop = [
        "setpriv",
        "--reuid=1000",
        "--regid=1000",
        "--clear-groups",
        "--no-new-privs",
        "--bounding-set=-all",
    ]
    return box.command(*drop, "--", PYTHON, "-m", "workspace_sync", *args)


def sandbox_env(env: dict[str, str], **changes: str) -> dict[str, str]:
    inside = {**env, "PYTHONPATH": "/opt/cloudide/terminal_image", "WORKSPACE_DIR": "/workspace", **changes}
    return {k: v for k, v in inside.items() if v}


def log_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_invalid_configuration_is_reported_clearly(tmp_path: Path, env: dict[str, str]) -> None:
    box = Sandbox(tmp_path)
    result = subprocess.run(
        entrypoint(box, "run"),
        env=sandbox_env(env, WORKSPACE_BUCKET="", SESSION_ID="bad id!"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    (line,) = [entry for entry in log_lines(result.stdout) if entry["level"] == "ERROR"]
    assert "WORKSPACE_BUCKET is not set" in line["message"]
    assert "SESSION_ID='bad id!' is invalid" in line["message"]


def test_failed_initial_pull_exits_non_zero_with_a_clear_line(tmp_path: Path, env: dict[str, str]) -> None:
    box = Sandbox(tmp_path)
    result = subprocess.run(
        entrypoint(box, "run"),
        env=sandbox_env(env, WORKSPACE_BUCKET="no-such-bucket-here"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    errors = [entry for entry in log_lines(result.stdout) if entry["level"] == "ERROR"]
    assert errors[-1]["message"] == "initial pull failed; the session cannot start"
    assert "NoSuchBucket" in errors[-1]["error"]


def test_pulls_as_the_user_reports_health_and_stops_cleanly(
    tmp_path: Path, env: dict[str, str], s3: Any, bucket: str
) -> None:
    box = Sandbox(tmp_path)
    s3.put_object(Bucket=bucket, Key=key("src/app.py"), Body=b"print('hello')\n")
    inside = sandbox_env(env)
    log = (tmp_path / "entrypoint.log").open("w+")
    proc = subprocess.Popen(entrypoint(box, "run"), env=inside, stdout=log, stderr=subprocess.STDOUT)
    try:
        status_file = box.workspace / ".cloudide-sync" / "status.json"
        eventually(lambda: status_file.exists() and json.loads(status_file.read_text())["phase"] == "running")
        pulled = box.workspace / "src/app.py"
        assert pulled.read_bytes() == b"print('hello')\n"
        assert pulled.stat().st_uid == 1000

        health = subprocess.run(
            entrypoint(box, "health"), env=inside, capture_output=True, text=True, timeout=60
        )
        assert health.returncode == 0, health.stdout
        assert health.stdout.startswith("ok: phase=running")

        (box.workspace / "src/new.py").write_text("x = 1\n")
        os.chown(box.workspace / "src/new.py", 1000, 1000)
        os.kill(json.loads(status_file.read_text())["pid"], signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert bucket_tree(s3, bucket)["src/new.py"] == b"x = 1\n"
    log.seek(0)
    messages = [entry["message"] for entry in log_lines(log.read())]
    assert "initial sync complete" in messages and "flush complete" in messages
    stopped = subprocess.run(
        entrypoint(box, "health"), env=inside, capture_output=True, text=True, timeout=60
    )
    assert stopped.returncode == 1 and "phase is 'stopped'" in stopped.stdout
