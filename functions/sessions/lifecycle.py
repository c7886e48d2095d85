"""The decisions of a session's life, called by the workflow's steps, the task-event handler and the API.

The workflow (statemachines/session_lifecycle.asl.json) parks a callback token at each point where it
waits for the outside world: the task running (provision), a stop request or idle/lifetime limit
(watch), the task stopping (stop). Whoever changes the record afterwards calls :meth:`Lifecycle.settle`,
which answers the parked token if what it waits for has happened. Because the step that parks a token
also settles after parking, the two orders of "event arrives" and "token parked" both complete.

Idle and lifetime limits cost no polling: the watch step's heartbeat timeout is the idle timeout
(activity reports send heartbeats) and its task timeout is the remaining lifetime, so a session's
state transitions grow with its idle periods, not with its length.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from sessions import clock
from sessions.callbacks import WorkflowCallbacks
from sessions.config import Settings
from sessions.ecs_tasks import CapacityUnavailable, EcsTasks, ProvisioningFailed, TaskFacts
from sessions.observability import metrics
from sessions.record import Session, Status, TaskStatus, WaitingFor
from sessions.store import SessionStore, TransitionRejected

# Below this remaining lifetime the session is stopped rather than watched for a few more seconds.
_LIFETIME_SLACK_SECONDS = 5
OOM_EXIT_CODE = 137


class StopRequested(Exception):
    """Raised into the workflow when a stop was requested before the session became ready."""


class TaskStopped(Exception):
    """Raised into the workflow when the task ended on its own; the record already says why."""


class AgentNotReady(Exception):
    """The ECS Exec agent is not running yet; the workflow retries with backoff, bounded."""


__all__ = [
    "AgentNotReady",
    "CapacityUnavailable",
    "Lifecycle",
    "ProvisioningFailed",
    "StopRequested",
    "TaskEvent",
    "TaskFacts",
    "TaskStopped",
    "Verdict",
]


class Verdict(StrEnum):
    """What became of a task-state event."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # this version of the session's task was applied before
    STALE = "stale"  # older than the last version of the session's task applied
    STRAY_STOPPED = "stray task stopped"  # another task carrying the session's id, stopped now
    STRAY = "stray task"  # a stray seen before, or already stopped: nothing more to do
    UNCLAIMED = "no task recorded yet"  # the session's RunTask has not answered: see on_task_facts
    UNKNOWN_SESSION = "unknown session"


@dataclass(frozen=True)
class TaskEvent:
    verdict: Verdict
    session: Session | None  # the record as it is after the event


def watch_limits(session: Session, moment: datetime | None = None) -> dict[str, int]:
    """Heartbeat (idle) and timeout (lifetime) seconds for the watch step, as Step Functions wants them.

    Once the session is READY the idle window is the time left to its idle deadline, so a watch step
    entered again after a usage report that moved the deadline without a heartbeat (sessions/usage.py)
    times out exactly at the deadline. Before READY (the idle clock starts then) it is the whole idle
    timeout. HeartbeatSeconds must stay below TimeoutSeconds, so the idle window is clipped to the
    lifetime.
    """
    moment = moment or clock.now()
    remaining = int((clock.parse(session.lifetime_deadline) - moment).total_seconds())
    timeout = max(remaining, 2)
    idle = session.idle_timeout_seconds
    if session.ready_at is not None:
        idle = math.ceil((clock.parse(session.idle_deadline) - moment).total_seconds())
    return {
        "idleTimeoutSeconds": max(1, min(idle, timeout - 1)),
        "lifetimeRemainingSeconds": timeout,
    }


def stop_reason(session: Session, moment: datetime | None = None) -> str | None:
    """Why a live session should stop now, or None. A user's request wins over the limits."""
    moment = moment or clock.now()
    if session.stop_requested_at:
        return session.stop_requested_reason or f"stopped by {session.stop_requested_by or 'user'}"
    lifetime_left = (clock.parse(session.lifetime_deadline) - moment).total_seconds()
    if lifetime_left <= _LIFETIME_SLACK_SECONDS:
        return f"reached the maximum lifetime of {_duration(session.max_lifetime_seconds)}"
    if moment >= clock.parse(session.idle_deadline):
        return f"idle for {_duration(session.idle_timeout_seconds)}"
    return None


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def ending(session: Session) -> tuple[Status, str]:
    """The final status and reason of a session whose task has stopped."""
    if session.status is Status.STOPPING:
        return session.end_status or Status.STOPPED, session.status_reason or "stopped"
    if session.stop_requested_at:
        return Status.STOPPED, stop_reason(session) or "stopped by user"
    code, detail = session.stop_code, session.task_stopped_reason or "no reason given"
    if session.exit_code == OOM_EXIT_CODE:
        return Status.FAILED, "out of memory: the terminal exceeded its tier's memory (exit code 137)"
    if code == "SpotInterruption":
        return (
            Status.STOPPED,
            "Fargate Spot reclaimed the capacity (SpotInterruption); the workspace was flushed",
        )
    if code == "TaskFailedToStart":
        return Status.FAILED, f"the task failed to start: {detail}"
    if code == "EssentialContainerExited":
        exit_code = "" if session.exit_code is None else f" (exit code {session.exit_code})"
        return Status.FAILED, f"the terminal container exited{exit_code}: {detail}"
    return Status.FAILED, f"the task stopped unexpectedly ({code or 'unknown stop code'}): {detail}"


def stray_reason(session: Session) -> str:
    """StopTask's reason for a task that carried the session's id without being its task."""
    if session.task_arn is None or not session.status.is_live:
        return f"not a task of session {session.session_id}, which has ended ({session.status.value})"
    return f"not the task of session {session.session_id}, which runs on {session.task_arn}"


def failure_reason(session: Session, error: dict[str, Any]) -> str:
    """A readable reason for the workflow's failure path, from the Step Functions error object."""
    name = str(error.get("Error", "Error"))
    cause = str(error.get("Cause", ""))
    with contextlib.suppress(ValueError, AttributeError):
        cause = json.loads(cause).get("errorMessage", cause)
    if name in ("States.Timeout", "States.HeartbeatTimeout"):
        return f"the task did not start in time (still {session.task_status or session.status.value})"
    if name == "AgentNotReady":
        return "the ECS Exec agent did not become ready in time"
    if name == "CapacityUnavailable":
        return f"no Fargate capacity after {session.provision_attempts} attempts: {cause}"
    if name == "ProvisioningFailed":
        return f"could not start the task: {cause}"
    return f"{name}: {cause}"[:500]


class Lifecycle:
    def __init__(
        self, settings: Settings, store: SessionStore, tasks: EcsTasks, callbacks: WorkflowCallbacks
    ) -> None:
        self._settings = settings
        self._store = store
        self._tasks = tasks
        self._callbacks = callbacks

    # Workflow steps ------------------------------------------------------------------------------

    def provision(self, session_id: str, token: str) -> None:
        """Start the task (at most once per attempt) and park the token until it runs."""
        session = self._require_live(session_id)
        if session.stop_requested_at:
            raise StopRequested(stop_reason(session))
        if session.status is Status.PROVISIONING:
            try:
                task_arn, provider = self._start_task(session)
            except CapacityUnavailable:
                self._count_attempt(session)
                raise
            try:
                session = self._store.transition(
                    session_id,
                    Status.STARTING,
                    allowed_from=(Status.PROVISIONING,),
                    reason="task starting",
                    task_arn=task_arn,
                    capacity_provider=provider,
                )
            except TransitionRejected as rejected:
                # The session ended while RunTask ran (a stop with no task to wait for); the task's own
                # events find it a stray of an ended session and stop it.
                raise TaskStopped(
                    (rejected.session and rejected.session.status_reason) or "ended"
                ) from rejected
            self._catch_up(session_id, task_arn)
        self._park(session_id, token, WaitingFor.RUNNING)

    def _catch_up(self, session_id: str, task_arn: str) -> None:
        """Record the task as DescribeTasks shows it: its events that arrived before the record named it
        were not applied (on_task_facts), and one of them may have been the RUNNING the workflow awaits."""
        view = self._tasks.describe(task_arn)
        if view is not None:
            with contextlib.suppress(TransitionRejected):  # a newer event was applied meanwhile
                self._store.record_task_facts(session_id, view)

    def _start_task(self, session: Session) -> tuple[str, str]:
        """RunTask on Spot when configured, falling back to on-demand at once when Spot has no capacity.

        The client token names the attempt: a retried invocation of the same attempt gets the task the
        first one started, while an attempt that ECS refused (no task) lets the next use a fresh token.
        """
        token = f"{session.session_id}-{session.provision_attempts}"
        if self._settings.use_spot:
            try:
                return self._tasks.run(session, client_token=f"{token}-spot", spot=True), "FARGATE_SPOT"
            except CapacityUnavailable:
                pass
        return self._tasks.run(session, client_token=token, spot=False), "FARGATE"

    def _count_attempt(self, session: Session) -> None:
        """A failed attempt started no task, so the next one may use a fresh client token."""
        with contextlib.suppress(TransitionRejected):
            self._store.update_fields(
                session.session_id,
                while_status=(Status.PROVISIONING,),
                provision_attempts=session.provision_attempts + 1,
            )

    def watch(self, session_id: str, token: str) -> None:
        """Gate READY on the exec agent, then park the token until stop, idle or lifetime end."""
        session = self._require_live(session_id)
        if session.status is Status.STARTING:
            self._await_agent(session)
            moment = clock.now()
            try:
                session = self._store.transition(
                    session_id,
                    Status.READY,
                    allowed_from=(Status.STARTING,),
                    reason="ready",
                    ready_at=clock.rfc3339(moment),
                    # Start-up time is not idle time: the idle clock starts when the shell is reachable.
                    last_activity_at=clock.rfc3339(moment),
                    idle_deadline=clock.later(moment, session.idle_timeout_seconds),
                )
            except TransitionRejected as rejected:
                raise TaskStopped("session ended while starting") from rejected
            started = (moment - clock.parse(session.created_at)).total_seconds()
            metrics.add_metric(name="StartLatency", unit=MetricUnit.Seconds, value=started)
        self._park(session_id, token, WaitingFor.STOP)

    def _await_agent(self, session: Session) -> None:
        assert session.task_arn is not None
        deadline = time.monotonic() + self._settings.agent_poll_seconds
        while True:
            view = self._tasks.describe(session.task_arn)
            if view is None or view.last_status.is_going_away:
                raise TaskStopped(f"task is {view.last_status if view else 'gone'}")
            if view.last_status is TaskStatus.RUNNING and view.agent_status == "RUNNING":
                return
            if time.monotonic() >= deadline:
                raise AgentNotReady(f"task {view.last_status}, exec agent {view.agent_status or 'PENDING'}")
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    def evaluate(self, session_id: str) -> dict[str, Any]:
        """After the watch step timed out: stop, or (activity raced the timeout) watch again."""
        session = self._store.require(session_id)
        moment = clock.now()
        reason = stop_reason(session, moment) if session.status.is_live else "ended"
        return {"decision": "stop" if reason else "watch", "reason": reason, **watch_limits(session, moment)}

    def stop(self, session_id: str, token: str, error: dict[str, Any] | None = None) -> None:
        """Stop the task and park the token until ECS confirms it stopped; end the record then.

        On the failure path (`error` given) the session ends FAILED with a reason made from the error.
        """
        session = self._store.require(session_id)
        if not session.status.is_live:
            self._callbacks.succeed(token, {"status": session.status.value})
            return
        if error is not None:
            end, reason = Status.FAILED, failure_reason(session, error)
            if session.ready_at is None and session.status is not Status.STOPPING:  # once, not per retry
                metrics.add_metric(name="FailedStarts", unit=MetricUnit.Count, value=1)
        else:
            end, reason = Status.STOPPED, stop_reason(session) or "stopped"
        if self.wind_down(session, end, reason):
            self._park(session_id, token, WaitingFor.STOPPED)
        else:
            self._callbacks.succeed(token, {"status": end.value})

    def wind_down(self, session: Session, end: Status, reason: str) -> bool:
        """Stop the session's tasks, leaving the record STOPPING until ECS confirms (True); a session
        without a task ends at once (False). Shared by the workflow's stop step and the reconciler."""
        task_arns = (
            [session.task_arn] if session.task_arn else self._tasks.find_for_session(session.session_id)
        )
        if not task_arns:
            self._end(session.session_id, end, reason)
            return False
        if session.status is not Status.STOPPING:
            # If the session ended meanwhile, the caller's settle() sees it.
            with contextlib.suppress(TransitionRejected):
                self._store.transition(
                    session.session_id,
                    Status.STOPPING,
                    reason=reason,
                    end_status=end,
                    task_arn=task_arns[0],
                    stopping_at=clock.rfc3339(clock.now()),
                )
        for arn in task_arns:
            self._tasks.stop(arn, reason)
        return True

    # Settling -------------------------------------------------------------------------------------

    def on_task_facts(self, session_id: str, facts: TaskFacts) -> TaskEvent:
        """Apply an event of the session's own task and settle the session; refuse any other task's.

        ECS sends the events of every task whose `startedBy` is the session's id, and anyone allowed to
        call RunTask can start such a task, so only the task the record names speaks for the session;
        versions are compared for that task alone (ECS counts them per task). Another task is a stray:
        it is stopped, counted once and never applied. Before the record names a task (RunTask not yet
        answered), an unknown task may be the session's own, its event racing RunTask's answer: the
        RunTask answer decides which task is the session's (the client token makes a retried call
        return the same task, never a second one), so such an event is neither applied nor taken for
        a stray; the provision step records the task's state from DescribeTasks once it has named the
        task (:meth:`_catch_up`), so what the event said is not lost. A stray that outlives this leaves
        its record naming another task, and its next event (or the reconciler) stops it.
        """
        session = self._store.get(session_id)
        if session is None:
            return TaskEvent(Verdict.UNKNOWN_SESSION, None)
        if session.task_arn != facts.task_arn:
            return self._not_its_task(session, facts)
        try:
            session = self._store.record_task_facts(session_id, facts)
            verdict = Verdict.APPLIED
        except TransitionRejected as rejected:
            if rejected.session is None:
                return TaskEvent(Verdict.UNKNOWN_SESSION, None)
            session = rejected.session
            verdict = Verdict.DUPLICATE if session.last_event_version == facts.version else Verdict.STALE
        # Settling again after a duplicate is harmless and completes work a failed earlier delivery of
        # the same event may have left undone.
        return TaskEvent(verdict, self.settle(session))

    def _not_its_task(self, session: Session, facts: TaskFacts) -> TaskEvent:
        if session.task_arn is None and session.status.is_live:
            return TaskEvent(Verdict.UNCLAIMED, session)
        # Stopping is idempotent, so each delivery stops; the record counts the stray once.
        stopping = TaskStatus.STOPPED not in (facts.last_status, facts.desired_status)
        if stopping:
            self._tasks.stop(facts.task_arn, stray_reason(session))
        first = stopping and self._store.note_stray_task(session.session_id, facts.task_arn)
        return TaskEvent(Verdict.STRAY_STOPPED if first else Verdict.STRAY, session)

    def request_stop(self, session_id: str, requested_by: str, *, reason: str | None = None) -> Session:
        session = self._store.request_stop(session_id, requested_by=requested_by, reason=reason)
        return self.settle(session)

    def settle(self, session: Session) -> Session:
        """Finish what the record says is due: end a session whose task stopped; answer a due token."""
        token, waiting_for = session.wait_token, session.waiting_for
        task_stopped = session.task_status is TaskStatus.STOPPED
        if task_stopped and session.status.is_live:
            end, reason = ending(session)
            session = self._end(session.session_id, end, reason) or session
        if token is None or waiting_for is None:
            return session
        ended_cause = session.status_reason or "the task stopped"
        if waiting_for is WaitingFor.RUNNING:
            if task_stopped:
                self._callbacks.fail(token, "TaskStopped", ended_cause)
            elif session.stop_requested_at:
                self._callbacks.fail(token, "StopRequested", stop_reason(session) or "stop requested")
            elif session.task_status is TaskStatus.RUNNING:
                self._callbacks.succeed(token, watch_limits(session))
        elif waiting_for is WaitingFor.STOP:
            if task_stopped:
                self._callbacks.fail(token, "TaskStopped", ended_cause)
            elif session.stop_requested_at:
                self._callbacks.succeed(token, {"reason": stop_reason(session)})
        elif waiting_for is WaitingFor.STOPPED and task_stopped:
            self._callbacks.succeed(token, {"status": session.status.value})
        return session

    def heartbeat(self, session: Session) -> None:
        """Activity while watched: reset the watch step's idle (heartbeat) timer."""
        if session.wait_token and session.waiting_for is WaitingFor.STOP:
            self._callbacks.heartbeat(session.wait_token)

    # Helpers ---------------------------------------------------------------------------------------

    def _require_live(self, session_id: str) -> Session:
        session = self._store.require(session_id)
        if not session.status.is_live:
            raise TaskStopped(session.status_reason or f"session is {session.status.value}")
        return session

    def _park(self, session_id: str, token: str, waiting_for: WaitingFor) -> None:
        try:
            session = self._store.park_token(session_id, token, waiting_for)
        except TransitionRejected as rejected:
            ended = rejected.session
            if waiting_for is WaitingFor.STOPPED:
                self._callbacks.succeed(token, {"status": ended.status.value if ended else "GONE"})
                return
            raise TaskStopped((ended and ended.status_reason) or "session ended") from rejected
        self.settle(session)

    def _end(self, session_id: str, end: Status, reason: str) -> Session | None:
        try:
            return self._store.transition(session_id, end, reason=reason)
        except TransitionRejected:
            return None
