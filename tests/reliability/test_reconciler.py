"""The reconciler's repairs, each from a state the event-driven path can leave behind.

Offline, EventBridge schedules do not fire: each test invokes the deployed ReconcilerFunction as its
schedule would. The test stack's grace period is 1 s (template default 120 s).
"""

from __future__ import annotations

import threading
from typing import Any

from sessions.callbacks import WorkflowCallbacks
from sessions.config import Settings
from sessions.ecs_tasks import TASK_GROUP, EcsTasks
from sessions.lifecycle import Lifecycle
from sessions.reconciler import ORPHAN_REASON, Reconciler, Repair
from sessions.record import Status, WaitingFor
from sessions.workflows import Workflows

from cloudide.offline.fargate import TaskScript
from tests.workflow.conftest import Offline

GRACE = 2.1  # past the test stack's 1 s grace, counted from the end of a record's whole second


def _repairs(report: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r["kind"], r["subject"]) for r in report["repairs"]]


def _run_stray_task(offline: Offline, started_by: str) -> str:
    """A task of this product that no session record names (as a lost RunTask response would leave)."""
    ecs: Any = offline.aws.client("ecs")
    definition = offline.aws.stack.outputs["TerminalTaskDefinitionArn"] if offline.aws.stack else ""
    task = ecs.run_task(
        cluster=offline.cluster,
        taskDefinition=definition,
        startedBy=started_by,
        group=TASK_GROUP,
        launchType="FARGATE",
        networkConfiguration={"awsvpcConfiguration": {"subnets": [_subnet(offline)]}},
    )["tasks"][0]
    return str(task["taskArn"])


def _subnet(offline: Offline) -> str:
    return str(offline.aws.client("ec2").describe_subnets()["Subnets"][0]["SubnetId"])


def _reconciler(offline: Offline, *, grace_seconds: float, max_repairs: int = 100) -> Reconciler:
    settings = Settings(SESSIONS_TABLE=offline.table_name, CLUSTER_ARN=offline.cluster)
    tasks = EcsTasks(settings)
    lifecycle = Lifecycle(settings, offline.store, tasks, WorkflowCallbacks())
    return Reconciler(
        offline.store,
        tasks,
        lifecycle,
        Workflows(offline.state_machine_arn),
        grace_seconds=grace_seconds,
        max_repairs=max_repairs,
    )


def test_a_task_without_a_live_session_is_stopped(offline: Offline) -> None:
    # Given a task for a session that has ended (its events lost: the event path would stop it at
    # once), and one for a session that never existed
    session = offline.new_session()
    offline.store.transition(session.session_id, Status.FAILED, reason="could not start the task: test")
    offline.fargate.scripts[session.session_id] = TaskScript(start_events=False)
    ended_sessions_task = _run_stray_task(offline, session.session_id)
    unknown_task = _run_stray_task(offline, "no-such-session")
    offline.clock.advance(GRACE)
    assert len(offline.violations()) == 2, "the invariant check sees both leaks"

    report = offline.reconcile()

    assert sorted(_repairs(report)) == sorted(
        [
            (Repair.ORPHAN_TASK_STOPPED.value, ended_sessions_task),
            (Repair.ORPHAN_TASK_STOPPED.value, unknown_task),
        ]
    )
    ecs: Any = offline.aws.client("ecs")
    stopped = ecs.describe_tasks(cluster=offline.cluster, tasks=[ended_sessions_task, unknown_task])["tasks"]
    assert {t["stoppedReason"] for t in stopped} == {ORPHAN_REASON}
    assert _repairs(offline.reconcile()) == [], "a second run finds nothing left to repair"
    offline.check_invariants()


def test_nothing_younger_than_the_grace_period_is_touched(offline: Offline) -> None:
    stray = _run_stray_task(offline, "no-such-session")

    young = _reconciler(offline, grace_seconds=3600).run()

    assert young.repairs == []
    assert offline.task_status(stray) != "STOPPED"
    settled = _reconciler(offline, grace_seconds=0).run()
    assert settled.repairs == [(Repair.ORPHAN_TASK_STOPPED, stray)]
    offline.check_invariants()


def test_a_run_makes_at_most_max_repairs_and_the_next_run_continues(offline: Offline) -> None:
    strays = {_run_stray_task(offline, f"gone-{i}") for i in range(3)}

    first = _reconciler(offline, grace_seconds=0, max_repairs=2).run()
    second = _reconciler(offline, grace_seconds=0, max_repairs=2).run()

    assert (len(first.repairs), first.truncated) == (2, True)
    assert (len(second.repairs), second.truncated) == (1, False)
    assert {subject for _, subject in first.repairs + second.repairs} == strays
    offline.check_invariants()


def test_two_runs_at_once_repair_everything_once(offline: Offline) -> None:
    # Given two orphans and a session whose workflow was aborted
    strays = {_run_stray_task(offline, f"gone-{i}") for i in range(2)}
    session = offline.new_session()
    execution = offline.start(session)
    offline.wait_status(session.session_id, Status.READY)
    offline.aws.client("stepfunctions").stop_execution(executionArn=execution)
    offline.clock.advance(1)  # a record's whole-second timestamps make it up to 1 s younger than it is
    reports: list[Any] = []

    # When two reconcilers run at the same moment
    runs = [
        threading.Thread(target=lambda: reports.append(_reconciler(offline, grace_seconds=0).run()))
        for _ in range(2)
    ]
    for run in runs:
        run.start()
    for run in runs:
        run.join(30)

    # Then every orphan is stopped and the session ends once, whichever run got there first
    stopped = {
        subject
        for report in reports
        for kind, subject in report.repairs
        if kind is Repair.ORPHAN_TASK_STOPPED
    }
    assert stopped == strays
    ended = offline.wait_status(session.session_id, Status.FAILED)
    assert ended.status_reason == (
        "the session workflow ended (ABORTED) while the session was live; stopped by the reconciler"
    )
    offline.check_invariants()


def test_a_workflow_still_running_for_an_ended_session_is_stopped(offline: Offline) -> None:
    # Given a watched session whose record was ended behind its workflow's back
    session = offline.new_session()
    execution = offline.start(session)
    ready = offline.wait_parked(session.session_id, WaitingFor.STOP)
    offline.store.transition(session.session_id, Status.FAILED, reason="ended by an operator")
    offline.clock.advance(GRACE)

    report = offline.reconcile()

    assert sorted(_repairs(report)) == sorted(
        [
            (Repair.ORPHAN_TASK_STOPPED.value, ready.task_arn or ""),
            (Repair.WORKFLOW_STOPPED.value, session.session_id),
        ]
    )
    assert offline.wait_execution(execution)["status"] == "ABORTED"
    offline.check_invariants()
