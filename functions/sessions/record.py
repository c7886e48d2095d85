"""The session record: one DynamoDB item per terminal session, and the rules its status obeys.

Status only moves forward (PROVISIONING -> STARTING -> READY -> STOPPING -> STOPPED | FAILED). The
store enforces that with a condition on every write, so a late or duplicated event can never move a
session back to life, and the workflow and the event handler can race without a lock.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from sessions import clock
from sessions.usage import IdlePolicy


class Status(StrEnum):
    PROVISIONING = "PROVISIONING"
    STARTING = "STARTING"
    READY = "READY"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    FAILED = "FAILED"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def is_live(self) -> bool:
        return self not in ENDED

    def predecessors(self) -> tuple[Status, ...]:
        """The statuses a session may move to this one from (strictly earlier, never an ended one)."""
        return tuple(s for s in Status if s.rank < self.rank and s.is_live)


_RANK = {
    Status.PROVISIONING: 0,
    Status.STARTING: 1,
    Status.READY: 2,
    Status.STOPPING: 3,
    Status.STOPPED: 4,
    Status.FAILED: 4,
}
ENDED = frozenset({Status.STOPPED, Status.FAILED})
LIVE = tuple(s for s in Status if s not in ENDED)


class WaitingFor(StrEnum):
    """What the workflow's parked callback token is waiting for."""

    RUNNING = "RUNNING"  # provision: the task-state event saying the task runs
    STOP = "STOP"  # watch: a stop request or the task ending (idle/lifetime end by timeout)
    STOPPED = "STOPPED"  # stop: the task-state event saying the task stopped


class TaskStatus(StrEnum):
    """An ECS task's `lastStatus` (or `desiredStatus`), in the order of the task lifecycle."""

    PROVISIONING = "PROVISIONING"
    PENDING = "PENDING"
    ACTIVATING = "ACTIVATING"
    RUNNING = "RUNNING"
    DEACTIVATING = "DEACTIVATING"
    STOPPING = "STOPPING"
    DEPROVISIONING = "DEPROVISIONING"
    STOPPED = "STOPPED"

    @property
    def is_going_away(self) -> bool:
        """The task is on its way to STOPPED (or there): it will never run the shell again."""
        return self in _GOING_AWAY


_GOING_AWAY = frozenset(
    {TaskStatus.DEACTIVATING, TaskStatus.STOPPING, TaskStatus.DEPROVISIONING, TaskStatus.STOPPED}
)


# The public part of the record is the REST API's session shape: the record (Session) extends it with
# the workflow's internals, so the record and the API cannot drift apart.
class SessionView(BaseModel):
    """A session as its owner sees it."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    session_id: str = Field(alias="sessionId")
    owner_id: str = Field(alias="ownerId")
    project_id: str = Field(alias="projectId")
    image: str
    tier: str
    status: Status
    status_reason: str | None = Field(None, alias="statusReason")
    task_arn: str | None = Field(None, alias="taskArn", description="The session's own ECS task")
    created_at: str = Field(alias="createdAt")
    ready_at: str | None = Field(None, alias="readyAt")
    last_activity_at: str = Field(alias="lastActivityAt")
    idle_timeout_seconds: int = Field(alias="idleTimeoutSeconds")
    max_lifetime_seconds: int = Field(alias="maxLifetimeSeconds")
    idle_deadline: str = Field(alias="idleDeadline")
    lifetime_deadline: str = Field(alias="lifetimeDeadline")
    stop_requested_at: str | None = Field(None, alias="stopRequestedAt")
    stop_requested_by: str | None = Field(None, alias="stopRequestedBy")
    # What counts as use for this session, fixed at start from the owner's groups (sessions/usage.py).
    idle_policy: IdlePolicy = Field(IdlePolicy.WORK, alias="idlePolicy")
    disconnect_grace_seconds: int = Field(300, alias="disconnectGraceSeconds")
    # From the task's last usage report: tmux clients attached, and when it reported.
    clients_attached: int | None = Field(None, alias="clientsAttached")
    last_report_at: str | None = Field(None, alias="lastReportAt")
    stopping_at: str | None = Field(None, alias="stoppingAt", description="When the session began to stop")
    stopped_at: str | None = Field(None, alias="stoppedAt")
    # Facts observed about the session's own ECS task (from its task-state events and DescribeTasks).
    task_status: TaskStatus | None = Field(None, alias="taskStatus")
    stop_code: str | None = Field(None, alias="stopCode")
    exit_code: int | None = Field(None, alias="exitCode")
    task_stopped_reason: str | None = Field(None, alias="taskStoppedReason")
    capacity_provider: str | None = Field(
        None, alias="capacityProvider", description="FARGATE, or FARGATE_SPOT (may be interrupted)"
    )


class Session(SessionView):
    """A session as stored: the public view plus the workflow's internals, never shown to users.
    Attribute names are the item's (camelCase), as the README's session record lists them."""

    execution_arn: str | None = Field(None, alias="executionArn")
    # The version (ECS counts them per task) of the last event of the session's own task applied.
    last_event_version: int | None = Field(None, alias="lastEventVersion")
    # Other tasks that carried this session's id and were stopped (each counted and logged once).
    stray_task_arns: set[str] | None = Field(None, alias="strayTaskArns")
    # Why a stop was requested, when not by a person (e.g. "no client attached for 5 min").
    stop_requested_reason: str | None = Field(None, alias="stopRequestedReason")
    # The status a STOPPING session ends in once its task has stopped (FAILED on the failure path).
    end_status: Status | None = Field(None, alias="endStatus")
    provision_attempts: int = Field(0, alias="provisionAttempts")
    # The workflow's parked callback.
    wait_token: str | None = Field(None, alias="waitToken")
    waiting_for: WaitingFor | None = Field(None, alias="waitingFor")
    expires_at: int | None = Field(None, alias="expiresAt")

    @classmethod
    def new(
        cls,
        *,
        owner_id: str,
        project_id: str,
        image: str,
        tier: str,
        idle_timeout_seconds: int,
        max_lifetime_seconds: int,
        retention_days: int = 30,
        idle_policy: IdlePolicy = IdlePolicy.WORK,
        disconnect_grace_seconds: int = 300,
        session_id: str | None = None,
    ) -> Session:
        """A session as the API creates it: PROVISIONING, its deadlines counted from now."""
        moment = clock.now()
        return cls(
            session_id=session_id or str(uuid.uuid4()),
            owner_id=owner_id,
            project_id=project_id,
            image=image,
            tier=tier,
            status=Status.PROVISIONING,
            status_reason="waiting for a task",
            created_at=clock.rfc3339(moment),
            last_activity_at=clock.rfc3339(moment),
            idle_timeout_seconds=idle_timeout_seconds,
            max_lifetime_seconds=max_lifetime_seconds,
            idle_policy=idle_policy,
            disconnect_grace_seconds=disconnect_grace_seconds,
            idle_deadline=clock.later(moment, idle_timeout_seconds),
            lifetime_deadline=clock.later(moment, max_lifetime_seconds),
            expires_at=int(moment.timestamp()) + retention_days * 86400,
        )

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Session:
        return cls.model_validate(item)

    def to_item(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    def public(self) -> dict[str, Any]:
        """The view users see (:class:`SessionView`), as JSON."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json", include=_PUBLIC)

    @classmethod
    def item_fields(cls, **changes: Any) -> dict[str, Any]:
        """Item attributes for a partial update, named as the record's fields (`task_arn=...`).

        Each value is validated as its field's type and stored as a whole record stores it, so an update
        can neither misspell an attribute nor write a wrong type. None leaves an attribute as it is.
        """
        item: dict[str, Any] = {}
        for name, value in changes.items():
            field = cls.model_fields.get(name)
            if field is None:
                raise TypeError(f"the session record has no field {name!r}")
            if value is not None:
                adapter = _field_adapter(name)
                item[field.alias or name] = adapter.dump_python(adapter.validate_python(value), mode="json")
        return item


_PUBLIC: set[str] = set(SessionView.model_fields)


@cache
def _field_adapter(name: str) -> TypeAdapter[Any]:
    return TypeAdapter(Session.model_fields[name].annotation)
