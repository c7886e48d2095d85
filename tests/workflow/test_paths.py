"""One test per path through the session workflow, on the real ASL, handlers and template.

Each test ends with the invariants: no task running without a live record, no live record without a
task, every ended record has a reason.
"""

from __future__ import annotations

import time

import pytest
from sessions import clock
from sessions.record import Status, WaitingFor

from cloudide.offline import moto_fixes
from cloudide.offline.fargate import TaskScript
from tests.workflow.conftest import Offline


def test_user_stop_while_ready(offline: Offline) -> None:
    session = offline.new_session()
    execution = offline.start(session)
    ready = offline.wait_status(session.session_id, Status.READY)

    offline.lifecycle.request_stop(session.session_id, "user")

    assert offline.wait_execution(execution)["status"] == "SUCCEEDED"
    ended = offline.assert_invariants(session.session_id)
    assert (ended.status, ended.status_reason) == (Status.STOPPED, "stopped by user")
    assert ended.stop_code == "UserInitiated"
    assert ready.task_arn and offline.task_status(ready.task_arn) == "STOPPED"
    assert offline.states_entered(execution) == ["Provision", "Watch", "Stop"]


def test_user_stop_before_a_task_exists(offline: Offline) -> None:
    session = offline.new_session()
    offline.lifecycle.request_stop(session.session_id, "user")

    execution = offline.start(session)

    assert offline.wait_execution(execution)["status"] == "SUCCEEDED"
    ended = offline.assert_invariants(session.session_id)
    assert (ended.status, ended.status_reason, ended.task_arn) == (Status.STOPPED, "stopped by user", None)
    assert offline.states_entered(execution) == ["Provision", "Stop"]


def test_user_stop_while_the_task_is_starting(offline: Offline) -> None:
    offline.fargate.script = TaskScript(reach_running=False)
    session = offline.new_session()
    execution = offline.start(session)
    offline.wait_parked(session.session_id, WaitingFor.RUNNING)  # the task is PENDING; the workflow waits
    starting = offline.wait_status(session.session_id, Status.STARTING)

    offline.lifecycle.request_stop(session.session_id, "user")

    assert offline.wait_execution(execution)["status"] == "SUCCEEDED"
    ended = offline.assert_invariants(session.session_id)
    assert (ended.status, ended.status_reason) == (Status.STOPPED, "stopped by user")
    assert starting.task_arn and offline.task_status(starting.task_arn) == "STOPPED"
    assert offline.states_entered(execution) == ["Provision", "Stop"]


def test_max_lifetime_stops_an_active_session(offline: Offline) -> None:
    session = offline.new_session(idle_seconds=3600, lifetime_seconds=4)
    execution = offline.start(session)

    assert offline.wait_execution(execution)["status"] == "SUCCEEDED"
    ended = offline.assert_invariants(session.session_id)
    assert (ended.status, ended.status_reason) == (Status.STOPPED, "reached the maximum lifetime of 4 s")


def test_activity_postpones_the_idle_stop(offline: Offline) -> None:
    # Given a READY session with a 3-second idle timeout
    session = offline.new_session(idle_seconds=3)
    execution = offline.start(session)
    offline.wait_status(session.session_id, Status.READY)
    # When the user is active every second for 6 seconds (twice the idle timeout)
    for _ in range(6):
        time.sleep(1)
        touched = offline.store.touch_activity(session.session_id, coalesce_seconds=0)
        assert touched is not None
        offline.lifecycle.heartbeat(touched)
    # Then it is still READY, and stops for idleness only once the activity ends
    assert offline.store.require(session.session_id).status is Status.READY
    last_activity = clock.now()
    assert offline.wait_execution(execution)["status"] == "SUCCEEDED"
    ended = offline.assert_invariants(session.session_id)
    assert (ended.status, ended.status_reason) == (Status.STOPPED, "idle for 3 s")
    assert clock.parse(ended.stopped_at or "") >= last_activity
    # Heartbeats kept the one watch step alive: activity cost no state transitions.
    assert offline.states_entered(execution).count("Watch") == 1


def test_capacity_failures_then_success_on_retry(offline: Offline) -> None:
    moto_fixes.SETTINGS.wait_scale = 0.01
    offline.aws.ecs.fail_next_run_tasks(2)
    session = offline.new_session(idle_seconds=1)
    execution = offline.start(session)

    ready = offline.wait_status(session.session_id, Status.READY)

    assert ready.provision_attempts == 2
    assert offline.states_entered(execution)[:2] == ["Provision", "Watch"]
    failed_attempts = [e for e in offline.history(execution) if e["type"] == "TaskFailed"]
    assert len(failed_attempts) == 2, "each capacity failure is one retried attempt"
    assert all(e["taskFailedEventDetails"]["error"] == "CapacityUnavailable" for e in failed_attempts)
    offline.wait_execution(execution)
    offline.assert_invariants(session.session_id)


def test_capacity_never_available_fails_the_session(offline: Offline) -> None:
    moto_fixes.SETTINGS.wait_scale = 0.01
    offline.aws.ecs.fail_next_run_tasks(20)
    session = offline.new_session()
    execution = offline.start(session)

    assert offline.wait_execution(execution)["status"] == "FAILED"
    ended = offline.assert_invariants(session.session_id)
    assert ended.status is Status.FAILED
    assert ended.status_reason and ended.status_reason.startswith("no Fargate capacity after 7 attempts")
    moto_fixes.SETTINGS.run_task_faults.clear()


def test_run_task_refused_for_good_fails_at_once(offline: Offline) -> None:
    offline.aws.ecs.fail_next_run_tasks(1, reason="MISSING: the subnet does not exist")
    session = offline.new_session()
    execution = offline.start(session)

    assert offline.wait_execution(execution)["status"] == "FAILED"
    ended = offline.assert_invariants(session.session_id)
    assert ended.status is Status.FAILED
    assert ended.status_reason == "could not start the task: MISSING: the subnet does not exist"
    assert offline.states_entered(execution) == ["Provision", "CleanUp", "SessionFailed"]


def test_task_never_running_times_out(offline: Offline) -> None:
    moto_fixes.SETTINGS.wait_scale = 0.005  # the 600 s start timeout passes in 3 s
    offline.fargate.script = TaskScript(reach_running=False)
    session = offline.new_session()
    execution = offline.start(session)

    assert offline.wait_execution(execution)["status"] == "FAILED"
    ended = offline.assert_invariants(session.session_id)
    assert ended.status is Status.FAILED
    assert ended.status_reason == "the task did not start in time (still PENDING)"
    assert ended.task_arn and offline.task_status(ended.task_arn) == "STOPPED"


def test_exec_agent_never_ready(offline: Offline) -> None:
    moto_fixes.SETTINGS.wait_scale = 0.01
    offline.fargate.script = TaskScript(agent_ready=False)
    session = offline.new_session()
    execution = offline.start(session)

    assert offline.wait_execution(execution)["status"] == "FAILED"
    ended = offline.assert_invariants(session.session_id)
    assert (ended.status, ended.status_reason) == (
        Status.FAILED,
        "the ECS Exec agent did not become ready in time",
    )
    assert ended.ready_at is None, "a session whose shell was never reachable was never READY"
    assert ended.task_arn and offline.task_status(ended.task_arn) == "STOPPED"


def test_task_crashes_while_starting(offline: Offline) -> None:
    offline.fargate.script = TaskScript(crash_on_start=True)
    session = offline.new_session()
    execution = offline.start(session)

    assert offline.wait_execution(execution)["status"] == "FAILED"
    ended = offline.assert_invariants(session.session_id)
    assert ended.status is Status.FAILED
    assert ended.status_reason == (
        "the task failed to start: CannotPullContainerError: pull image manifest has been retried 5 time(s)"
    )
    assert ended.stop_code == "TaskFailedToStart"


@pytest.mark.parametrize(
    ("changes", "status", "reason"),
    [
        pytest.param(
            {
                "stop_code": "EssentialContainerExited",
                "exit_code": 137,
                "stopped_reason": "Essential container exited",
            },
            Status.FAILED,
            "out of memory: the terminal exceeded its tier's memory (exit code 137)",
            id="out-of-memory",
        ),
    ],  # a Spot interruption, with its final flush: tests/reliability/test_workspace_faults.py
)
def test_task_dies_mid_session(
    offline: Offline, changes: dict[str, object], status: Status, reason: str
) -> None:
    session = offline.new_session()
    execution = offline.start(session)
    ready = offline.wait_status(session.session_id, Status.READY)
    assert ready.task_arn

    offline.fargate.crash(ready.task_arn, **changes)

    assert offline.wait_execution(execution)["status"] == "SUCCEEDED"
    ended = offline.assert_invariants(session.session_id)
    assert (ended.status, ended.status_reason) == (status, reason)
    assert offline.states_entered(execution) == ["Provision", "Watch", "TaskEnded"]


def test_duplicate_and_out_of_order_events_never_move_a_session_back(offline: Offline) -> None:
    session = offline.new_session()
    execution = offline.start(session)
    ready = offline.wait_status(session.session_id, Status.READY)
    assert ready.task_arn
    ecs = offline.aws.ecs
    running_event = ecs.event_detail(ecs.task(offline.cluster, ready.task_arn))

    # The task stops; its STOPPED event is delivered twice, then a stale RUNNING event arrives late.
    stopped_event = ecs.set_task_status(
        offline.cluster, ready.task_arn, "STOPPED", stop_code="SpotInterruption"
    )
    ecs.put_task_event(stopped_event)
    ecs.put_task_event(stopped_event)
    ecs.put_task_event(running_event)

    assert offline.wait_execution(execution)["status"] == "SUCCEEDED"
    ended = offline.assert_invariants(session.session_id)
    assert ended.status is Status.STOPPED
    assert ended.task_status == "STOPPED"
    assert ended.last_event_version == stopped_event["version"]
