"""The real template deployed into the offline AWS, with a fake Fargate that moves tasks like ECS does.

Each test creates one session record the way the API does and starts the real state machine for it;
`FakeFargate` plays the ECS side (task states, exec agent, StopTask) according to the test's script,
emitting the task-state events that the real rule delivers to the real handler.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sessions import clock
from sessions.callbacks import WorkflowCallbacks
from sessions.config import Settings
from sessions.ecs_tasks import EcsTasks
from sessions.lifecycle import Lifecycle
from sessions.record import Session, Status, WaitingFor
from sessions.store import SessionStore
from sessions.usage import IdlePolicy

from cloudide.offline import faults, invariants, moto_fixes
from cloudide.offline.clock import ScaledClock
from cloudide.offline.fargate import FakeFargate
from cloudide.offline.stack import OfflineAws
from cloudide.offline.waiting import eventually

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
    clock: ScaledClock  # the handlers' time: `clock.advance(s)` lets a grace pass without sleeping
    created: list[str] = field(default_factory=list)  # sessions this test made: the invariants' scope
    # Workspaces a sync agent kept for this test (S3 key prefix -> local root): their files must be in S3.
    workspaces: dict[str, Path] = field(default_factory=dict)

    @property
    def lifecycle(self) -> Lifecycle:
        """The control plane's Lifecycle on this stack: what the API calls for stop and activity."""
        settings = Settings(SESSIONS_TABLE=self.table_name, CLUSTER_ARN=self.cluster)
        return Lifecycle(settings, self.store, EcsTasks(settings), WorkflowCallbacks())

    def new_session(
        self,
        *,
        idle_seconds: int = 3600,
        lifetime_seconds: int = 12 * 3600,
        project_id: str = "demo",
        idle_policy: IdlePolicy = IdlePolicy.WORK,
        grace_seconds: int = 300,
    ) -> Session:
        session = Session.new(
            owner_id="user-1",
            project_id=project_id,
            image="base",
            tier="small",
            idle_timeout_seconds=idle_seconds,
            max_lifetime_seconds=lifetime_seconds,
            idle_policy=idle_policy,
            disconnect_grace_seconds=grace_seconds,
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
        def current() -> Session:
            return self.store.require(session_id)

        return eventually(
            lambda: (session := current()).status in statuses and session,
            timeout,
            explain=lambda: f"session {current().status} ({current().status_reason}), wanted {statuses}",
        )

    def wait_parked(self, session_id: str, waiting_for: WaitingFor, timeout: float = 20) -> Session:
        """Until the workflow has parked its callback token for `waiting_for` on the record."""
        return eventually(
            lambda: (session := self.store.require(session_id)).waiting_for is waiting_for and session,
            timeout,
            explain=lambda: f"no token parked for {waiting_for}",
        )

    def wait_execution(self, execution_arn: str, timeout: float = 30) -> dict[str, Any]:
        sfn = self.aws.client("stepfunctions")
        return eventually(
            lambda: (
                (d := sfn.describe_execution(executionArn=execution_arn))["status"] in TERMINAL_STATES and d
            ),
            timeout,
        )

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

    def start_stray_task(self, session_id: str) -> str:
        return start_stray_task(self.aws, self.store.require(session_id))

    def wait_task_status(self, task_arn: str, last_status: str, timeout: float = 20) -> dict[str, Any]:
        """The task as DescribeTasks shows it once it has reached `last_status`."""
        ecs = self.aws.client("ecs")

        def reached() -> dict[str, Any] | None:
            task = ecs.describe_tasks(cluster=self.cluster, tasks=[task_arn])["tasks"][0]
            return dict(task) if task["lastStatus"] == last_status else None

        return eventually(reached, timeout, explain=lambda: f"{task_arn} is {self.task_status(task_arn)}")

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


def start_stray_task(aws: OfflineAws, session: Session) -> str:
    """A second task carrying the session's id (startedBy), started as the workflow starts its own
    (an operator's RunTask, a replayed request): ECS accepts it, and its events name the session."""
    assert aws.stack is not None
    function = aws.stack.physical_id("WorkflowFunction")
    environment = aws.client("lambda").get_function_configuration(FunctionName=function)["Environment"]
    tasks = EcsTasks(Settings.model_validate(environment["Variables"]))
    return tasks.run(session, client_token=f"stray-{session.session_id}", spot=False)


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
    stack = offline_stack.stack
    assert stack is not None
    cluster = stack.outputs["ClusterName"]
    fargate = FakeFargate(offline_stack, cluster)
    handlers_clock = ScaledClock()
    monkeypatch.setattr(clock, "precise_now", handlers_clock.precise_now)
    with moto_fixes.SETTINGS.scoped(wait_scale=1.0), faults.FAULTS.scoped():
        fargate.start()
        try:
            yield Offline(
                aws=offline_stack,
                store=SessionStore(stack.outputs["SessionsTableName"]),
                cluster=cluster,
                state_machine_arn=stack.outputs["StateMachineArn"],
                fargate=fargate,
                table_name=stack.outputs["SessionsTableName"],
                clock=handlers_clock,
            )
        finally:
            fargate.close()
