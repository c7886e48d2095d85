"""Paying only while used: how soon an unused terminal stops, and what its use reports cost.

The usage monitor's own decisions (terminal_image/usage_monitor: UsageTracker and ReportSchedule, fed
samples as its loop would take them every poll) report to the real UsageReportFunction, which drives
the real workflow offline; time is compressed (the workflow's timers and the handlers' clock alike),
and the simulated terminal's samples are taken in that compressed time. Figures are in session
(virtual) seconds.

- open_idle_stop_after_s: a client attached the whole time, nobody typing, ECS Exec cutting the idle
  channel every 20 minutes (the client reconnects): seconds the session lived past its idle deadline.
- closed_stop_after_s: an hour of typing, then the last client leaves: seconds past the disconnect grace.
- reports_per_active_hour: reports the monitor sent during that hour of typing.
- detached_job_kept: a job burning CPU with nobody attached is still READY past the idle timeout.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

from sessions import clock
from sessions.record import Session, Status
from sessions.store import SessionStore
from usage_monitor.control_plane import Answer
from usage_monitor.schedule import ReportSchedule
from usage_monitor.tmux import Client
from usage_monitor.usage import Sample, UsageTracker

from cloudide.offline import moto_fixes
from cloudide.offline.clock import ScaledClock
from cloudide.offline.fargate import FakeFargate, TaskScript
from cloudide.offline.stack import OfflineAws
from cloudide.offline.task_reports import TaskReporter, played_sts

RATE = 60.0  # virtual seconds per real second
POLL_SECONDS = 10.0  # the monitor's default poll
IDLE_SECONDS, GRACE_SECONDS = 1800, 300  # the template's defaults
EXEC_IDLE_CUT_SECONDS = 20 * 60
CPU_PER_POLL = 5.0  # a build: half a CPU


class Terminal:
    """One session's task as its usage monitor sees it: tmux clients, keystrokes and CPU, sampled every
    poll in virtual time, reported when the monitor's schedule says."""

    def __init__(self, reporter: TaskReporter, now: Callable[[], float]) -> None:
        self._reporter = reporter
        self._now = now
        self._tracker = UsageTracker(work_cpu_fraction=0.05)
        self._schedule = ReportSchedule(POLL_SECONDS)
        self._pids = itertools.count(100)
        self._sequence = 0
        self.clients: list[Client] = []
        self.cpu_per_poll = 0.0
        self.reports = 0

    def attach(self) -> None:
        at = int(self._now())
        self.clients = [Client(next(self._pids), at, at)]

    def detach(self) -> None:
        self.clients = []

    def type(self) -> None:
        self.clients = [Client(c.pid, c.created, int(self._now())) for c in self.clients]

    def poll(self) -> str:
        """One sample (and report, when due); returns the session's status as last answered."""
        time.sleep(POLL_SECONDS / RATE)
        usage = self._tracker.observe(Sample(self._now(), tuple(self.clients), self.cpu_per_poll))
        if self._schedule.due(usage) is None:
            return "READY"
        self._sequence += 1
        self.reports += 1
        body = self._reporter.send(usage.payload(self._sequence))
        answer = Answer.parse(body, now=self._now())
        self._schedule.reported(
            usage, policy=answer.policy, idle_deadline=answer.idle_deadline, live=answer.live
        )
        return answer.status


class Bench:
    def __init__(self, aws: OfflineAws, virtual: ScaledClock) -> None:
        assert aws.stack is not None
        self.aws = aws
        self.virtual = virtual
        self.store = SessionStore(aws.stack.outputs["SessionsTableName"])
        self._sfn = aws.client("stepfunctions")
        self._machine = aws.stack.outputs["StateMachineArn"]

    def now(self) -> float:
        return self.virtual.precise_now().timestamp()

    def ready_terminal(self, name: int) -> tuple[Session, str, Terminal]:
        session = self.store.create(
            Session.new(
                session_id=f"00000000-0000-4000-8000-{name:012d}", owner_id="bench", project_id="bench",
                image="base", tier="small", idle_timeout_seconds=IDLE_SECONDS,
                max_lifetime_seconds=12 * 3600, disconnect_grace_seconds=GRACE_SECONDS,
            )
        )  # fmt: skip
        execution = self._sfn.start_execution(
            stateMachineArn=self._machine,
            name=session.session_id,
            input=f'{{"sessionId": "{session.session_id}"}}',
        )["executionArn"]
        while (session := self.store.require(session.session_id)).status is not Status.READY:
            if not session.status.is_live:
                raise RuntimeError(f"bench session ended before READY: {session.status_reason}")
            time.sleep(0.01)
        assert session.task_arn
        return session, execution, Terminal(TaskReporter(self.aws, session.task_arn), self.now)

    def ended(self, session_id: str, execution: str) -> Session:
        while self._sfn.describe_execution(executionArn=execution)["status"] == "RUNNING":
            time.sleep(0.05)
        return self.store.require(session_id)

    def polls_until_ended(self, terminal: Terminal, session_id: str, *, limit_seconds: float) -> None:
        started = self.now()
        while self.store.require(session_id).status is Status.READY:
            terminal.poll()
            if self.now() - started > limit_seconds:
                raise RuntimeError("the session outlived the bench's limit")


def _seconds(later: str | None, earlier: float) -> float:
    return round(clock.parse(later or "").timestamp() - earlier, 1)


def open_idle(bench: Bench) -> float:
    session, execution, terminal = bench.ready_terminal(1)
    terminal.attach()
    cut_at = bench.now() + EXEC_IDLE_CUT_SECONDS
    while bench.store.require(session.session_id).status is Status.READY:
        if bench.now() >= cut_at:  # ECS Exec drops the idle channel; the client reconnects
            terminal.detach()
            terminal.poll()
            terminal.attach()
            cut_at = bench.now() + EXEC_IDLE_CUT_SECONDS
        terminal.poll()
    ended = bench.ended(session.session_id, execution)
    assert ended.status_reason == "idle for 30 min", ended.status_reason
    return _seconds(ended.stopped_at, clock.parse(ended.idle_deadline).timestamp())


def closed(bench: Bench) -> tuple[float, int]:
    session, execution, terminal = bench.ready_terminal(2)
    terminal.attach()
    typing_until = bench.now() + 3600
    while bench.now() < typing_until:
        terminal.type()
        terminal.poll()
    reports_while_typing = terminal.reports
    terminal.detach()
    left_at = bench.now()
    bench.polls_until_ended(terminal, session.session_id, limit_seconds=IDLE_SECONDS * 2)
    ended = bench.ended(session.session_id, execution)
    assert ended.status_reason == "no client attached for 5 min", ended.status_reason
    return _seconds(ended.stopped_at, left_at + GRACE_SECONDS), reports_while_typing


def detached_job(bench: Bench) -> bool:
    session, execution, terminal = bench.ready_terminal(3)
    terminal.cpu_per_poll = CPU_PER_POLL
    job_until = bench.now() + IDLE_SECONDS * 1.5
    while bench.now() < job_until:
        terminal.poll()
    kept = bench.store.require(session.session_id).status is Status.READY
    terminal.cpu_per_poll = 0.0
    bench.polls_until_ended(terminal, session.session_id, limit_seconds=IDLE_SECONDS * 2)
    bench.ended(session.session_id, execution)
    return kept


def run() -> dict[str, Any]:
    virtual = ScaledClock()
    with (
        OfflineAws("template.yaml", parameters={"TerminalImageUri": "local/terminal:bench"}) as aws,
        mock.patch.object(clock, "precise_now", virtual.precise_now),
        mock.patch.dict("os.environ", {"AGENT_POLL_SECONDS": "0"}),
        played_sts(),
    ):
        assert aws.stack is not None
        quick = TaskScript(pending_delay=0.01, running_delay=0.01, stop_delay=0.0)
        fargate = FakeFargate(aws, aws.stack.outputs["ClusterName"], script=quick)
        fargate.start()
        virtual.set_rate(RATE)
        moto_fixes.SETTINGS.wait_scale = 1 / RATE
        try:
            bench = Bench(aws, virtual)
            open_idle_after = open_idle(bench)
            closed_after, reports = closed(bench)
            kept = detached_job(bench)
        finally:
            fargate.close()
    return {
        "open_idle_stop_after_s": open_idle_after,
        "closed_stop_after_s": closed_after,
        "detached_job_kept": kept,
        "reports_per_active_hour": reports,
        "note": (
            f"offline, the real workflow and usage function, the monitor's own report schedule; time "
            f"compressed {RATE:g}x; idle timeout {IDLE_SECONDS} s, disconnect grace {GRACE_SECONDS} s, "
            f"poll {POLL_SECONDS:g} s; figures in session seconds (targets: <= 60, <= 60, true, <= 12)"
        ),
    }
