"""Status only moves forward; the store's conditions are built from these rules."""

from __future__ import annotations

import pytest
from sessions.record import ENDED, LIVE, Session, Status

ORDER = [Status.PROVISIONING, Status.STARTING, Status.READY, Status.STOPPING]


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


def test_public_view_hides_the_workflow_internals() -> None:
    session = Session.from_item(
        {
            "sessionId": "s",
            "ownerId": "o",
            "projectId": "p",
            "image": "base",
            "tier": "small",
            "status": "READY",
            "createdAt": "2026-01-01T10:00:00Z",
            "lastActivityAt": "2026-01-01T10:00:00Z",
            "idleTimeoutSeconds": 1800,
            "maxLifetimeSeconds": 43200,
            "idleDeadline": "2026-01-01T10:30:00Z",
            "lifetimeDeadline": "2026-01-01T22:00:00Z",
            "waitToken": "secret",
            "waitingFor": "STOP",
            "lastEventVersion": 3,
            "provisionAttempts": 1,
            "expiresAt": 1,
            "endStatus": "STOPPED",
            "live": "1",
        }
    )

    public = session.public()

    assert not {
        "waitToken",
        "waitingFor",
        "lastEventVersion",
        "provisionAttempts",
        "expiresAt",
        "endStatus",
    } & set(public)
    assert public["status"] == "READY" and public["sessionId"] == "s"
    assert session.to_item()["waitToken"] == "secret"
