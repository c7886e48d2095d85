"""Paying only while a terminal is used: the task's usage reports drive the real workflow.

Each test plays one terminal's usage monitor (cloudide.offline.task_reports: the deployed
UsageReportFunction, its real handler) against the real ASL, on a clock running RATE times faster
than real time with the workflow's timers scaled to match, so a 2-minute idle timeout passes in 12 s.
What the monitor decides to report, and when, is tested with the monitor (tests/image); here: what
each kind of report does to the session, its deadline and the workflow.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
from sessions import clock
from sessions.config import Settings
from sessions.ecs_tasks import EcsTasks
from sessions.errors import Conflict
from sessions.record import Session, Status
from sessions.service import SessionService
from sessions.usage import HEARTBEAT_LAG_SECONDS, IdlePolicy

from cloudide.offline import moto_fixes
from cloudide.offline.task_reports import TaskReporter, played_sts
from tests.workflow.conftest import Offline

RATE = 10.0  # virtual seconds per real second
IDLE_SECONDS = 120
GRACE_SECONDS = 60
# The promise: a session stops at most this long after its idle deadline (or its disconnect grace).
LATE_SECONDS = 60


@pytest.fixture
def fast(offline: Offline) -> Iterator[Offline]:
    offline.clock.set_rate(RATE)
    with moto_fixes.SETTINGS.scoped(wait_scale=1 / RATE), played_sts():
        yield offline


def ready_session(
    offline: Offline, policy: IdlePolicy = IdlePolicy.WORK
) -> tuple[Session, str, TaskReporter]:
    session = offline.new_session(idle_seconds=IDLE_SECONDS, idle_policy=policy, grace_seconds=GRACE_SECONDS)
    execution = offline.start(session)
    ready = offline.wait_status(session.session_id, Status.READY)
    assert ready.task_arn
    return ready, execution, TaskReporter(offline.aws, ready.task_arn)


def virtual_pause(offline: Offline, seconds: float) -> None:
    """Let `seconds` of the session's (virtual) time pass: the monitor's pace between two reports."""
    until = offline.clock.precise_now().timestamp() + seconds
    while offline.clock.precise_now().timestamp() < until:
        time.sleep(0.05)


def late(ended: Session) -> float:
    """How long after its idle deadline the session began to stop."""
    return (clock.parse(ended.stopping_at or "") - clock.parse(ended.idle_deadline)).total_seconds()


def connect(offline: Offline, session_id: str, replaces: str | None = None) -> str:
    """The API's connect, as the IDE calls it (again after each ECS Exec idle cut): an exec session id."""
    settings = Settings(SESSIONS_TABLE=offline.table_name, CLUSTER_ARN=offline.cluster)
    service = SessionService(settings, offline.store, offline.lifecycle, EcsTasks(settings))
    return service.connect("user-1", session_id, replaces=replaces)["sessionId"]


def test_an_open_terminal_nobody_types_in_stops_at_its_idle_timeout(fast: Offline) -> None:
    # Given a terminal with a client attached, whose monitor reported once at start and then saw no
    # keystroke: ECS Exec cuts the idle channel every (virtual) minute and the client connects again,
    # which is not use, so the monitor reports nothing more
    session, execution, monitor = ready_session(fast)
    channel = connect(fast, session.session_id)
    answer = monitor.report(clients=1)
    assert answer["idleDeadline"] == session.idle_deadline, "attaching is not use"
    while fast.store.require(session.session_id).status is Status.READY:
        virtual_pause(fast, 60)
        with contextlib.suppress(Conflict):  # the session began to stop meanwhile
            channel = connect(fast, session.session_id, replaces=channel)

    # Then it stops at its idle deadline, not later than a minute past it
    assert fast.wait_execution(execution, timeout=60)["status"] == "SUCCEEDED"
    ended = fast.assert_invariants(session.session_id)
    assert (ended.status, ended.status_reason) == (Status.STOPPED, "idle for 2 min")
    assert ended.idle_deadline == session.idle_deadline, "the reconnects moved nothing"
    assert 0 <= late(ended) <= LATE_SECONDS, late(ended)
    assert ended.clients_attached == 1


def test_typing_keeps_the_session_and_it_stops_an_idle_timeout_after_the_last_keystroke(
    fast: Offline,
) -> None:
    session, execution, monitor = ready_session(fast)
    # The user types for longer than the idle timeout; the monitor reports each new keystroke as it comes
    for _ in range(3):
        virtual_pause(fast, 50)
        monitor.report(clients=1, input_age=0)
    assert fast.store.require(session.session_id).status is Status.READY
    # then types once more and stops; the monitor's next report carries that last keystroke, too old to
    # heartbeat (the timer would fire late), so the deadline moves and the workflow re-watches
    last_keystroke = fast.clock.now()
    virtual_pause(fast, HEARTBEAT_LAG_SECONDS + 15)
    answer = monitor.report(clients=1, input_age=HEARTBEAT_LAG_SECONDS + 15)

    assert fast.wait_execution(execution, timeout=60)["status"] == "SUCCEEDED"
    ended = fast.assert_invariants(session.session_id)
    assert answer["idleDeadline"] == ended.idle_deadline
    assert (ended.status, ended.status_reason) == (Status.STOPPED, "idle for 2 min")
    assert abs((clock.parse(ended.last_activity_at) - last_keystroke).total_seconds()) <= 2
    assert 0 <= late(ended) <= LATE_SECONDS, late(ended)
    states = fast.states_entered(execution)
    assert states.count("Evaluate") >= 1 and states[-2:] == ["StopOrWatch", "Stop"]


def test_a_closed_terminal_stops_after_the_disconnect_grace(fast: Offline) -> None:
    session, execution, monitor = ready_session(fast)
    monitor.report(clients=1, input_age=0)
    # The last client left (page closed, `attach` killed) and nothing runs: within the grace nothing stops
    monitor.report(clients=0, detached=GRACE_SECONDS / 2)
    assert fast.store.require(session.session_id).stop_requested_at is None
    # and once the monitor has seen no client for the grace, the session stops with the reason
    answer = monitor.report(clients=0, detached=GRACE_SECONDS)

    assert answer["status"] in ("STOPPING", "READY")
    assert fast.wait_execution(execution, timeout=60)["status"] == "SUCCEEDED"
    ended = fast.assert_invariants(session.session_id)
    assert (ended.status, ended.status_reason) == (Status.STOPPED, "no client attached for 1 min")
    assert (ended.stop_requested_by, ended.clients_attached) == ("usage monitor", 0)


def test_under_work_a_job_without_a_client_keeps_the_session_until_it_ends(fast: Offline) -> None:
    session, execution, monitor = ready_session(fast, IdlePolicy.WORK)
    # A build runs with nobody attached, past the grace and past the idle timeout
    started = fast.clock.now()
    while (fast.clock.now() - started).total_seconds() < IDLE_SECONDS * 1.2:
        monitor.report(clients=0, detached=GRACE_SECONDS * 2, working=True, work_age=0)
        virtual_pause(fast, 40)
    assert fast.store.require(session.session_id).status is Status.READY, "the job kept its terminal"

    # When it ends, nobody is attached and nothing runs: the session stops at once
    monitor.report(clients=0, detached=IDLE_SECONDS * 2, working=False, work_age=5)

    assert fast.wait_execution(execution, timeout=60)["status"] == "SUCCEEDED"
    ended = fast.assert_invariants(session.session_id)
    assert (ended.status, ended.status_reason) == (Status.STOPPED, "no client attached for 1 min")


def test_under_work_a_silent_job_in_an_attached_terminal_keeps_it(fast: Offline) -> None:
    session, execution, monitor = ready_session(fast, IdlePolicy.WORK)
    # A long test run prints nothing and nobody types, past the idle timeout: its CPU is use under `work`
    started = fast.clock.now()
    while (fast.clock.now() - started).total_seconds() < IDLE_SECONDS * 1.2:
        monitor.report(clients=1, working=True, work_age=0)
        virtual_pause(fast, 40)

    assert fast.store.require(session.session_id).status is Status.READY, "the silent job kept its terminal"
    fast.lifecycle.request_stop(session.session_id, "user")
    assert fast.wait_execution(execution, timeout=60)["status"] == "SUCCEEDED"
    fast.check_invariants()


def test_under_input_a_busy_terminal_nobody_types_in_stops_on_time(fast: Offline) -> None:
    session, execution, monitor = ready_session(fast, IdlePolicy.INPUT)
    # The same silent job: under `input` its CPU is not use
    started = fast.clock.now()
    while fast.store.require(session.session_id).status is Status.READY:
        monitor.report(clients=1, working=True, work_age=0)
        virtual_pause(fast, 40)
        assert (fast.clock.now() - started).total_seconds() < IDLE_SECONDS * 3, "it never stopped"

    assert fast.wait_execution(execution, timeout=60)["status"] == "SUCCEEDED"
    ended = fast.assert_invariants(session.session_id)
    assert (ended.status, ended.status_reason) == (Status.STOPPED, "idle for 2 min")
    assert 0 <= late(ended) <= LATE_SECONDS, late(ended)


def test_a_report_from_a_task_that_is_not_the_sessions_own_is_refused(fast: Offline) -> None:
    session, execution, _ = ready_session(fast)
    stray = TaskReporter(fast.aws, fast.start_stray_task(session.session_id))

    answer = stray.report(clients=0, detached=GRACE_SECONDS * 10)

    # (refused as not the session's task, or as a stopped task once the stray's event stopped it)
    assert answer["error"] == "AccessRefused", answer
    current = fast.store.require(session.session_id)
    assert current.status is Status.READY and current.stop_requested_at is None
    fast.lifecycle.request_stop(session.session_id, "user")
    assert fast.wait_execution(execution, timeout=60)["status"] == "SUCCEEDED"
    fast.check_invariants()
