"""The faults the workflow tests do not already cover, one test each, each ending with the shared
invariant check (tests/reliability/matrix.py lists every fault and its test).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from sessions.reconciler import Repair
from sessions.record import Status, WaitingFor
from sessions.store import SessionStore

from cloudide.offline import moto_fixes
from cloudide.offline.fargate import TaskScript
from cloudide.offline.faults import FAULTS
from tests.support import eventually
from tests.workflow.conftest import Offline

GRACE = 2.1  # past the test stack's 1 s grace, counted from the end of a record's whole second


def _failed_attempts(offline: Offline, execution: str) -> list[str]:
    return [
        e["taskFailedEventDetails"]["error"] for e in offline.history(execution) if e["type"] == "TaskFailed"
    ]


STORM_SCALE = 0.1  # step timeouts must outlast the SDK's own (unscaled) backoff of a few seconds


def _session_tasks(offline: Offline, session_id: str) -> list[str]:
    ecs: Any = offline.aws.client("ecs")
    return list(ecs.list_tasks(cluster=offline.cluster, startedBy=session_id)["taskArns"])


def test_run_task_throttling_storm(offline: Offline) -> None:
    # Given RunTask throttled eight times in a row (more than the SDK's own retries absorb)
    moto_fixes.SETTINGS.wait_scale = STORM_SCALE
    offline.aws.ecs.fail_next_run_tasks(8, error=("ThrottlingException", "Rate exceeded"))
    session = offline.new_session()
    # When the session starts
    execution = offline.start(session)
    # Then the workflow backs off through the storm and starts exactly one task
    ready = offline.wait_parked(session.session_id, WaitingFor.STOP, timeout=60)
    assert not moto_fixes.SETTINGS.run_task_faults, "the storm is over"
    retried = _failed_attempts(offline, execution)
    assert retried and set(retried) == {"CapacityUnavailable"}
    assert ready.provision_attempts == len(retried), "each throttled attempt left no task behind"
    assert _session_tasks(offline, session.session_id) == [ready.task_arn]
    offline.lifecycle.request_stop(session.session_id, "user")
    assert offline.wait_execution(execution)["status"] == "SUCCEEDED"
    offline.check_invariants()


def test_stop_task_throttling_storm(offline: Offline) -> None:
    # Given a READY session and StopTask throttled five times in a row
    moto_fixes.SETTINGS.wait_scale = STORM_SCALE
    session = offline.new_session()
    execution = offline.start(session)
    offline.wait_parked(session.session_id, WaitingFor.STOP)
    storm = FAULTS.inject("ecs", "StopTask", times=5)
    # When the user stops it
    offline.lifecycle.request_stop(session.session_id, "user")
    # Then the stop step retries the throttle (not the failure path) and the session stops normally
    assert offline.wait_execution(execution, timeout=60)["status"] == "SUCCEEDED"
    assert storm.hits == 5
    assert "ThrottlingException" in _failed_attempts(offline, execution)
    assert "CleanUp" not in offline.states_entered(execution)
    ended = offline.assert_invariants(session.session_id)
    assert (ended.status, ended.status_reason) == (Status.STOPPED, "stopped by user")


def test_dynamodb_throttling_storm_after_run_task(offline: Offline) -> None:
    # Given DynamoDB throttling the write that records the new task (no task events yet to compete)
    moto_fixes.SETTINGS.wait_scale = STORM_SCALE
    offline.fargate.script = TaskScript(pending_delay=4.0)  # longer than the SDK's three attempts back off
    storm = FAULTS.inject("dynamodb", "UpdateItem", code="ProvisionedThroughputExceededException", times=3)
    session = offline.new_session(idle_seconds=1)
    # When the session starts
    execution = offline.start(session)
    # Then the provision step is retried, not sent to CleanUp, and its retry reuses the task it started
    ready = offline.wait_status(session.session_id, Status.READY)
    assert storm.hits == 3
    assert _failed_attempts(offline, execution)[0] == "ThrottlingException"
    assert _session_tasks(offline, session.session_id) == [ready.task_arn], (
        "the client token prevented a second task"
    )
    assert offline.wait_execution(execution)["status"] == "SUCCEEDED"
    assert "CleanUp" not in offline.states_entered(execution)
    offline.check_invariants()


def test_user_stop_racing_the_idle_timeout(offline: Offline) -> None:
    # Given a watched session whose 2-second idle timer is about to fire
    session = offline.new_session(idle_seconds=2)
    execution = offline.start(session)
    offline.wait_parked(session.session_id, WaitingFor.STOP)
    time.sleep(1.95)
    # When the user stops it at that moment
    offline.lifecycle.request_stop(session.session_id, "user")
    # Then whichever wins, it stops once, and the user's request is the reason
    assert offline.wait_execution(execution)["status"] == "SUCCEEDED"
    assert offline.states_entered(execution).count("Stop") == 1
    ended = offline.assert_invariants(session.session_id)
    assert (ended.status, ended.status_reason) == (Status.STOPPED, "stopped by user")


def test_lost_stopped_event_is_repaired_by_the_reconciler(offline: Offline) -> None:
    # Given a session whose task stops but whose STOPPED event never arrives
    offline.fargate.script = TaskScript(stop_event=False)
    session = offline.new_session()
    execution = offline.start(session)
    offline.wait_parked(session.session_id, WaitingFor.STOP)
    offline.lifecycle.request_stop(session.session_id, "user")
    stuck = offline.wait_parked(session.session_id, WaitingFor.STOPPED)
    assert stuck.task_arn
    eventually(lambda: offline.task_status(stuck.task_arn) == "STOPPED")
    offline.clock.advance(GRACE)
    assert offline.store.require(session.session_id).status is Status.STOPPING, "nothing settles it alone"
    # When the reconciler runs once
    report = offline.reconcile()
    # Then it settles the session as the event would have, and the workflow finishes
    assert [(r["kind"], r["subject"]) for r in report["repairs"]] == [
        (Repair.SESSION_CLOSED.value, session.session_id)
    ]
    assert offline.wait_execution(execution)["status"] == "SUCCEEDED"
    ended = offline.assert_invariants(session.session_id)
    assert (ended.status, ended.status_reason) == (Status.STOPPED, "stopped by user")


def test_workflow_aborted_externally_is_wound_down_by_the_reconciler(offline: Offline) -> None:
    # Given a READY session whose workflow an operator aborted
    session = offline.new_session()
    execution = offline.start(session)
    ready = offline.wait_parked(session.session_id, WaitingFor.STOP)
    offline.aws.client("stepfunctions").stop_execution(executionArn=execution)
    assert offline.wait_execution(execution)["status"] == "ABORTED"
    offline.clock.advance(GRACE)
    # When the reconciler runs
    report = offline.reconcile()
    # Then the task is stopped and the record ends FAILED, saying why
    assert [(r["kind"], r["subject"]) for r in report["repairs"]] == [
        (Repair.ABANDONED_SESSION_STOPPED.value, session.session_id)
    ]
    ended = offline.wait_status(session.session_id, Status.FAILED)
    assert ended.status_reason == (
        "the session workflow ended (ABORTED) while the session was live; stopped by the reconciler"
    )
    assert ready.task_arn and offline.task_status(ready.task_arn) == "STOPPED"
    offline.check_invariants()


def test_task_event_handler_failing_twice_then_succeeding(offline: Offline) -> None:
    # Given a READY session and a task-event handler whose next two invocations fail
    moto_fixes.SETTINGS.wait_scale = 0.01  # Lambda's async retries come after 60 s and 120 s
    session = offline.new_session()
    execution = offline.start(session)
    ready = offline.wait_parked(session.session_id, WaitingFor.STOP)
    assert ready.task_arn and offline.aws.stack
    handler = offline.aws.stack.physical_id("TaskEventsFunction")
    moto_fixes.SETTINGS.function_failures[handler] = 2
    # When the task runs out of memory
    offline.fargate.crash(ready.task_arn, stop_code="EssentialContainerExited", exit_code=137)
    # Then Lambda's third attempt records it and the session ends with the reason
    assert offline.wait_execution(execution)["status"] == "SUCCEEDED"
    assert moto_fixes.SETTINGS.function_failures[handler] == 0, "both failures happened"
    ended = offline.assert_invariants(session.session_id)
    assert (ended.status, ended.status_reason) == (
        Status.FAILED,
        "out of memory: the terminal exceeded its tier's memory (exit code 137)",
    )


def test_stop_landing_while_the_watch_step_parks(offline: Offline, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a stop request that lands inside the watch step, just before it parks its token
    park = SessionStore.park_token

    def stop_lands_first(store: SessionStore, session_id: str, token: str, waiting_for: WaitingFor) -> Any:
        if waiting_for is WaitingFor.STOP:
            store.request_stop(session_id, requested_by="user")
        return park(store, session_id, token, waiting_for)

    monkeypatch.setattr(SessionStore, "park_token", stop_lands_first)
    session = offline.new_session()
    # When the session starts
    execution = offline.start(session)
    # Then the watch step answers its own token at once and the session stops (not after the idle hour)
    assert offline.wait_execution(execution)["status"] == "SUCCEEDED"
    assert offline.states_entered(execution) == ["Provision", "Watch", "Stop"]
    ended = offline.assert_invariants(session.session_id)
    assert (ended.status, ended.status_reason) == (Status.STOPPED, "stopped by user")
