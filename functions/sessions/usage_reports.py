"""Usage reports from terminal tasks: authenticated as the reporting task, judged (sessions/usage.py),
recorded on its session, and turned into a workflow heartbeat or a stop when the report says so.

The answer tells the monitor the session's policy and idle deadline, so the policy lives in one place
(the record, fixed at start from the owner's groups) and the monitor reports just often enough.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from sessions import clock
from sessions.config import Settings
from sessions.lifecycle import Lifecycle
from sessions.observability import logger, metrics
from sessions.record import Session, Status
from sessions.store import SessionStore, TransitionRejected
from sessions.task_identity import AccessRefused, TaskIdentity
from sessions.usage import UsageReport, judge

# Who asks for a stop the usage monitor's report calls for; the reason says why.
MONITOR = "usage monitor"


class UsageReports:
    def __init__(
        self, settings: Settings, store: SessionStore, lifecycle: Lifecycle, identity: TaskIdentity
    ) -> None:
        self._settings = settings
        self._store = store
        self._lifecycle = lifecycle
        self._identity = identity

    def accept(self, caller_identity_url: str, report: UsageReport) -> dict[str, Any]:
        """Apply one report of the calling task's session; AccessRefused for a caller that is not the
        live session's own task."""
        caller = self._identity.prove(caller_identity_url)
        session = caller.session
        if session.task_arn is None:
            raise AccessRefused(f"session {session.session_id} has not recorded its task yet; report again")
        verdict = judge(
            report,
            policy=session.idle_policy,
            grace_seconds=session.disconnect_grace_seconds,
            last_use=clock.parse(session.last_activity_at),
            now=clock.now(),
        )
        try:
            session = self._store.record_usage(
                session, task_arn=session.task_arn, clients=report.clients, used_at=verdict.used_at
            )
        except TransitionRejected as rejected:
            raise AccessRefused(
                f"session {session.session_id} has ended or runs on another task"
            ) from rejected
        metrics.add_metric(name="UsageReports", unit=MetricUnit.Count, value=1)
        if verdict.heartbeat:
            self._lifecycle.heartbeat(session)
        if verdict.stop_reason and session.status is Status.READY and not session.stop_requested_at:
            logger.info("stopping an unattended session", extra={"reason": verdict.stop_reason})
            metrics.add_metric(name="UnattendedStops", unit=MetricUnit.Count, value=1)
            session = self._lifecycle.request_stop(session.session_id, MONITOR, reason=verdict.stop_reason)
        return self.answer(session)

    def answer(self, session: Session) -> dict[str, Any]:
        """What the monitor needs: whether to go on, its policy, and the time left to the idle deadline
        (a duration, like the report's ages: the task's clock need not agree with this one)."""
        left = (clock.parse(session.idle_deadline) - clock.now()).total_seconds()
        return {
            "status": session.status.value,
            "idleDeadline": session.idle_deadline,
            "idleSecondsLeft": max(0, int(left)),
            "policy": {
                "idlePolicy": session.idle_policy.value,
                "idleTimeoutSeconds": session.idle_timeout_seconds,
                "disconnectGraceSeconds": session.disconnect_grace_seconds,
                "reportSeconds": int(self._settings.usage_report_minutes * 60),
            },
        }
