"""Configuration of the control plane, parsed once per cold start from the function's environment.

The template sets these variables; parsing them into one typed model at import time means a
misconfigured deployment fails loudly on the first invocation instead of deep inside a request.
"""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, Field, model_validator

from sessions.policy import AccessPolicy, Limits
from sessions.tiers import TIERS
from sessions.usage import IdlePolicy


def _split_list(value: object) -> object:
    """Comma-separated environment values ("subnet-a,subnet-b") become lists."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _json_object(value: object) -> object:
    if isinstance(value, str):
        return json.loads(value) if value.strip() else {}
    return value


def _unquoted(value: object) -> object:
    """Template header values are quoted for API Gateway ("'https://ide.example.com'"); the header is not."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    return value


CommaList = Annotated[list[str], BeforeValidator(_split_list)]
JsonMap = Annotated[dict[str, str], BeforeValidator(_json_object)]


class Settings(BaseModel):
    """Everything a function needs to know about its deployment; see template.yaml for the sources."""

    sessions_table: str = Field(validation_alias="SESSIONS_TABLE")
    idempotency_table: str = Field("", validation_alias="IDEMPOTENCY_TABLE")
    workspace_bucket: str = Field("", validation_alias="WORKSPACE_BUCKET")
    cluster: str = Field("", validation_alias="CLUSTER_ARN")
    state_machine_arn: str = Field("", validation_alias="STATE_MACHINE_ARN")
    container_name: str = Field("terminal", validation_alias="CONTAINER_NAME")
    # image name -> task definition ARN (or family); also the allow-list the API validates against.
    images: JsonMap = Field(default_factory=dict, validation_alias="IMAGES")
    default_image: str = Field("base", validation_alias="DEFAULT_IMAGE")
    allowed_tiers: CommaList = Field(default_factory=lambda: ["small"], validation_alias="ALLOWED_TIERS")
    default_tier: str = Field("small", validation_alias="DEFAULT_TIER")
    subnets: CommaList = Field(default_factory=list, validation_alias="SUBNETS")
    security_groups: CommaList = Field(default_factory=list, validation_alias="SECURITY_GROUPS")
    use_spot: bool = Field(False, validation_alias="USE_FARGATE_SPOT")
    shell_command: str = Field("/usr/local/bin/cloudide-shell", validation_alias="SHELL_COMMAND")
    idle_timeout_default_minutes: int = Field(30, ge=1, validation_alias="IDLE_TIMEOUT_DEFAULT_MINUTES")
    idle_timeout_min_minutes: int = Field(5, ge=1, validation_alias="IDLE_TIMEOUT_MIN_MINUTES")
    idle_timeout_max_minutes: int = Field(240, ge=1, validation_alias="IDLE_TIMEOUT_MAX_MINUTES")
    max_lifetime_hours: float = Field(12, gt=0, validation_alias="MAX_LIFETIME_HOURS")
    # What counts as use, and how long a terminal nobody has open lives on (sessions/usage.py).
    idle_policy: IdlePolicy = Field(IdlePolicy.WORK, validation_alias="IDLE_POLICY")
    disconnect_grace_minutes: int = Field(5, ge=0, le=24 * 60, validation_alias="DISCONNECT_GRACE_MINUTES")
    # While a terminal is in use its monitor reports at most this often (the cost of a report: one
    # Lambda invocation, one DynamoDB write, sometimes a workflow heartbeat).
    usage_report_minutes: float = Field(5, gt=0, le=60, validation_alias="USAGE_REPORT_MINUTES")
    sessions_per_user: int = Field(3, ge=1, validation_alias="SESSIONS_PER_USER")
    global_session_cap: int = Field(500, ge=1, validation_alias="GLOBAL_SESSION_CAP")
    # Members of this Cognito group may list and stop every user's sessions, and do nothing more.
    admin_group: str = Field("cloudide-admins", validation_alias="ADMIN_GROUP")
    # The IDE's origin (the CorsAllowOrigin parameter): with a proxy integration API Gateway adds CORS
    # headers only to the preflight, so the API's own answers must carry Access-Control-Allow-Origin.
    cors_allow_origin: Annotated[str, BeforeValidator(_unquoted)] = Field(
        "*", min_length=1, validation_alias="CORS_ALLOW_ORIGIN"
    )
    # Workspace credential vending (SECURITY.md): the role the sync agents' credentials come from, the
    # task role whose sessions may ask, and STS endpoints a caller-identity proof may point at besides
    # AWS's own (for the offline stack; empty in a deployment).
    workspace_role_arn: str = Field("", validation_alias="WORKSPACE_ROLE_ARN")
    task_role_arn: str = Field("", validation_alias="TASK_ROLE_ARN")
    extra_sts_endpoints: CommaList = Field(default_factory=list, validation_alias="EXTRA_STS_ENDPOINTS")
    retention_days: int = Field(30, ge=1, validation_alias="RETENTION_DAYS")
    # How long the watch step polls DescribeTasks for the exec agent before handing back to the
    # workflow's Retry (each retry is a billed state transition; a short poll saves most of them).
    agent_poll_seconds: float = Field(6.0, ge=0, validation_alias="AGENT_POLL_SECONDS")
    # Per-group limits (sessions/policy.py); a field a rule leaves out takes the values above.
    access_policy: Annotated[AccessPolicy, BeforeValidator(AccessPolicy.parse)] = Field(
        default_factory=AccessPolicy, validation_alias="ACCESS_POLICY"
    )
    # The reconciler leaves alone anything younger than this (a session still starting, an event in flight)
    # and makes at most this many repairs per run (the rest wait for the next run).
    reconciler_grace_seconds: int = Field(120, ge=0, validation_alias="RECONCILER_GRACE_SECONDS")
    reconciler_max_repairs: int = Field(100, ge=1, validation_alias="RECONCILER_MAX_REPAIRS")

    model_config = {"populate_by_name": True}

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        unknown = [t for t in self.allowed_tiers if t not in TIERS]
        if unknown:
            raise ValueError(f"ALLOWED_TIERS names unknown tiers {unknown}; known: {sorted(TIERS)}")
        if self.default_tier not in self.allowed_tiers:
            raise ValueError(f"DEFAULT_TIER {self.default_tier!r} is not in ALLOWED_TIERS")
        if (
            not self.idle_timeout_min_minutes
            <= self.idle_timeout_default_minutes
            <= self.idle_timeout_max_minutes
        ):
            raise ValueError("IDLE_TIMEOUT_DEFAULT_MINUTES must lie within the MIN/MAX bounds")
        return self

    def baseline(self) -> Limits:
        """The limits of the deployment's parameters: what access-policy rules fall back to."""
        return Limits(
            images=frozenset(self.images),
            tiers=frozenset(self.allowed_tiers),
            max_sessions=self.sessions_per_user,
            idle_min_minutes=self.idle_timeout_min_minutes,
            idle_max_minutes=self.idle_timeout_max_minutes,
            max_lifetime_hours=self.max_lifetime_hours,
            idle_policy=self.idle_policy,
            disconnect_grace_minutes=self.disconnect_grace_minutes,
        )
