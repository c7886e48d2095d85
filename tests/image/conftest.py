"""Shared fixtures: one moto S3 server per run, a fresh bucket and workspace per test, agent harnesses."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools import Logger
from botocore.config import Config
from moto.server import ThreadedMotoServer
from workspace_sync.agent import SyncAgent
from workspace_sync.config import SyncConfig

from cloudide.offline.invariants import saved_files
from tests.support import eventually, free_port

REPO = Path(__file__).resolve().parents[2]
PREFIX = "projects/p-1"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(max_pool_connections=32),
    )


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"ws-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def env(moto_endpoint: str, bucket: str, tmp_path: Path) -> dict[str, str]:
    """The agent's environment as a task definition would set it (plus local endpoint and fast timers)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO / "terminal_image"),
        "WORKSPACE_BUCKET": bucket,
        "WORKSPACE_PREFIX": PREFIX,
        "SESSION_ID": "s-test",
        "WORKSPACE_DIR": str(tmp_path / "workspace"),
        "AWS_ENDPOINT_URL_S3": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "SYNC_POLL_SECONDS": "0.3",
        "SYNC_DEBOUNCE_SECONDS": "0.05",
        "SYNC_FLUSH_DEADLINE_SECONDS": "60",
    }


def key(rel: str) -> str:
    return f"{PREFIX}/{rel}"


def bucket_tree(s3: Any, bucket: str) -> dict[str, bytes]:
    """Every object under the prefix: relative key -> body."""
    tree = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX + "/"):
        for obj in page.get("Contents", []):
            try:
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            except s3.exceptions.NoSuchKey:
                continue  # deleted between the listing and the read
            tree[obj["Key"][len(PREFIX) + 1 :]] = body
    return tree


def local_files(root: Path) -> dict[str, bytes]:
    """Regular files under root (outside the agent's state dir): relative path -> content."""
    return saved_files(root)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class InProcessAgent:
    """The agent in a thread of the test process (so tests can hand it an instrumented client)."""

    def __init__(self, env: dict[str, str], client: Any) -> None:
        self.config = SyncConfig.from_env(env)
        self.agent = SyncAgent(self.config, client, Logger(service="workspace-sync-test", level="WARNING"))
        self._thread: threading.Thread | None = None
        self.exit_code: int | None = None

    def start(self) -> InProcessAgent:
        self.agent.start()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        self.exit_code = self.agent.run()

    def stop(self, timeout: float = 60) -> int:
        self.agent.request_stop()
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "agent did not stop"
        assert self.exit_code is not None
        return self.exit_code


@pytest.fixture
def agents(env: dict[str, str], s3: Any) -> Iterator[Callable[..., InProcessAgent]]:
    started: list[InProcessAgent] = []

    def make(client: Any = None, **overrides: str) -> InProcessAgent:
        agent = InProcessAgent({**env, **overrides}, client or s3)
        started.append(agent)
        return agent

    yield make
    for agent in started:
        if agent._thread is not None and agent._thread.is_alive():
            agent.stop()
        else:
            agent.agent.close()


class AgentProcess:
    """The agent as the container runs it: ``python -m workspace_sync run``."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workspace_sync", "run"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def status(self) -> dict[str, Any]:
        path = Path(self.env["WORKSPACE_DIR"]) / ".cloudide-sync" / "status.json"
        try:
            return dict(json.loads(path.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def wait_running(self) -> None:
        eventually(
            lambda: self.status().get("phase") == "running" and self.status().get("pid") == self.proc.pid
        )

    def wait(self, timeout: float = 90) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
