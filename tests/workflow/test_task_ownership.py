"""A task event belongs to its task: only the task the record names speaks for the session.

ECS delivers an event for every task that carries the session's id as `startedBy`, and anyone who may
call RunTask can start such a task. The workflow tests run the real ASL and handlers; the step-by-step
tests drive the order of "event arrives" and "RunTask answers" that the workflow cannot force.
"""

from __future__ import annotations

from typing import Any

import pytest
from sessions.config import Settings
from sessions.ecs_tasks import EcsTasks, TaskFacts
from sessions.lifecycle import Lifecycle
from sessions.record import Status, TaskStatus, WaitingFor

from cloudide.offline.fargate import TaskScript
from tests.workflow.conftest import Offline
from tests.workflow.test_races import RecordingCallbacks


def test_a_stray_task_is_stopped_and_the_session_stays_ready_on_its_own_task(offline: Offline) -> None:
    # Given a READY session, watched by its workflow
    session = offline.new_session()
    execution = offline.start(session)
    ready = offline.wait_parked(session.session_id, WaitingFor.STOP)
    # When a second task starts with the session's id (its events name the session too)
    stray = offline.start_stray_task(session.session_id)
    # Then that task is stopped, saying why, and the session keeps its own task, READY
    stopped = offline.wait_task_status(stray, "STOPPED")
    assert session.session_id in stopped["stoppedReason"] and str(ready.task_arn) in stopped["stoppedReason"]
    current = offline.store.require(session.session_id)
    assert (current.status, current.task_arn, current.waiting_for) == (
        Status.READY,
        ready.task_arn,
        WaitingFor.STOP,
    )
    assert ready.task_arn and offline.task_status(ready.task_arn) == "RUNNING"
    # And the session still ends the ordinary way
    offline.lifecycle.request_stop(session.session_id, "user")
    assert offline.wait_execution(execution)["status"] == "SUCCEEDED"
    assert offline.states_entered(execution) == ["Provision", "Watch", "Stop"]
    ended = offline.assert_invariants(session.session_id)
    assert (ended.status, ended.status_reason, ended.task_arn) == (
        Status.STOPPED,
        "stopped by user",
        ready.task_arn,
    )


def test_a_stray_tasks_stopped_event_does_not_end_the_session(offline: Offline) -> None:
    # Given a READY session
    session = offline.new_session()
    execution = offline.start(session)
    ready = offline.wait_parked(session.session_id, WaitingFor.STOP)
    assert ready.task_arn
    ecs = offline.aws.ecs
    # When a STOPPED event arrives for another task with the session's id, newer than any of its own
    stray_stopped = ecs.event_detail(ecs.task(offline.cluster, ready.task_arn)) | {
        "taskArn": ready.task_arn.rsplit("/", 1)[0] + "/0123456789abcdef0123456789abcdef",
        "lastStatus": "STOPPED",
        "desiredStatus": "STOPPED",
        "stopCode": "EssentialContainerExited",
        "stoppedReason": "Essential container in task exited",
        "containers": [],
        "version": 99,
    }
    ecs.put_task_event(stray_stopped)
    # Then the session's own task still speaks for it: a later event of its own is applied
    ecs.report(
        offline.cluster,
        ready.task_arn,
        "STOPPED",
        stop_code="EssentialContainerExited",
        stopped_reason="Essential container in task exited",
        exit_code=3,
    )
    assert offline.wait_execution(execution)["status"] == "SUCCEEDED"
    assert offline.states_entered(execution) == ["Provision", "Watch", "TaskEnded"]
    ended = offline.assert_invariants(session.session_id)
    assert (ended.status, ended.task_arn, ended.exit_code) == (Status.FAILED, ready.task_arn, 3)
    assert (
        ended.status_reason
        == "the terminal container exited (exit code 3): Essential container in task exited"
    )


# Step by step -----------------------------------------------------------------------------------------


@pytest.fixture
def stepwise(offline: Offline) -> tuple[Lifecycle, RecordingCallbacks]:
    """A lifecycle on the offline stack whose workflow answers are recorded, not sent."""
    callbacks = RecordingCallbacks()
    assert offline.aws.stack is not None
    function = offline.aws.stack.physical_id("WorkflowFunction")
    environment = offline.aws.client("lambda").get_function_configuration(FunctionName=function)
    settings = Settings.model_validate(environment["Environment"]["Variables"] | {"AGENT_POLL_SECONDS": "0"})
    return Lifecycle(settings, offline.store, EcsTasks(settings), callbacks), callbacks  # type: ignore[arg-type]


OWN = "arn:aws:ecs:us-east-1:123456789012:task/cluster/00000000000000000000000000000001"
STRAY = "arn:aws:ecs:us-east-1:123456789012:task/cluster/00000000000000000000000000000002"


def test_versions_are_counted_per_task(offline: Offline, stepwise: tuple[Lifecycle, Any]) -> None:
    lifecycle, _ = stepwise
    # Given a starting session whose own task has said PENDING (version 1)
    session = offline.new_session()
    offline.store.transition(session.session_id, Status.STARTING, task_arn=OWN)
    lifecycle.on_task_facts(
        session.session_id, TaskFacts(task_arn=OWN, last_status=TaskStatus.PENDING, version=1)
    )
    # When a stray task's event with a higher version of its own arrives
    lifecycle.on_task_facts(
        session.session_id, TaskFacts(task_arn=STRAY, last_status=TaskStatus.RUNNING, version=7)
    )
    # Then it is not applied, and the own task's next version still is
    lifecycle.on_task_facts(
        session.session_id, TaskFacts(task_arn=OWN, last_status=TaskStatus.RUNNING, version=2)
    )
    current = offline.store.require(session.session_id)
    assert (current.task_arn, current.task_status, current.last_event_version) == (OWN, "RUNNING", 2)


def test_an_unknown_tasks_event_before_the_record_names_a_task_is_not_applied(
    offline: Offline, stepwise: tuple[Lifecycle, Any]
) -> None:
    lifecycle, _ = stepwise
    # Given a session whose RunTask has not answered yet
    session = offline.new_session()
    # When an event of a task the record does not name arrives
    lifecycle.on_task_facts(
        session.session_id, TaskFacts(task_arn=STRAY, last_status=TaskStatus.RUNNING, version=3)
    )
    # Then the record is unchanged: which task is the session's only RunTask's answer can say
    current = offline.store.require(session.session_id)
    assert (current.status, current.task_arn, current.task_status, current.last_event_version) == (
        Status.PROVISIONING,
        None,
        None,
        None,
    )


def test_the_own_tasks_event_racing_the_run_task_answer_is_not_lost(
    offline: Offline, stepwise: tuple[Lifecycle, RecordingCallbacks], monkeypatch: pytest.MonkeyPatch
) -> None:
    lifecycle, callbacks = stepwise
    session = offline.new_session()
    offline.fargate.scripts[session.session_id] = TaskScript(reach_running=False, pending_delay=0)
    run = EcsTasks.run
    versions: list[int] = []

    def running_before_the_answer(tasks: EcsTasks, *args: Any, **kwargs: Any) -> str:
        # The task starts and its RUNNING event is handled before the provision step records the task.
        arn = run(tasks, *args, **kwargs)
        offline.wait_task_status(arn, "PENDING")
        detail = offline.aws.ecs.set_task_status(offline.cluster, arn, "RUNNING", agent_status="RUNNING")
        versions.append(detail["version"])
        lifecycle.on_task_facts(
            session.session_id,
            TaskFacts(task_arn=arn, last_status=TaskStatus.RUNNING, version=detail["version"]),
        )
        return arn

    monkeypatch.setattr(EcsTasks, "run", running_before_the_answer)
    lifecycle.provision(session.session_id, "token-1")

    current = offline.store.require(session.session_id)
    assert current.task_arn and (current.status, current.task_status) == (Status.STARTING, "RUNNING")
    assert [current.last_event_version] == versions, "DescribeTasks reports the task's version, as events do"
    assert [(kind, token) for kind, token, _ in callbacks.answers] == [("success", "token-1")]
    lifecycle.request_stop(session.session_id, "user")
    lifecycle.stop(session.session_id, "token-2")
    offline.check_invariants()
