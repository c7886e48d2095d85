"""`cloudide local` run as a user runs it (a process, on free ports), and what the tests ask of it.

The stack is a subprocess, so the tests reach it only as an IDE or an operator would: the REST API, the
page, `cloudide attach`, and the local AWS endpoint it advertises in ``<state>/stack.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from tests.support import eventually, free_port

CLOUDIDE = Path(sys.executable).with_name("cloudide")
STARTUP_TIMEOUT_S = 120.0
SHUTDOWN_TIMEOUT_S = 120.0
TIME_SCALE = 0.05  # a 1-minute idle timeout passes in 3 s


class ApiError(AssertionError):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


class Deployment:
    """A running CloudIDE Terminals: its REST API as the IDE calls it, its AWS as an operator sees it."""

    stack_name: str
    api: str

    def token(self, user: str) -> str:
        raise NotImplementedError

    def client(self, service: str) -> Any:
        raise NotImplementedError

    # -- the REST API, as the IDE calls it ----------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None, *, user: str = "me") -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.api + path,
            method=method,
            data=data,
            headers={"Authorization": f"Bearer {self.token(user)}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raise ApiError(error.code, json.loads(error.read() or b"null")) from None

    def start_session(self, *, user: str = "me", **body: Any) -> dict[str, Any]:
        return dict(self.call("POST", "/sessions", {"projectId": "demo", **body}, user=user))

    def session(self, session_id: str, *, user: str = "me") -> dict[str, Any]:
        return dict(self.call("GET", f"/sessions/{session_id}", user=user))

    def wait_status(
        self, session_id: str, *statuses: str, user: str = "me", timeout_s: float = 60.0
    ) -> dict[str, Any]:
        return eventually(
            lambda: (session := self.session(session_id, user=user))["status"] in statuses and session,
            timeout_s,
            interval=0.2,
            explain=lambda: f"session {session_id} is {self.session(session_id, user=user)}, not {statuses}",
        )

    # -- its AWS, as an operator sees it ------------------------------------------------------------------

    def output_value(self, key: str) -> str:
        stack = self.client("cloudformation").describe_stacks(StackName=self.stack_name)["Stacks"][0]
        return next(o["OutputValue"] for o in stack["Outputs"] if o["OutputKey"] == key)

    def workspace_object(self, session: dict[str, Any], name: str) -> bytes | None:
        """A file of the session's workspace as the local S3 holds it, or None."""
        bucket = self.output_value("WorkspaceBucketName")
        key = f"workspaces/{session['ownerId']}/{session['projectId']}/{name}"
        try:
            return bytes(self.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
        except self.client("s3").exceptions.NoSuchKey:
            return None

    def physical_id(self, logical_id: str) -> str:
        resource = self.client("cloudformation").describe_stack_resource(
            StackName=self.stack_name, LogicalResourceId=logical_id
        )
        return str(resource["StackResourceDetail"]["PhysicalResourceId"])

    def running_tasks(self) -> list[str]:
        cluster = self.output_value("ClusterName")
        return list(self.client("ecs").list_tasks(cluster=cluster, desiredStatus="RUNNING")["taskArns"])


@dataclass
class RunningStack(Deployment):
    """`cloudide local` as a process; its endpoints come from the `stack.json` it writes."""

    process: subprocess.Popen[bytes]
    log: Path
    state_dir: Path
    endpoints: dict[str, str] = field(default_factory=dict)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property  # type: ignore[override]
    def stack_name(self) -> str:
        return self.endpoints["stackName"]

    @property  # type: ignore[override]
    def api(self) -> str:
        return self.endpoints["apiUrl"]

    @property
    def gateway(self) -> str:
        return self.endpoints["gatewayUrl"]

    def token(self, user: str) -> str:
        return f"local:{user}"

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoints["endpointUrl"],
            region_name=self.endpoints["region"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def sandbox_processes(self) -> list[int]:
        """Processes started for this stack's tasks: anything whose command line names its state dir."""
        return processes_mentioning(str(self.state_dir / "tasks"))


def processes_mentioning(text: str) -> list[int]:
    found = []
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def wait_healthy(stack: RunningStack, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    stack_json = stack.state_dir / "stack.json"

    def healthy() -> bool:
        if stack.process.poll() is not None:
            raise AssertionError(f"cloudide local exited with {stack.process.returncode}:\n{stack.output}")
        if stack_json.is_file():
            stack.endpoints = json.loads(stack_json.read_text())
            with (
                contextlib.suppress(OSError, ValueError),
                urllib.request.urlopen(stack.api + "/health", timeout=2) as response,
            ):
                return bool(json.loads(response.read()).get("status") == "ready")
        return False

    eventually(healthy, timeout_s, interval=0.2, explain=lambda: stack.output)


def stop(stack: RunningStack, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> int:
    """Ctrl-C, as the user's terminal sends it (to the whole process group); returns the exit code."""
    if stack.process.poll() is None:
        os.killpg(stack.process.pid, signal.SIGINT)
    try:
        return stack.process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(stack.process.pid, signal.SIGKILL)
        stack.process.wait(10)
        raise AssertionError(f"cloudide local did not stop within {timeout_s} s:\n{stack.output}") from None


@contextlib.contextmanager
def local_stack(
    state_dir: Path,
    *extra: str,
    command: Sequence[str] | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
) -> Iterator[RunningStack]:
    """`cloudide local` on free ports with compressed time, healthy; stopped (Ctrl-C) on exit.

    `command` replaces the command line (e.g. `make local`), `env` adds to this process's environment."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / "cloudide-local.log"
    argv = list(command) if command else [
        str(CLOUDIDE), "local",
        "--api-port", str(free_port()), "--gateway-port", str(free_port()),
        "--state-dir", str(state_dir), "--time-scale", str(TIME_SCALE), *extra,
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
        )
    stack = RunningStack(process, log, state_dir)
    try:
        wait_healthy(stack, startup_timeout_s)
        yield stack
    finally:
        stop(stack)
