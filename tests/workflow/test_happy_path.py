"""Happy path: provision -> RUNNING -> exec agent -> READY -> idle -> stop, on the real workflow."""

from __future__ import annotations

from sessions.record import Status

from tests.workflow.conftest import Offline


def test_session_runs_until_idle_then_stops(offline: Offline) -> None:
    # Given a session with a 2-second idle timeout
    session = offline.new_session(idle_seconds=2)
    # When its workflow runs and nobody is active
    execution = offline.start(session)
    ready = offline.wait_status(session.session_id, Status.READY)
    described = offline.wait_execution(execution)
    # Then it became READY with a task, then stopped for idleness
    assert ready.task_arn and ready.ready_at
    assert described["status"] == "SUCCEEDED"
    ended = offline.assert_invariants(session.session_id)
    assert ended.status is Status.STOPPED
    assert ended.status_reason == "idle for 2 s"
    assert offline.task_status(ready.task_arn) == "STOPPED"
    assert offline.states_entered(execution) == ["Provision", "Watch", "Evaluate", "StopOrWatch", "Stop"]
