"""Request and response shapes of the REST API. Strict: unknown fields are refused, each constraint
surfaces as a 422 naming the field, and the generated OpenAPI document is built from these models.
Strict types: `true` is not a number of minutes and `"yes"` is not a boolean."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sessions.record import Status

SESSION_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
EXEC_SESSION_ID_PATTERN = r"^ecs-execute-command-[A-Za-z0-9-]+$"


class StartSessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    projectId: str = Field(min_length=1, max_length=128, pattern=NAME_PATTERN, description="The IDE project")
    image: str | None = Field(None, min_length=1, max_length=64, pattern=NAME_PATTERN)
    tier: str | None = Field(None, min_length=1, max_length=32, pattern=NAME_PATTERN)
    idleTimeoutMinutes: int | None = Field(None, ge=1, le=24 * 60)


class ConnectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    readOnly: bool = Field(False, description="Attach without the ability to type (for viewers)")
    replaces: str | None = Field(
        None,
        pattern=EXEC_SESSION_ID_PATTERN,
        max_length=128,
        description="The exec sessionId of this client's previous data channel, which the API ends",
    )


class SessionView(BaseModel):
    """A session as its owner sees it."""

    sessionId: str
    ownerId: str
    projectId: str
    image: str
    tier: str
    status: Status
    statusReason: str | None = None
    taskArn: str | None = None
    createdAt: str
    readyAt: str | None = None
    lastActivityAt: str
    idleTimeoutSeconds: int
    maxLifetimeSeconds: int
    idleDeadline: str
    lifetimeDeadline: str
    stopRequestedAt: str | None = None
    stoppedAt: str | None = None
    stopCode: str | None = None
    exitCode: int | None = None


class SessionList(BaseModel):
    sessions: list[SessionView]


class ConnectResponse(BaseModel):
    """The ECS Exec data channel: open a WebSocket to streamUrl and send tokenValue (good once)."""

    sessionId: str
    streamUrl: str
    tokenValue: str


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None
