"""The real template deployed into the offline AWS, with a fake Fargate that moves tasks like ECS does.

Each test creates one session record the way the API does and starts the real state machine for it;
`FakeFargate` plays the ECS side (task states, exec agent, StopTask) according to the test's script,
emitting the task-state events that the real rule delivers to the real handler.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloudide.offline import moto_fixes
from cloudide.offline.stack import OfflineAws
from sessions import clock
from sessions.callbacks import WorkflowCallbacks
from sessions.config import Settings
from sessions.ecs_tasks import EcsTasks
from sessions.lifecycle import Lifecycle
from sessions.record import Session, Status
from sessions.store import SessionStore

ROOT = Path(__file__).resolve().parents[2]
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


@dataclass
class TaskScript:
    """How the fake Fargate treats the next task it sees."""

    reach_running: bool = True
    agent_ready: bool = True
    crash_on_start: bool = False  # STOPPED with TaskFailedToStart instead of RUNNING
    pending_delay: float = 0.05
    running_delay: float = 0.1
    stop_delay: float = 0.1
    stop_event: bool = True  # False: the STOPPED event is lost


@dataclass
class FakeFargate:
    """Moves every task of the cluster through PENDING -> RUNNING (-> agent RUNNING), and to STOPPED on
    StopTask, emitting the task-state events ECS would."""

    aws: OfflineAws
    cluster: str
    script: TaskScript = field(default_factory=TaskScript)
    seen: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.aws.ecs.on_stop_task(self._on_stop_task)
        watcher = threading.Thread(target=self._watch, name="fake-fargate", daemon=True)
        watcher.start()
        self._threads.append(watcher)

    def close(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        ecs = self.aws.client("ecs")
        while not self._stop.is_set():
            for arn in ecs.list_tasks(cluster=self.cluster, desiredStatus="RUNNING").get("taskArns", []):
                if arn not in self.seen:
                    self.seen.add(arn)
                    self._spawn(self._start_task, arn, self.script)
            self._stop.wait(0.05)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _start_task(self, arn: str, script: TaskScript) -> None:
        time.sleep(script.pending_delay)
        self.aws.ecs.report(self.cluster, arn, "PENDING")
        time.sleep(script.running_delay)
        if script.crash_on_start:
            self.aws.ecs.report(
                self.cluster, arn, "STOPPED", stop_code="TaskFailedToStart",
                stopped_reason="CannotPullContainerError: pull image manifest has been retried 5 time(s)",
            )  # fmt: skip
            return
        if not script.reach_running:
            return
        self.aws.ecs.report(self.cluster, arn, "RUNNING", agent_status="RUNNING" if script.agent_ready else "PENDING")

    def _on_stop_task(self, task: Any) -> None:
        self._spawn(self._stop_task, task.task_arn, self.script)

    def _stop_task(self, arn: str, script: TaskScript) -> None:
        time.sleep(script.stop_delay)
        detail = self.aws.ecs.set_task_status(
            self.cluster, arn, "STOPPED", stop_code="UserInitiated", stopped_reason="Task stopped by user", exit_code=0
        )
        if script.stop_event:
            self.aws.ecs.put_task_event(detail)

    def crash(self, arn: str, **changes: Any) -> dict[str, Any]:
        """The task dies on its own (OOM, Spot interruption, ...): emit its STOPPED event."""
        return self.aws.ecs.report(self.cluster, arn, "STOPPED", **changes)


@dataclass
class Offline:
    aws: OfflineAws
    store: SessionStore
    cluster: str
    state_machine_arn: str
    fargate: FakeFargate
    table_name: str

    @property
    def lifecycle(self) -> Lifecycle:
        """The control plane's Lifecycle on this stack: what the API calls for stop and activity."""
        settings = Settings(SESSIONS_TABLE=self.table_name, CLUSTER_ARN=self.cluster)
        return Lifecycle(settings, self.store, EcsTasks(settings), WorkflowCallbacks())

    def new_session(self, *, idle_seconds: int = 3600, lifetime_seconds: int = 12 * 3600) -> Session:
        moment = clock.now()
        session = Session(
            sessionId=str(uuid.uuid4()),
            ownerId="user-1",
            projectId="demo",
            image="base",
            tier="small",
            status=Status.PROVISIONING,
            createdAt=clock.rfc3339(moment),
            lastActivityAt=clock.rfc3339(moment),
            idleTimeoutSeconds=idle_seconds,
            maxLifetimeSeconds=lifetime_seconds,
            idleDeadline=clock.later(moment, idle_seconds),
            lifetimeDeadline=clock.later(moment, lifetime_seconds),
        )
        return self.store.create(session)

    def start(self, session: Session) -> str:
        sfn = self.aws.client("stepfunctions")
        return str(
            sfn.start_execution(
                stateMachineArn=self.state_machine_arn,
                name=session.session_id,
                input=f'{{"sessionId": "{session.session_id}"}}',
            )["executionArn"]
        )

    def wait_status(self, session_id: str, *statuses: Status, timeout: float = 20) -> Session:
        deadline = time.monotonic() + timeout
        while True:
            session = self.store.require(session_id)
            if session.status in statuses:
                return session
            if time.monotonic() > deadline:
                raise AssertionError(f"session still {session.status} ({session.status_reason}), wanted {statuses}")
            time.sleep(0.05)

    def wait_execution(self, execution_arn: str, timeout: float = 30) -> dict[str, Any]:
        sfn = self.aws.client("stepfunctions")
        deadline = time.monotonic() + timeout
        while (described := sfn.describe_execution(executionArn=execution_arn))["status"] not in TERMINAL_STATES:
            if time.monotonic() > deadline:
                raise AssertionError(f"execution still {described['status']} after {timeout} s")
            time.sleep(0.05)
        return described

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        sfn = self.aws.client("stepfunctions")
        return list(sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"])

    def states_entered(self, execution_arn: str) -> list[str]:
        return [
            e["stateEnteredEventDetails"]["name"] for e in self.history(execution_arn) if "stateEnteredEventDetails" in e
        ]

    def task_status(self, task_arn: str) -> str:
        ecs = self.aws.client("ecs")
        return str(ecs.describe_tasks(cluster=self.cluster, tasks=[task_arn])["tasks"][0]["lastStatus"])

    def assert_invariants(self, session_id: str) -> Session:
        """No task running without a live record; no live record without a task; ended records say why."""
        session = self.store.require(session_id)
        ecs = self.aws.client("ecs")
        running = ecs.list_tasks(cluster=self.cluster, startedBy=session_id, desiredStatus="RUNNING")["taskArns"]
        live_tasks = [arn for arn in running if self.task_status(arn) != "STOPPED"]
        if session.status.is_live:
            assert live_tasks or session.status is Status.PROVISIONING, f"live record without a task: {session}"
        else:
            assert not live_tasks, f"{session.status} record but tasks still running: {live_tasks}"
            assert session.status_reason, "ended record without a reason"
            assert session.wait_token is None
        return session


@pytest.fixture(scope="module")
def offline_stack() -> Iterator[OfflineAws]:
    with OfflineAws(ROOT / "template.yaml", parameters={"TerminalImageUri": "local/terminal:dev"}) as aws:
        yield aws


@pytest.fixture
def offline(offline_stack: OfflineAws, monkeypatch: pytest.MonkeyPatch) -> Iterator[Offline]:
    # Workflow steps must not sleep while holding the offline Lambda lock: the Retry rules do the waiting.
    monkeypatch.setenv("AGENT_POLL_SECONDS", "0")
    moto_fixes.SETTINGS.wait_scale = 1.0
    stack = offline_stack.stack
    assert stack is not None
    cluster = stack.outputs["ClusterName"]
    fargate = FakeFargate(offline_stack, cluster)
    fargate.start()
    try:
        yield Offline(
            aws=offline_stack,
            store=SessionStore(stack.outputs["SessionsTableName"]),
            cluster=cluster,
            state_machine_arn=stack.outputs["StateMachineArn"],
            fargate=fargate,
            table_name=stack.outputs["SessionsTableName"],
        )
    finally:
        fargate.close()
        moto_fixes.SETTINGS.wait_scale = 1.0
        moto_fixes.SETTINGS.run_task_faults.clear()
        moto_fixes.SETTINGS.stop_task_listeners.clear()

