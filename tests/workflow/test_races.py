"""Races between the workflow, the task-event handler and the API, in both orders.

The callback races are driven step by step (the offline Lambda runs one handler at a time, so the
workflow alone cannot force the "event before token" order); the idle race runs the real workflow.
"""

from __future__ import annotations

from typing import Any

import pytest
from sessions import clock
from sessions.config import Settings
from sessions.ecs_tasks import EcsTasks, TaskFacts
from sessions.lifecycle import Lifecycle
from sessions.record import Status, TaskStatus

from tests.support import eventually
from tests.workflow.conftest import Offline


class RecordingCallbacks:
    def __init__(self) -> None:
        self.answers: list[tuple[str, str, Any]] = []

    def succeed(self, token: str, output: dict[str, Any]) -> bool:
        self.answers.append(("success", token, output))
        return True

    def fail(self, token: str, error: str, cause: str) -> bool:
        self.answers.append(("failure", token, error))
        return True

    def heartbeat(self, token: str) -> bool:
        self.answers.append(("heartbeat", token, None))
        return True


@pytest.fixture
def stepwise(offline: Offline) -> tuple[Lifecycle, RecordingCallbacks, str]:
    """A lifecycle whose answers are recorded, and a session whose task exists and is starting."""
    callbacks = RecordingCallbacks()
    settings = Settings(SESSIONS_TABLE=offline.table_name, CLUSTER_ARN=offline.cluster)
    lifecycle = Lifecycle(settings, offline.store, EcsTasks(settings), callbacks)  # type: ignore[arg-type]
    session = offline.new_session()
    offline.store.transition(session.session_id, Status.STARTING, task_arn="arn:aws:ecs:task/t-1")
    return lifecycle, callbacks, session.session_id


RUNNING = TaskFacts(task_arn="arn:aws:ecs:task/t-1", last_status=TaskStatus.RUNNING, version=2)


def test_running_event_before_the_token_is_parked(
    stepwise: tuple[Lifecycle, RecordingCallbacks, str],
) -> None:
    lifecycle, callbacks, session_id = stepwise
    lifecycle.on_task_facts(session_id, RUNNING)
    assert callbacks.answers == [], "no token parked yet: nothing to answer"

    lifecycle.provision(session_id, "token-1")  # the task exists: parks the token, sees RUNNING

    assert [(kind, token) for kind, token, _ in callbacks.answers] == [("success", "token-1")]


def test_running_event_after_the_token_is_parked(stepwise: tuple[Lifecycle, RecordingCallbacks, str]) -> None:
    lifecycle, callbacks, session_id = stepwise
    lifecycle.provision(session_id, "token-1")
    assert callbacks.answers == []

    lifecycle.on_task_facts(session_id, RUNNING)

    assert [(kind, token) for kind, token, _ in callbacks.answers] == [("success", "token-1")]


def test_stop_request_racing_the_provision_step(
    stepwise: tuple[Lifecycle, RecordingCallbacks, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lifecycle, callbacks, session_id = stepwise
    store = lifecycle._store
    park = store.park_token

    def stop_lands_first(*args: Any, **kwargs: Any) -> Any:
        # The user's DELETE lands after the step checked for a stop request but before it parked.
        lifecycle.request_stop(session_id, "user")
        return park(*args, **kwargs)

    monkeypatch.setattr(store, "park_token", stop_lands_first)
    lifecycle.provision(session_id, "token-1")

    assert [(kind, token, err) for kind, token, err in callbacks.answers] == [
        ("failure", "token-1", "StopRequested")
    ]


def test_redelivered_event_completes_what_a_failed_delivery_left(
    stepwise: tuple[Lifecycle, RecordingCallbacks, str],
) -> None:
    lifecycle, callbacks, session_id = stepwise
    lifecycle.provision(session_id, "token-1")
    stopped = TaskFacts(
        task_arn="arn:aws:ecs:task/t-1", last_status=TaskStatus.STOPPED, stop_code="UserInitiated", version=3
    )
    lifecycle._store.record_task_facts(session_id, stopped)  # delivery died after this

    lifecycle.on_task_facts(session_id, stopped)  # the retry is a duplicate version...

    ended = lifecycle._store.require(session_id)  # ...yet it still ends the record and answers the token
    assert ended.status is Status.FAILED
    assert [(kind, err) for kind, _, err in callbacks.answers] == [("failure", "TaskStopped")]


def test_activity_racing_the_idle_timeout_keeps_the_session(offline: Offline) -> None:
    # Given a READY session with a 2-second idle timeout
    session = offline.new_session(idle_seconds=2)
    execution = offline.start(session)
    ready = offline.wait_status(session.session_id, Status.READY)
    # When activity is recorded before the timer fires but its heartbeat never reaches the workflow: in
    # a later (whole) second than READY, so that it moves the deadline, and at once, so that it lands
    # well before the 2-second timer even on a busy machine
    assert ready.ready_at
    eventually(lambda: clock.now() > clock.parse(ready.ready_at))
    assert offline.store.touch_activity(session.session_id, coalesce_seconds=0) is not None
    # Then the timer's evaluation sees the activity and watches again; the session stops only later
    assert offline.wait_execution(execution)["status"] == "SUCCEEDED"
    assert offline.states_entered(execution) == [
        "Provision", "Watch", "Evaluate", "StopOrWatch", "Watch", "Evaluate", "StopOrWatch", "Stop",
    ]  # fmt: skip
    ended = offline.assert_invariants(session.session_id)
    assert (ended.status, ended.status_reason) == (Status.STOPPED, "idle for 2 s")


def test_two_concurrent_stops_end_the_session_once(offline: Offline) -> None:
    session = offline.new_session()
    execution = offline.start(session)
    offline.wait_status(session.session_id, Status.READY)

    first = offline.lifecycle.request_stop(session.session_id, "user")
    second = offline.lifecycle.request_stop(session.session_id, "admin")

    assert first.stop_requested_at == second.stop_requested_at
    assert second.stop_requested_by == "user", "the first request's author is kept"
    assert offline.wait_execution(execution)["status"] == "SUCCEEDED"
    ended = offline.assert_invariants(session.session_id)
    assert (ended.status, ended.status_reason) == (Status.STOPPED, "stopped by user")
