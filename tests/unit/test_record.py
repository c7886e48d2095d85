"""Status only moves forward; the store's conditions are built from these rules."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from sessions import api_models
from sessions.record import ENDED, LIVE, Session, SessionView, Status, TaskStatus

ORDER = [Status.PROVISIONING, Status.STARTING, Status.READY, Status.STOPPING]
# The record's fields users never see, by item attribute name.
INTERNAL = {
    "executionArn",
    "lastEventVersion",
    "strayTaskArns",
    "stopRequestedReason",
    "endStatus",
    "provisionAttempts",
    "waitToken",
    "waitingFor",
    "expiresAt",
}


def test_live_statuses_are_ordered_and_end_in_stopped_or_failed() -> None:
    assert [s.rank for s in ORDER] == sorted(s.rank for s in ORDER)
    assert len({s.rank for s in ORDER}) == len(ORDER)
    assert Status.STOPPED.rank == Status.FAILED.rank > Status.STOPPING.rank
    assert set(LIVE) == set(ORDER) and {Status.STOPPED, Status.FAILED} == ENDED
    assert all(s.is_live for s in LIVE) and not any(s.is_live for s in ENDED)


@pytest.mark.parametrize(
    ("status", "predecessors"),
    [
        (Status.PROVISIONING, ()),
        (Status.STARTING, (Status.PROVISIONING,)),
        (Status.READY, (Status.PROVISIONING, Status.STARTING)),
        (Status.STOPPING, (Status.PROVISIONING, Status.STARTING, Status.READY)),
        (Status.STOPPED, tuple(ORDER)),
        (Status.FAILED, tuple(ORDER)),
    ],
)
def test_predecessors_are_the_earlier_live_statuses(status: Status, predecessors: tuple[Status, ...]) -> None:
    assert status.predecessors() == predecessors


@pytest.mark.parametrize("status", list(Status))
def test_no_status_can_be_reached_from_itself_or_from_an_end(status: Status) -> None:
    assert status not in status.predecessors()
    assert not ENDED & set(status.predecessors())


def full_record(**fields: Any) -> Session:
    """A record with every field set, as a stopped session's record can be."""
    item = {
        "sessionId": "s",
        "ownerId": "o",
        "projectId": "p",
        "image": "base",
        "tier": "small",
        "status": "STOPPED",
        "statusReason": "stopped by user",
        "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/c/1",
        "executionArn": "arn:aws:states:us-east-1:123456789012:execution:m:s",
        "createdAt": "2026-01-01T10:00:00Z",
        "readyAt": "2026-01-01T10:00:30Z",
        "lastActivityAt": "2026-01-01T10:00:00Z",
        "idleTimeoutSeconds": 1800,
        "maxLifetimeSeconds": 43200,
        "idleDeadline": "2026-01-01T10:30:00Z",
        "lifetimeDeadline": "2026-01-01T22:00:00Z",
        "stopRequestedAt": "2026-01-01T10:10:00Z",
        "stopRequestedBy": "user",
        "stopRequestedReason": "no client attached for 5 min",
        "idlePolicy": "input",
        "disconnectGraceSeconds": 300,
        "clientsAttached": 0,
        "lastReportAt": "2026-01-01T10:09:00Z",
        "stoppingAt": "2026-01-01T10:10:01Z",
        "stoppedAt": "2026-01-01T10:10:30Z",
        "taskStatus": "STOPPED",
        "stopCode": "UserInitiated",
        "exitCode": 0,
        "taskStoppedReason": "stopped by user",
        "capacityProvider": "FARGATE_SPOT",
        "lastEventVersion": 3,
        "strayTaskArns": {"arn:aws:ecs:us-east-1:123456789012:task/c/2"},
        "endStatus": "STOPPED",
        "provisionAttempts": 1,
        "waitToken": "secret",
        "waitingFor": "STOP",
        "expiresAt": 1,
        "live": "1",
    }
    return Session.from_item(item | fields)


def attributes(model: type[SessionView]) -> set[str]:
    """The item attribute (JSON) names of a model's fields."""
    return {field.alias or name for name, field in model.model_fields.items()}


def test_public_view_hides_the_workflow_internals() -> None:
    session = full_record()

    public = session.public()

    assert not INTERNAL & set(public)
    assert public["status"] == "STOPPED" and public["sessionId"] == "s"
    assert session.to_item()["waitToken"] == "secret"


def test_every_record_field_is_public_or_named_internal() -> None:
    """A new record field must be a decision: shown to users (in SessionView) or internal (here)."""
    record, public = attributes(Session), attributes(SessionView)
    assert record - public == INTERNAL
    assert set(full_record().to_item()) - {"live"} == record, "the full record sets every field"


def test_the_api_shows_exactly_the_records_public_fields() -> None:
    public = full_record().public()

    shown = api_models.SessionView.model_validate(public).model_dump(by_alias=True, mode="json")

    assert shown == public
    assert set(public) == attributes(SessionView)


def test_updates_name_record_fields_and_are_validated_as_their_type() -> None:
    assert Session.item_fields(task_status=TaskStatus.RUNNING, end_status=Status.FAILED, ready_at=None) == {
        "taskStatus": "RUNNING",
        "endStatus": "FAILED",
    }
    with pytest.raises(TypeError, match="taskArn"):
        Session.item_fields(taskArn="arn")
    with pytest.raises(ValidationError):
        Session.item_fields(task_status="RUNNIN")
