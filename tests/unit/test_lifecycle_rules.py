"""The decisions of a session's life that need no AWS: when to stop, how it ended, how long to watch."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from sessions import clock
from sessions.lifecycle import ending, failure_reason, stop_reason, watch_limits
from sessions.record import Session, Status

NOW = datetime.fromisoformat("2026-01-01T12:00:00+00:00")


def session(**fields: Any) -> Session:
    """READY since 10:00, idle timeout 30 min, lifetime 12 h, last active 11:50."""
    item = {
        "sessionId": "8c0e7a52-3f1b-4d6e-9a27-5b4c1d2e3f60",
        "ownerId": "user-1",
        "projectId": "hello-world",
        "image": "base",
        "tier": "small",
        "status": "READY",
        "createdAt": "2026-01-01T10:00:00Z",
        "lastActivityAt": "2026-01-01T11:50:00Z",
        "idleTimeoutSeconds": 1800,
        "maxLifetimeSeconds": 12 * 3600,
        "idleDeadline": "2026-01-01T12:20:00Z",
        "lifetimeDeadline": "2026-01-01T22:00:00Z",
    }
    return Session.from_item(item | fields)


# stop_reason -----------------------------------------------------------------------------------------


def test_an_active_session_within_its_lifetime_keeps_running() -> None:
    assert stop_reason(session(), NOW) is None


def test_idle_past_the_deadline_stops() -> None:
    assert stop_reason(session(idleDeadline="2026-01-01T12:00:00Z"), NOW) == "idle for 30 min"


def test_lifetime_within_the_slack_stops_and_says_how_long() -> None:
    assert stop_reason(session(lifetimeDeadline="2026-01-01T12:00:04Z"), NOW) == (
        "reached the maximum lifetime of 12 h"
    )


def test_a_stop_request_wins_over_the_limits_and_names_who_asked() -> None:
    stopped = session(
        stopRequestedAt="2026-01-01T11:59:00Z",
        stopRequestedBy="operator",
        idleDeadline="2026-01-01T11:00:00Z",
    )
    assert stop_reason(stopped, NOW) == "stopped by operator"


@pytest.mark.parametrize(("seconds", "text"), [(90, "90 s"), (300, "5 min"), (7200, "2 h")])
def test_durations_read_naturally(seconds: int, text: str) -> None:
    idle = session(idleTimeoutSeconds=seconds, idleDeadline="2026-01-01T11:00:00Z")
    assert stop_reason(idle, NOW) == f"idle for {text}"


# watch_limits --------------------------------------------------------------------------------------


def test_watch_limits_are_the_idle_timeout_and_the_remaining_lifetime() -> None:
    assert watch_limits(session(), NOW) == {"idleTimeoutSeconds": 1800, "lifetimeRemainingSeconds": 10 * 3600}


def test_heartbeat_stays_below_the_timeout_near_the_end_of_life() -> None:
    limits = watch_limits(session(lifetimeDeadline="2026-01-01T12:10:00Z"), NOW)
    assert limits == {"idleTimeoutSeconds": 599, "lifetimeRemainingSeconds": 600}


def test_an_expired_lifetime_still_gives_step_functions_valid_limits() -> None:
    limits = watch_limits(session(lifetimeDeadline="2026-01-01T11:00:00Z"), NOW)
    assert 0 < limits["idleTimeoutSeconds"] < limits["lifetimeRemainingSeconds"]


# ending --------------------------------------------------------------------------------------------


def stopped_task(**fields: Any) -> Session:
    return session(taskStatus="STOPPED", **fields)


@pytest.mark.parametrize(
    ("fields", "status", "reason"),
    [
        pytest.param(
            {"status": "STOPPING", "statusReason": "idle for 30 min", "endStatus": "STOPPED"},
            Status.STOPPED,
            "idle for 30 min",
            id="stopping-as-planned",
        ),
        pytest.param(
            {"status": "STOPPING", "statusReason": "ProvisioningFailed: bad", "endStatus": "FAILED"},
            Status.FAILED,
            "ProvisioningFailed: bad",
            id="stopping-on-the-failure-path",
        ),
        pytest.param(
            {"stopRequestedAt": "2026-01-01T11:59:00Z", "stopCode": "UserInitiated"},
            Status.STOPPED,
            "stopped by user",
            id="stop-requested-before-stopping",
        ),
        pytest.param(
            {"exitCode": 137, "stopCode": "EssentialContainerExited"},
            Status.FAILED,
            "out of memory: the terminal exceeded its tier's memory (exit code 137)",
            id="oom",
        ),
        pytest.param(
            {"stopCode": "SpotInterruption", "exitCode": 0},
            Status.STOPPED,
            "Fargate Spot reclaimed the capacity (SpotInterruption); the workspace was flushed",
            id="spot",
        ),
        pytest.param(
            {"stopCode": "TaskFailedToStart", "taskStoppedReason": "CannotPullContainerError: not found"},
            Status.FAILED,
            "the task failed to start: CannotPullContainerError: not found",
            id="failed-to-start",
        ),
        pytest.param(
            {"stopCode": "EssentialContainerExited", "exitCode": 1, "taskStoppedReason": "exited"},
            Status.FAILED,
            "the terminal container exited (exit code 1): exited",
            id="container-exited",
        ),
        pytest.param(
            {
                "stopCode": "EssentialContainerExited",
                "taskStoppedReason": "Essential container in task exited",
            },
            Status.FAILED,
            "the terminal container exited: Essential container in task exited",
            id="container-exited-event-without-containers",
        ),
        pytest.param(
            {"stopCode": "ServiceSchedulerInitiated"},
            Status.FAILED,
            "the task stopped unexpectedly (ServiceSchedulerInitiated): no reason given",
            id="unknown-cause",
        ),
    ],
)
def test_ending_explains_how_the_session_ended(fields: dict[str, Any], status: Status, reason: str) -> None:
    assert ending(stopped_task(**fields)) == (status, reason)


def test_oom_is_named_whatever_the_stop_code() -> None:
    """137 is SIGKILL: with OutOfMemoryError it is the tier's memory limit, the user must hear that."""
    status, reason = ending(stopped_task(exitCode=137, stopCode="TaskFailedToStart"))
    assert status is Status.FAILED and "out of memory" in reason


# failure_reason ------------------------------------------------------------------------------------


def lambda_error(name: str, message: str) -> dict[str, str]:
    """The error object Step Functions puts in the state when a Lambda step raised."""
    return {
        "Error": name,
        "Cause": json.dumps({"errorMessage": message, "errorType": name, "stackTrace": []}),
    }


@pytest.mark.parametrize(
    ("error", "fields", "reason"),
    [
        (
            {"Error": "States.Timeout", "Cause": ""},
            {"taskStatus": "PENDING"},
            "the task did not start in time (still PENDING)",
        ),
        (
            {"Error": "States.HeartbeatTimeout"},
            {"status": "PROVISIONING"},
            "the task did not start in time (still PROVISIONING)",
        ),
        (
            lambda_error("AgentNotReady", "task RUNNING, exec agent PENDING"),
            {},
            "the ECS Exec agent did not become ready in time",
        ),
        (
            lambda_error("CapacityUnavailable", "Capacity is unavailable at this time"),
            {"provisionAttempts": 4},
            "no Fargate capacity after 4 attempts: Capacity is unavailable at this time",
        ),
        (
            lambda_error("ProvisioningFailed", "ClientException: TaskDefinition is inactive"),
            {},
            "could not start the task: ClientException: TaskDefinition is inactive",
        ),
        ({"Error": "Lambda.ServiceException", "Cause": "not json"}, {}, "Lambda.ServiceException: not json"),
    ],
)
def test_failure_reason_reads_the_step_functions_error(
    error: dict[str, str], fields: dict[str, Any], reason: str
) -> None:
    assert failure_reason(session(**fields), error) == reason


def test_failure_reason_is_bounded() -> None:
    assert len(failure_reason(session(), {"Error": "Boom", "Cause": "x" * 10_000})) == 500


def test_deadlines_compare_as_the_workflow_compares_them() -> None:
    """The workflow compares RFC 3339 strings; the record's format must sort like the instants."""
    assert clock.rfc3339(NOW) == "2026-01-01T12:00:00Z"
    assert clock.later(NOW, 1) > clock.rfc3339(NOW) > clock.later(NOW, -1)
