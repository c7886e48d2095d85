"""The real template deployed into the offline AWS, with a fake Fargate that moves tasks like ECS does.

Each test creates one session record the way the API does and starts the real state machine for it;
`FakeFargate` plays the ECS side (task states, exec agent, StopTask) according to the test's script,
emitting the task-state events that the real rule delivers to the real handler.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sessions.callbacks import WorkflowCallbacks
from sessions.config import Settings
from sessions.ecs_tasks import EcsTasks
from sessions.lifecycle import Lifecycle
from sessions.record import Session, Status, WaitingFor
from sessions.store import SessionStore

from cloudide.offline import faults, invariants, moto_fixes
from cloudide.offline.fargate import FakeFargate
from cloudide.offline.stack import OfflineAws

ROOT = Path(__file__).resolve().parents[2]
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


@dataclass
class Offline:
    aws: OfflineAws
    store: SessionStore
    cluster: str
    state_machine_arn: str
    fargate: FakeFargate
    table_name: str
    created: list[str] = field(default_factory=list)  # sessions this test made: the invariants' scope
    # Workspaces a sync agent kept for this test (S3 key prefix -> local root): their files must be in S3.
    workspaces: dict[str, Path] = field(default_factory=dict)

    @property
    def lifecycle(self) -> Lifecycle:
        """The control plane's Lifecycle on this stack: what the API calls for stop and activity."""
        settings = Settings(SESSIONS_TABLE=self.table_name, CLUSTER_ARN=self.cluster)
        return Lifecycle(settings, self.store, EcsTasks(settings), WorkflowCallbacks())

    def new_session(
        self, *, idle_seconds: int = 3600, lifetime_seconds: int = 12 * 3600, project_id: str = "demo"
    ) -> Session:
        session = Session.new(
            owner_id="user-1",
            project_id=project_id,
            image="base",
            tier="small",
            idle_timeout_seconds=idle_seconds,
            max_lifetime_seconds=lifetime_seconds,
        )
        self.created.append(session.session_id)
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
                raise AssertionError(
                    f"session still {session.status} ({session.status_reason}), wanted {statuses}"
                )
            time.sleep(0.05)

    def wait_parked(self, session_id: str, waiting_for: WaitingFor, timeout: float = 20) -> Session:
        """Until the workflow has parked its callback token for `waiting_for` on the record."""
        deadline = time.monotonic() + timeout
        while (session := self.store.require(session_id)).waiting_for is not waiting_for:
            if time.monotonic() > deadline:
                raise AssertionError(f"no token parked for {waiting_for} (session {session.status})")
            time.sleep(0.05)
        return session

    def wait_execution(self, execution_arn: str, timeout: float = 30) -> dict[str, Any]:
        sfn = self.aws.client("stepfunctions")
        deadline = time.monotonic() + timeout
        while (described := sfn.describe_execution(executionArn=execution_arn))[
            "status"
        ] not in TERMINAL_STATES:
            if time.monotonic() > deadline:
                raise AssertionError(f"execution still {described['status']} after {timeout} s")
            time.sleep(0.05)
        return described

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        sfn = self.aws.client("stepfunctions")
        return list(sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"])

    def states_entered(self, execution_arn: str) -> list[str]:
        return [
            e["stateEnteredEventDetails"]["name"]
            for e in self.history(execution_arn)
            if "stateEnteredEventDetails" in e
        ]

    def task_status(self, task_arn: str) -> str:
        ecs = self.aws.client("ecs")
        return str(ecs.describe_tasks(cluster=self.cluster, tasks=[task_arn])["tasks"][0]["lastStatus"])

    def reconcile(self) -> dict[str, Any]:
        """One reconciler run: the deployed function, invoked as its schedule would (schedules do not
        fire offline)."""
        response = self.aws.client("lambda").invoke(
            FunctionName=self.aws.stack.physical_id("ReconcilerFunction") if self.aws.stack else "",
            Payload=json.dumps({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}),
        )
        payload = json.loads(response["Payload"].read())
        assert "FunctionError" not in response, payload
        return dict(payload)

    def violations(self) -> list[str]:
        """The invariants (cloudide.offline.invariants) over every session this test made, every task in
        the cluster and every workspace a sync agent kept, as they stand now."""
        table = self.aws.session().resource("dynamodb").Table(self.table_name)
        problems = invariants.session_violations(self.aws.client("ecs"), self.cluster, table, self.created)
        bucket = self.aws.stack.outputs["WorkspaceBucketName"] if self.aws.stack else ""
        for prefix, root in self.workspaces.items():
            saved = invariants.saved_files(root)
            problems += invariants.missing_files(self.aws.client("s3"), bucket, prefix, saved)
        return problems

    def check_invariants(self) -> None:
        """The one invariant check every workflow and fault test ends with, once things have settled."""
        problems = invariants.wait_for(self.violations)
        assert not problems, problems

    def assert_invariants(self, session_id: str) -> Session:
        """`check_invariants`, then the session's record for the test's own assertions."""
        self.check_invariants()
        return self.store.require(session_id)


@pytest.fixture(scope="module")
def stack_parameters() -> dict[str, str]:
    """The template parameters of the module's stack; a test module overrides it for another setup."""
    return {"TerminalImageUri": "local/terminal:dev", "ReconcilerGraceSeconds": "1"}


@pytest.fixture(scope="module")
def offline_stack(stack_parameters: dict[str, str]) -> Iterator[OfflineAws]:
    with OfflineAws(ROOT / "template.yaml", parameters=stack_parameters) as aws:
        faults.install()
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
        moto_fixes.SETTINGS.function_failures.clear()
        faults.FAULTS.clear()
