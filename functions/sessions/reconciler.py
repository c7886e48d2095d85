"""The scheduled repair of everything the event-driven path can leave behind.

Events get lost, executions get aborted by hand, a Lambda dies between two calls: each can leave a task
that costs money with no session to show for it, a session that says it is live when its task is gone,
or a workflow waiting for a session that has ended. Every few minutes the reconciler compares three
views (this product's ECS tasks, the live session records, the running workflow executions) and
repairs what disagrees:

- a task no live session owns is stopped (:attr:`Repair.ORPHAN_TASK_STOPPED`);
- a live session whose task has stopped (its STOPPED event was lost) is settled as that event would
  have settled it, which also answers its workflow's parked token (:attr:`Repair.SESSION_CLOSED`);
- a live session whose workflow is no longer running is wound down: its task stopped, the record
  ended FAILED with the reason (:attr:`Repair.ABANDONED_SESSION_STOPPED`);
- a workflow still running for a session that has ended is stopped (:attr:`Repair.WORKFLOW_STOPPED`).

Anything younger than the grace period is left alone, so a run never races a session that is starting
or an event that is in flight. Every repair is a conditional write or an idempotent call, so two runs
at once repair each thing at most once between them; a run stops after `max_repairs`, and the rest wait
for the next run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial

from botocore.exceptions import ClientError

from sessions import clock
from sessions.ecs_tasks import EcsTasks, TaskFacts, TaskView
from sessions.lifecycle import Lifecycle
from sessions.observability import logger
from sessions.record import Session, Status, TaskStatus
from sessions.store import SessionStore
from sessions.workflows import Execution, Workflows

ORPHAN_REASON = "stopped by the reconciler: no live session owns this task"
TASK_GONE_REASON = "the task no longer exists in ECS (found by the reconciler)"


class Repair(StrEnum):
    """Kinds of repair; each value is the CloudWatch metric counting it."""

    ORPHAN_TASK_STOPPED = "OrphanTasksStopped"
    SESSION_CLOSED = "LostSessionsClosed"
    ABANDONED_SESSION_STOPPED = "AbandonedSessionsStopped"
    WORKFLOW_STOPPED = "StaleWorkflowsStopped"


@dataclass
class Report:
    """What one run saw and did."""

    running_tasks: int = 0
    live_sessions: int = 0
    repairs: list[tuple[Repair, str]] = field(default_factory=list)  # (kind, task ARN or session id)
    failures: int = 0  # checks an AWS error interrupted; the next run tries them again
    truncated: bool = False  # the run hit max_repairs; the next run continues

    def count(self, kind: Repair) -> int:
        return sum(1 for done, _ in self.repairs if done is kind)


class _Budget(Exception):
    """The run has made its maximum number of repairs."""


class Reconciler:
    def __init__(
        self,
        store: SessionStore,
        tasks: EcsTasks,
        lifecycle: Lifecycle,
        workflows: Workflows,
        *,
        grace_seconds: float,
        max_repairs: int,
    ) -> None:
        self._store = store
        self._tasks = tasks
        self._lifecycle = lifecycle
        self._workflows = workflows
        self._grace = timedelta(seconds=grace_seconds)
        self._max_repairs = max_repairs

    def run(self, now: datetime | None = None) -> Report:
        now = now or clock.precise_now()  # not clock.now(): grace is measured below the second
        report = Report()
        tasks = list(self._tasks.running_product_tasks())
        live = self._store.list_live()
        executions = self._workflows.running()
        report.running_tasks, report.live_sessions = len(tasks), len(live)
        live_by_id = {s.session_id: s for s in live}
        running_arns = {task.task_arn for task in tasks}
        checks: list[tuple[str, Callable[[], None]]] = [
            *((t.task_arn, partial(self._stop_if_orphan, t, live_by_id, now, report)) for t in tasks),
            *(
                (s.session_id, partial(self._check_session, s, running_arns, executions, now, report))
                for s in live
                if self._settled(s.created_at, now)
            ),
            *((e.session_id, partial(self._check_execution, e, now, report)) for e in executions.values()),
        ]
        try:
            for subject, check in checks:
                with self._isolated(subject, report):
                    check()
        except _Budget:
            report.truncated = True
        return report

    @contextmanager
    def _isolated(self, subject: str, report: Report) -> Iterator[None]:
        """One thing that cannot be checked now (throttled, say) must not stop the run's other repairs."""
        try:
            yield
        except ClientError as error:
            report.failures += 1
            logger.warning("reconciler check failed", extra={"subject": subject, "error": str(error)})

    # Checks ------------------------------------------------------------------------------------------

    def _stop_if_orphan(
        self, task: TaskView, live: dict[str, Session], now: datetime, report: Report
    ) -> None:
        if not self._settled(task.created_at, now) or self._owned(task, live.get(task.session_id or "")):
            return
        # The liveness index is eventually consistent: only a consistent read may condemn a task.
        if task.session_id and self._owned(task, self._store.get(task.session_id)):
            return
        self._tasks.stop(task.task_arn, ORPHAN_REASON)
        self._repaired(report, Repair.ORPHAN_TASK_STOPPED, task.task_arn)

    @staticmethod
    def _owned(task: TaskView, session: Session | None) -> bool:
        return (
            session is not None
            and session.status.is_live
            and (session.task_arn is None or session.task_arn == task.task_arn)
        )

    def _check_session(
        self,
        session: Session,
        running_arns: set[str],
        executions: dict[str, Execution],
        now: datetime,
        report: Report,
    ) -> None:
        if session.task_arn and session.task_arn not in running_arns:
            view = self._tasks.describe(session.task_arn)
            if view is None or (
                view.last_status is TaskStatus.STOPPED and self._settled(view.stopped_at, now)
            ):
                self._close(session, view, report)
                return
        if session.session_id not in executions:
            self._wind_down(session, now, report)

    def _close(self, session: Session, view: TaskView | None, report: Report) -> None:
        """Settle the session as its lost STOPPED event would have."""
        if not self._still_live(session.session_id):
            return  # the event was late, not lost
        facts = view or TaskFacts(
            task_arn=session.task_arn or "", last_status=TaskStatus.STOPPED, stopped_reason=TASK_GONE_REASON
        )
        settled = self._lifecycle.on_task_facts(session.session_id, facts).session
        if settled is not None and not settled.status.is_live:
            self._repaired(report, Repair.SESSION_CLOSED, session.session_id)

    def _wind_down(self, session: Session, now: datetime, report: Report) -> None:
        """Nobody drives this session any more: stop its task; the record ends FAILED with the reason."""
        outcome = self._workflows.outcome(session.session_id)
        if outcome is not None and (
            outcome.status == "RUNNING" or not self._settled(outcome.stopped_at, now)
        ):
            return  # it runs, or it has just ended and the task's own event is still on its way
        current = self._still_live(session.session_id)
        if current is None:
            return
        if current.status is Status.STOPPING:
            end, reason = current.end_status or Status.STOPPED, current.status_reason or "stopped"
        elif outcome is None:
            end, reason = Status.FAILED, "the session has no workflow; stopped by the reconciler"
        else:
            end = Status.FAILED
            reason = (
                f"the session workflow ended ({outcome.status}) while the session was live;"
                " stopped by the reconciler"
            )
        self._lifecycle.wind_down(current, end, reason)
        self._repaired(report, Repair.ABANDONED_SESSION_STOPPED, session.session_id)

    def _check_execution(self, execution: Execution, now: datetime, report: Report) -> None:
        if not self._settled(execution.started_at, now):
            return
        session = self._store.get(execution.session_id)
        if session is not None and (session.status.is_live or not self._settled(session.stopped_at, now)):
            return
        reason = session.status_reason if session else "no such session"
        self._workflows.stop(execution, f"the session has ended: {reason}")
        self._repaired(report, Repair.WORKFLOW_STOPPED, execution.session_id)

    # Helpers -----------------------------------------------------------------------------------------

    def _still_live(self, session_id: str) -> Session | None:
        """The record as it is now, if still live: a run's listing is seconds old by the time it acts."""
        session = self._store.get(session_id)
        return session if session is not None and session.status.is_live else None

    def _settled(self, moment: datetime | str | None, now: datetime) -> bool:
        """Older than the grace period (an unknown time counts as old: nothing newer would lack it).
        A record's timestamps are whole seconds, rounded down: counted from the end of their second."""
        if moment is None:
            return True
        when = clock.parse(moment) + timedelta(seconds=1) if isinstance(moment, str) else moment
        return now - when >= self._grace

    def _repaired(self, report: Report, kind: Repair, subject: str) -> None:
        report.repairs.append((kind, subject))
        if len(report.repairs) >= self._max_repairs:
            raise _Budget
