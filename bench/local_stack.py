"""Local time to a prompt: `POST /sessions` to READY on the local stack, and what the stack costs in memory.

LOCAL FIGURES: one laptop-class machine, moto as the AWS, sandboxes as the tasks. They say how quickly the
control plane and the local task runner turn a request into a terminal here, not what Fargate does (image
pull and ENI attachment dominate there; docs/aws-facts.md).

Each READY time is split at the task's lifecycle: the sandbox's share runs from the runner's PENDING
report (it adopted the task RunTask created) to its exec-agent RUNNING report (the entrypoint is up and
its first pull is done); everything else (API, workflow steps, events, the READY write, polling) is the
control plane's. Memory is the resident set of the stack's process plus every sandbox process.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from cloudide.localstack.stack import LocalStack, LocalStackConfig

SESSIONS = 20
POLL_S = 0.02


class Timeline:
    """When the runner reported each task's lifecycle steps (wraps the offline ECS driver's report)."""

    def __init__(self) -> None:
        self.marks: dict[tuple[str, str], float] = {}

    def watch(self, ecs: Any) -> None:
        """Record the runner's reports: task statuses, and the exec agent's readiness."""
        report, set_agent_status = ecs.report, ecs.set_agent_status

        def reported(cluster: str, task_arn: str, last_status: str, **changes: Any) -> Any:
            result = report(cluster, task_arn, last_status, **changes)
            self.marks.setdefault((task_arn, last_status), time.monotonic())
            if changes.get("agent_status") == "RUNNING":
                self.marks.setdefault((task_arn, "AGENT"), time.monotonic())
            return result

        def agent(cluster: str, task_arn: str, agent_status: str) -> Any:
            result = set_agent_status(cluster, task_arn, agent_status)
            if agent_status == "RUNNING":
                self.marks.setdefault((task_arn, "AGENT"), time.monotonic())
            return result

        ecs.report, ecs.set_agent_status = reported, agent

    def sandbox_seconds(self, task_arn: str) -> float:
        return self.marks[(task_arn, "AGENT")] - self.marks[(task_arn, "PENDING")]


class BackgroundStack:
    """The local stack on its own event loop thread, so the bench can be plain blocking code."""

    def __init__(self, state_dir: Path) -> None:
        self.config = LocalStackConfig(api_port=0, gateway_port=0, state_dir=state_dir)
        self.stack: LocalStack | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            async with LocalStack(self.config, progress=lambda line: None) as stack:
                self.stack = stack
                self._ready.set()
                await self._stop.wait()
        except BaseException as error:
            self._error = error
            self._ready.set()

    def __enter__(self) -> LocalStack:
        self._thread.start()
        self._ready.wait(180)
        if self._error or self.stack is None:
            raise RuntimeError(f"the local stack did not start: {self._error!r}")
        return self.stack

    def __exit__(self, *exc_info: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(180)


def _call(api: str, method: str, path: str, user: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        api + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer local:{user}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"null")


def _until(api: str, session_id: str, user: str, status: str, timeout_s: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        session = _call(api, "GET", f"/sessions/{session_id}", user)
        if session["status"] == status:
            return dict(session)
        if session["status"] in ("STOPPED", "FAILED") and status not in ("STOPPED", "FAILED"):
            raise RuntimeError(f"session ended before {status}: {session['statusReason']}")
        time.sleep(POLL_S)
    raise TimeoutError(f"session {session_id} not {status} after {timeout_s} s")


def _start_to_ready(api: str, user: str) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    session_id = _call(api, "POST", "/sessions", user, {"projectId": "bench"})["sessionId"]
    ready = _until(api, session_id, user, "READY")
    return time.monotonic() - started, ready


def _stop(api: str, session: dict[str, Any]) -> None:
    _call(api, "DELETE", f"/sessions/{session['sessionId']}", session["ownerId"])
    _until(api, session["sessionId"], session["ownerId"], "STOPPED")


def _rss_mb(root_pid: int) -> float:
    """Resident memory of a process and all its descendants."""
    children: dict[int, list[int]] = {}
    rss_kb: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = dict(
                line.split(":", 1) for line in (entry / "status").read_text().splitlines() if ":" in line
            )
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(status["PPid"]), []).append(pid)
        rss_kb[pid] = int(status.get("VmRSS", "0 kB").split()[0])
    total, pending = 0, [root_pid]
    while pending:
        pid = pending.pop()
        total += rss_kb.get(pid, 0)
        pending += children.get(pid, [])
    return round(total / 1024, 1)


def _p(values: list[float], q: int) -> float:
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 3)


def run() -> dict[str, Any]:
    timeline = Timeline()
    with TemporaryDirectory(prefix="cloudide-bench-") as state, BackgroundStack(Path(state)) as stack:
        assert stack.aws is not None and stack.endpoints is not None and stack.runner is not None
        timeline.watch(stack.aws.ecs)
        api = stack.endpoints.api
        time.sleep(1.0)
        rss_idle = _rss_mb(os.getpid())

        sequential, control_plane = [], []
        for n in range(SESSIONS):
            seconds, ready = _start_to_ready(api, f"seq-{n}")
            sequential.append(seconds)
            control_plane.append(seconds - timeline.sandbox_seconds(ready["taskArn"]))
            _stop(api, ready)

        with ThreadPoolExecutor(SESSIONS) as pool:
            results = list(pool.map(lambda n: _start_to_ready(api, f"crowd-{n}"), range(SESSIONS)))
            rss_20 = _rss_mb(os.getpid())
            list(pool.map(lambda result: _stop(api, result[1]), results))
        concurrent = [seconds for seconds, _ in results]
        concurrent_control_plane = [
            seconds - timeline.sandbox_seconds(session["taskArn"]) for seconds, session in results
        ]
        isolation = stack.runner.isolation

    return {
        "note": "local figures (moto + sandboxed processes on this machine), not Fargate's",
        "isolation": isolation,
        "sessions": SESSIONS,
        "ready_p50_s": _p(sequential, 50),
        "ready_p95_s": _p(sequential, 95),
        "control_plane_p50_s": _p(control_plane, 50),
        "control_plane_p95_s": _p(control_plane, 95),
        "sandbox_p50_s": _p([a - b for a, b in zip(sequential, control_plane, strict=True)], 50),
        "concurrent20_ready_p50_s": _p(concurrent, 50),
        "concurrent20_ready_p95_s": _p(concurrent, 95),
        "concurrent20_control_plane_p95_s": _p(concurrent_control_plane, 95),
        "rss_idle_mb": rss_idle,
        "rss_20_sessions_mb": rss_20,
    }
