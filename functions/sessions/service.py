"""What the REST API does, independent of API Gateway's event shape: start, list, read, keep alive,
stop and connect to sessions, each only ever on the caller's own sessions."""

from __future__ import annotations

import json
from typing import Any

import boto3

from sessions.api_models import StartSessionRequest
from sessions.config import Settings
from sessions.ecs_tasks import EcsTasks
from sessions.errors import Conflict, Forbidden, InvalidRequest, NotFound, QuotaExceeded, Unavailable
from sessions.lifecycle import Lifecycle
from sessions.policy import Limits
from sessions.record import Session, Status
from sessions.store import RecordNotFound, SessionStore
from sessions.tiers import TIERS

# Activity reports closer together than this are acknowledged without a write or a heartbeat.
ACTIVITY_COALESCE_SECONDS = 20


class SessionService:
    def __init__(
        self,
        settings: Settings,
        store: SessionStore,
        lifecycle: Lifecycle,
        tasks: EcsTasks,
        *,
        sfn: Any | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._lifecycle = lifecycle
        self._tasks = tasks
        self._sfn = sfn or boto3.client("stepfunctions")

    def start(
        self, owner_id: str, request: StartSessionRequest, *, groups: frozenset[str] = frozenset()
    ) -> Session:
        """Unknown images and tiers are 400; what the caller's groups do not allow is 403; over a
        limit is 429. Each message names the field and what would be accepted."""
        settings = self._settings
        limits = settings.access_policy.limits_for(groups, settings.baseline())
        image = request.image or settings.default_image
        if image not in settings.images:
            raise InvalidRequest(
                f"image {image!r} is not offered; choose one of {sorted(settings.images)}", field="image"
            )
        tier = request.tier or settings.default_tier
        if tier not in TIERS:
            raise InvalidRequest(f"tier {tier!r} is not a tier; choose one of {sorted(TIERS)}", field="tier")
        idle_minutes = request.idleTimeoutMinutes or limits.idle_minutes(
            settings.idle_timeout_default_minutes
        )
        _check_allowed(limits, image=image, tier=tier, idle_minutes=idle_minutes)

        live = self._store.list_by_owner(owner_id, live_only=True)
        if len(live) >= limits.max_sessions:
            raise QuotaExceeded(
                f"you have {len(live)} live sessions and maxSessions is {limits.max_sessions} "
                f"({limits.granted_by}); stop one first",
                field="maxSessions",
            )
        if self._store.count_live() >= settings.global_session_cap:
            raise QuotaExceeded("the service is at its session capacity; try again later")

        session = Session.new(
            owner_id=owner_id,
            project_id=request.projectId,
            image=image,
            tier=tier,
            idle_timeout_seconds=idle_minutes * 60,
            max_lifetime_seconds=limits.max_lifetime_seconds,
            retention_days=settings.retention_days,
            idle_policy=limits.idle_policy,
            disconnect_grace_seconds=limits.disconnect_grace_minutes * 60,
        )
        self._store.create(session)
        try:
            # The execution is named after the session: a retried start cannot run two workflows.
            execution = self._sfn.start_execution(
                stateMachineArn=settings.state_machine_arn,
                name=session.session_id,
                input=json.dumps({"sessionId": session.session_id}),
            )
        except Exception as error:
            self._store.transition(
                session.session_id, Status.FAILED, reason=f"could not start the workflow: {error}"
            )
            raise Unavailable("could not start the session workflow; try again") from error
        return self._store.update_fields(
            session.session_id, while_status=tuple(Status), execution_arn=execution["executionArn"]
        )

    def list_all(self) -> list[Session]:
        """Admins only (the handler checks the group): every user's sessions."""
        return self._store.list_all()

    def list(self, owner_id: str) -> list[Session]:
        return self._store.list_by_owner(owner_id)

    def get(self, owner_id: str, session_id: str) -> Session:
        try:
            return self._store.get_owned(session_id, owner_id)
        except RecordNotFound as error:
            raise NotFound(f"no session {session_id}", field="sessionId") from error

    def report_activity(self, owner_id: str, session_id: str) -> Session:
        """Use the task cannot see: an IDE editing the workspace's files without a terminal open. Terminal
        use is reported by the task itself (sessions/usage_reports.py); connecting is not use."""
        session = self.get(owner_id, session_id)
        if not session.status.is_live:
            raise Conflict(f"session is {session.status.value}: {session.status_reason}", field="sessionId")
        touched = self._store.touch_activity(session_id, coalesce_seconds=ACTIVITY_COALESCE_SECONDS)
        if touched is None:
            return session
        self._lifecycle.heartbeat(touched)
        return touched

    def stop(self, owner_id: str, session_id: str, *, requested_by: str = "user") -> Session:
        """Idempotent: stopping a stopping or ended session returns it as it is."""
        session = self.get(owner_id, session_id)
        if not session.status.is_live:
            return session
        return self._lifecycle.request_stop(session_id, requested_by)

    def stop_any(self, session_id: str, *, admin_id: str) -> Session:
        """Admins only (the handler checks the group): stop whoever's session this is, idempotently."""
        session = self._store.get(session_id)
        if session is None:
            raise NotFound(f"no session {session_id}", field="sessionId")
        if not session.status.is_live:
            return session
        return self._lifecycle.request_stop(session_id, f"admin {admin_id}")

    def connect(
        self, owner_id: str, session_id: str, *, read_only: bool = False, replaces: str | None = None
    ) -> dict[str, str]:
        """A new exec session into the session's task. ``replaces`` names an earlier one the client is
        done with (its channel dropped): it is terminated first, so that the exec agent, which runs two
        sessions per container, has room for the new one. Only exec sessions this session's connects
        handed out can be named; any other id is left alone."""
        session = self.get(owner_id, session_id)
        if session.status is not Status.READY or session.task_arn is None:
            raise Conflict(
                f"session is {session.status.value}, not READY: {session.status_reason}", field="sessionId"
            )
        if replaces is not None and self._store.forget_exec_session(session_id, replaces):
            self._tasks.end_shell(replaces)
        channel = self._tasks.open_shell(session.task_arn, read_only=read_only)
        self._store.remember_exec_session(session_id, channel["sessionId"])
        return channel


def _check_allowed(limits: Limits, *, image: str, tier: str, idle_minutes: int) -> None:
    if limits.max_sessions == 0:
        raise Forbidden(f"maxSessions is 0 for you ({limits.granted_by}): you may not start sessions")
    if image not in limits.images:
        raise Forbidden(
            f"image {image!r} is not allowed for you ({limits.granted_by}); allowed: {sorted(limits.images)}",
            field="image",
        )
    if tier not in limits.tiers:
        raise Forbidden(
            f"tier {tier!r} is not allowed for you ({limits.granted_by}); allowed: {sorted(limits.tiers)}",
            field="tier",
        )
    low, high = limits.idle_min_minutes, limits.idle_max_minutes
    if not low <= idle_minutes <= high:
        raise Forbidden(
            f"idleTimeoutMinutes must be between {low} and {high} for you ({limits.granted_by})",
            field="idleTimeoutMinutes",
        )
