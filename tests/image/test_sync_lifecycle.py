"""The agent as a process: SIGTERM flushes everything, a killed agent loses nothing, S3 errors are survived."""

from __future__ import annotations

import os
import random
import signal
import threading
from pathlib import Path
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse
from botocore.config import Config

from tests.support import eventually

from .conftest import AgentProcess, bucket_tree, key, local_files, sha


def _hashes(tree: dict[str, bytes]) -> dict[str, str]:
    return {rel: sha(body) for rel, body in tree.items() if not rel.endswith("/")}


def test_sigterm_during_a_burst_flushes_every_write(
    s3: Any, bucket: str, env: dict[str, str], tmp_path: Path
) -> None:
    root = Path(env["WORKSPACE_DIR"])
    agent = AgentProcess(env, tmp_path / "agent.log")
    agent.wait_running()

    # a burst of 400 writes; SIGTERM arrives halfway through it
    halfway = threading.Event()

    def burst() -> None:
        for i in range(400):
            (root / f"burst/{i % 10}").mkdir(parents=True, exist_ok=True)
            (root / f"burst/{i % 10}/f{i}.txt").write_bytes(os.urandom(64) + str(i).encode())
            if i == 200:
                halfway.set()

    writer = threading.Thread(target=burst)
    writer.start()
    assert halfway.wait(30)
    agent.proc.send_signal(signal.SIGTERM)
    writer.join(30)

    assert agent.wait() == 0
    local = local_files(root)
    assert len(local) == 400
    assert _hashes(bucket_tree(s3, bucket)) == _hashes(local)
    assert any(line["message"] == "flush complete" for line in agent.logs())


def test_killed_agent_restarted_later_loses_nothing(
    s3: Any, bucket: str, env: dict[str, str], tmp_path: Path
) -> None:
    root = Path(env["WORKSPACE_DIR"])
    s3.put_object(Bucket=bucket, Key=key("keep.txt"), Body=b"keep")
    s3.put_object(Bucket=bucket, Key=key("gone.txt"), Body=b"to delete")
    first = AgentProcess(env, tmp_path / "first.log")
    first.wait_running()
    for i in range(50):
        (root / f"saved{i}.txt").write_text(f"saved {i}")
    eventually(lambda: len(bucket_tree(s3, bucket)) >= 10)
    first.kill()  # SIGKILL mid-push: no flush

    # while no agent runs, the user keeps working
    (root / "while-down.txt").write_text("written while the agent was down")
    (root / "keep.txt").write_text("keep, edited")
    (root / "gone.txt").unlink()

    second = AgentProcess(env, tmp_path / "second.log")
    second.wait_running()
    second.proc.send_signal(signal.SIGTERM)
    assert second.wait() == 0
    assert _hashes(bucket_tree(s3, bucket)) == _hashes(local_files(root))
    assert "gone.txt" not in bucket_tree(s3, bucket)
    assert len(local_files(root)) == 52


class _FaultInjector:
    """Answers some S3 requests with 500 InternalError / 503 SlowDown, or all of them during an outage."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.outage = False
        self.injected = 0
        self._random = random.Random(7)
        self._lock = threading.Lock()

    def __call__(self, request: Any, **_: Any) -> AWSResponse | None:
        with self._lock:
            fail = self.outage or self._random.random() < self.rate
            if not fail:
                return None
            self.injected += 1
            status, code = (503, "SlowDown") if self.injected % 2 else (500, "InternalError")
        body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
        return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, _Raw(body))


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, *_: Any, **__: Any) -> Any:
        yield self._body


def test_injected_errors_and_an_outage_are_retried_without_loss(
    s3: Any, bucket: str, agents: Any, env: dict[str, str], moto_endpoint: str
) -> None:
    for i in range(30):
        s3.put_object(Bucket=bucket, Key=key(f"remote/{i}.txt"), Body=f"remote {i}".encode())
    faults = _FaultInjector(rate=0.3)
    client = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "max_attempts": 2}, max_pool_connections=32),
    )
    client.meta.events.register("before-send.s3", faults)
    root = Path(env["WORKSPACE_DIR"])

    agent = agents(client).start()  # initial pull under 30% failures
    assert len(local_files(root)) == 30
    faults.outage = True  # S3 down: every local change must wait, not vanish
    injected_before = faults.injected
    for i in range(30):
        (root / f"local/{i}.txt").parent.mkdir(exist_ok=True)
        (root / f"local/{i}.txt").write_text(f"local {i}")
    eventually(lambda: faults.injected > injected_before, 30)  # the agent tried during the outage
    faults.outage = False
    assert agent.stop() == 0

    assert faults.injected > 30
    assert agent.agent.counters.errors > 0  # the agent's own retries were needed, not only botocore's
    assert _hashes(bucket_tree(s3, bucket)) == _hashes(local_files(root))
    assert len(local_files(root)) == 60
