"""The usage monitor's decisions over timestamped samples (hours of them in milliseconds), the tmux
output parser, the /proc CPU reader on a fake proc directory, and the answer contract."""

from __future__ import annotations

import io
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools import Logger
from usage_monitor.config import ConfigError, MonitorConfig
from usage_monitor.control_plane import Answer, ControlPlane, ReportFailed
from usage_monitor.cpu import CpuLedger
from usage_monitor.monitor import Monitor
from usage_monitor.schedule import IdlePolicy, Policy, Reason, ReportSchedule
from usage_monitor.tmux import Client, TmuxProbe, parse_clients
from usage_monitor.usage import Sample, Usage, UsageTracker

POLL = 10.0
HOUR = 3600.0
START = 1_796_400_000.0  # a whole second, as tmux's times are


@dataclass
class Terminal:
    """One monitor run against a simulated terminal: clients attach, type and leave, work burns CPU,
    and the control plane answers every report with ``policy`` and an idle deadline moved by the use
    reported (as the session workflow does)."""

    policy: Policy = field(default_factory=Policy)
    now: float = START
    clients: dict[int, Client] = field(default_factory=dict)
    cpu_per_poll: float = 0.0
    reports: list[tuple[Reason, Usage]] = field(default_factory=list)
    live: bool = True
    probe_broken: bool = False

    def __post_init__(self) -> None:
        self.tracker = UsageTracker(work_cpu_fraction=0.05)
        self.schedule = ReportSchedule(POLL)
        self._next_pid = 100
        self._deadline = START + self.policy.idle_timeout_seconds

    def attach(self) -> int:
        self._next_pid += 1
        self.clients[self._next_pid] = Client(self._next_pid, int(self.now), int(self.now))
        return self._next_pid

    def detach(self, pid: int) -> None:
        del self.clients[pid]

    def type(self, pid: int) -> None:
        self.clients[pid] = Client(pid, self.clients[pid].created, int(self.now))

    def poll(self) -> None:
        """One sample at ``now`` (and the report it makes due), then one poll interval passes."""
        seen = None if self.probe_broken else tuple(self.clients.values())
        usage = self.tracker.observe(Sample(self.now, seen, self.cpu_per_poll))
        reason = self.schedule.due(usage)
        if reason is not None:
            self.reports.append((reason, usage))
            uses = [usage.last_input_at or 0.0]
            if self.policy.idle_policy is IdlePolicy.WORK:
                uses.append(usage.last_work_at or 0.0)
            self._deadline = max(self._deadline, max(uses) + self.policy.idle_timeout_seconds)
            self.schedule.reported(usage, policy=self.policy, idle_deadline=self._deadline, live=self.live)
        self.now += POLL

    def run_for(self, seconds: float, every_poll: Any = None) -> None:
        end = self.now + seconds
        while self.now < end:
            if every_poll:
                every_poll()
            self.poll()

    def reasons(self) -> list[Reason]:
        return [reason for reason, _ in self.reports]


# --- when to report ---------------------------------------------------------------------------------


def test_typing_continuously_for_an_hour_reports_at_most_twelve_times_and_loses_no_use() -> None:
    terminal = Terminal()
    pid = terminal.attach()
    terminal.poll()  # the start report

    terminal.run_for(HOUR, every_poll=lambda: terminal.type(pid))

    assert terminal.reasons()[0] is Reason.START
    use = terminal.reports[1:]
    assert 1 <= len(use) <= 12 and {reason for reason, _ in use} == {Reason.USE}
    # Evenly spaced by reportSeconds, and the last one carries input at most reportSeconds old.
    times = [usage.observed_at for _, usage in terminal.reports]
    assert all(b - a >= terminal.policy.report_seconds for a, b in itertools.pairwise(times))
    assert terminal.now - (use[-1][1].last_input_at or 0) <= terminal.policy.report_seconds + POLL


def test_an_idle_client_reconnecting_every_minute_for_an_hour_reports_only_at_start() -> None:
    terminal = Terminal()
    pid = terminal.attach()
    terminal.poll()
    for _ in range(60):
        terminal.detach(pid)  # ECS Exec's idle cut: the client drops...
        terminal.poll()
        pid = terminal.attach()  # ...and attaches again by itself
        # tmux may take the terminal's late replies to its attach queries for keys: within the settle
        # window after attaching that is not use either.
        terminal.now += 1
        terminal.type(pid)
        terminal.run_for(50)

    assert terminal.reasons() == [Reason.START]


def test_the_last_client_leaving_reports_once_after_the_grace() -> None:
    terminal = Terminal()
    pid = terminal.attach()
    terminal.poll()
    terminal.run_for(60, every_poll=lambda: terminal.type(pid))
    terminal.detach(pid)
    left_at = terminal.now

    terminal.run_for(HOUR)

    detached = [usage for reason, usage in terminal.reports if reason is Reason.DETACHED]
    assert len(detached) == 1
    assert detached[0].detached_since == left_at and detached[0].clients == 0
    grace = terminal.policy.disconnect_grace_seconds
    assert left_at + grace <= detached[0].observed_at < left_at + grace + POLL


def test_nobody_ever_attaching_counts_from_the_monitors_start() -> None:
    terminal = Terminal()

    terminal.run_for(HOUR)

    assert terminal.reasons() == [Reason.START, Reason.DETACHED]
    assert terminal.reports[1][1].detached_since == START
    assert terminal.reports[1][1].observed_at == START + terminal.policy.disconnect_grace_seconds


def test_a_new_detachment_after_a_reattach_is_reported_again() -> None:
    terminal = Terminal()
    terminal.run_for(HOUR)  # detached since start: reported once
    pid = terminal.attach()
    terminal.run_for(60)
    terminal.detach(pid)

    terminal.run_for(HOUR)

    assert terminal.reasons() == [Reason.START, Reason.DETACHED, Reason.DETACHED]


def test_a_job_running_detached_holds_the_detach_report_until_it_ends() -> None:
    terminal = Terminal()
    pid = terminal.attach()
    terminal.poll()
    terminal.cpu_per_poll = POLL  # a build: a whole CPU
    terminal.detach(pid)
    terminal.run_for(2 * HOUR)
    ended_at = terminal.now
    terminal.cpu_per_poll = 0.0

    terminal.run_for(HOUR)

    reasons = terminal.reasons()
    assert reasons.count(Reason.DETACHED) == 1 and reasons[-1] is Reason.DETACHED
    # While it ran, work was use: reported once per reportSeconds so the idle deadline kept moving.
    assert set(reasons[1:-1]) == {Reason.USE} and len(reasons[1:-1]) <= 2 * 12
    detach = terminal.reports[-1][1]
    assert not detach.working and ended_at <= detach.observed_at <= ended_at + 3 * POLL


def test_a_short_pause_in_a_detached_job_is_not_its_end() -> None:
    terminal = Terminal()
    terminal.cpu_per_poll = POLL
    terminal.run_for(HOUR)
    terminal.cpu_per_poll = 0.0
    terminal.poll()  # one quiet sample (a download, a link waiting on disk)
    terminal.cpu_per_poll = POLL

    terminal.run_for(HOUR)

    # No report tells the control plane that nothing works any more (it would stop the session).
    assert Reason.DETACHED not in terminal.reasons()
    assert all(usage.working for _, usage in terminal.reports[1:])


def test_under_the_input_policy_work_is_not_use() -> None:
    terminal = Terminal(policy=Policy(idle_policy=IdlePolicy.INPUT))
    pid = terminal.attach()
    terminal.poll()
    terminal.cpu_per_poll = POLL
    terminal.run_for(HOUR)  # attached and busy: nothing to report
    terminal.detach(pid)
    left_at = terminal.now

    terminal.run_for(HOUR)  # detached and still busy: the grace ends anyway

    assert terminal.reasons() == [Reason.START, Reason.DETACHED]
    detached = terminal.reports[-1][1]
    assert (
        detached.working and detached.observed_at < left_at + terminal.policy.disconnect_grace_seconds + POLL
    )


def test_use_is_reported_before_the_idle_deadline_passes() -> None:
    # A short idle timeout (an admin's choice, or the local stack's compressed clock): reportSeconds
    # would be too late, so the deadline's closeness makes the report due.
    terminal = Terminal(policy=Policy(idle_timeout_seconds=120, report_seconds=300))
    pid = terminal.attach()
    terminal.poll()
    terminal.type(pid)

    terminal.run_for(HOUR)

    assert terminal.reasons() == [Reason.START, Reason.DEADLINE]
    reported = terminal.reports[1][1]
    assert reported.last_input_at == START + POLL
    assert reported.observed_at < START + 120  # before the deadline the start answer set


def test_an_ended_session_gets_no_more_reports() -> None:
    terminal = Terminal(live=False)
    pid = terminal.attach()
    terminal.poll()

    terminal.run_for(HOUR, every_poll=lambda: terminal.type(pid))

    assert terminal.reasons() == [Reason.START] and terminal.schedule.ended


def test_a_failed_report_is_retried_with_backoff_never_in_a_loop() -> None:
    schedule = ReportSchedule(POLL)
    usage = Usage(1, None, None, False, None, START)

    waits = [schedule.failed(START) for _ in range(8)]

    assert waits == [10, 20, 40, 80, 160, 300, 300, 300]  # doubling from one poll to reportSeconds
    assert schedule.due(usage) is None
    assert schedule.due(Usage(1, None, None, False, None, START + 300)) is Reason.START
    compressed = ReportSchedule(0.1)  # the local stack's compressed clock: at most 30 polls
    assert [compressed.failed(START) for _ in range(8)][-3:] == [pytest.approx(3.0)] * 3


# --- what counts as use -----------------------------------------------------------------------------


def test_input_is_remembered_after_its_client_left_and_never_later_than_the_sample() -> None:
    tracker = UsageTracker(0.05)
    tracker.observe(Sample(START, (Client(1, int(START) - 60, int(START) - 5),), 0.0))

    left = tracker.observe(Sample(START + POLL, (), 0.0))
    claimed = tracker.observe(Sample(START + 2 * POLL, (Client(2, int(START), int(START) + 10**9),), 0.0))

    assert left.last_input_at == START - 5 and left.clients == 0 and left.detached_since == START + POLL
    assert claimed.last_input_at == START + 2 * POLL  # a server's claim from the future is clamped


def test_an_unknown_client_count_changes_nothing() -> None:
    tracker = UsageTracker(0.05)
    tracker.observe(Sample(START, (Client(1, 0, 0),), 0.0))

    usage = tracker.observe(Sample(START + POLL, None, 0.0))

    assert usage.clients == 1 and usage.detached_since is None


def test_a_probe_broken_from_the_start_never_claims_a_detachment() -> None:
    # tmux could not be asked (setpriv refused, say): only the idle timeout may end the session.
    terminal = Terminal(probe_broken=True)

    terminal.run_for(HOUR)

    assert terminal.reasons() == [Reason.START]
    assert terminal.reports[0][1].detached_since is None


def test_busy_means_a_share_of_one_cpu_over_the_sample() -> None:
    tracker = UsageTracker(0.05)
    first = tracker.observe(Sample(START, (), 5.0))  # no interval yet: nothing to compare with
    idle = tracker.observe(Sample(START + 10, (), 0.49))
    busy = tracker.observe(Sample(START + 20, (), 0.5))

    assert not first.working and first.last_work_at is None
    assert not idle.working and busy.working and busy.last_work_at == START + 20


def test_the_payload_has_the_contracts_shape_with_times_as_ages() -> None:
    usage = Usage(2, START + 1.7, None, True, None, START + 2.2)
    detached = Usage(0, START, START + 1, False, START + 1.5, START + 4.0)

    assert usage.payload(7) == {
        "clients": 2,
        "inputAgeSeconds": 0.5,
        "workAgeSeconds": None,
        "working": True,
        "detachedSeconds": None,
        "sequence": 7,
    }
    # On the local stack's compressed clock (10 control-plane seconds per second here) ages scale
    assert detached.payload(8, rate=10) | {"sequence": None} == {
        "clients": 0, "inputAgeSeconds": 40.0, "workAgeSeconds": 30.0, "working": False,
        "detachedSeconds": 25.0, "sequence": None,
    }  # fmt: skip


# --- the tmux output parser -------------------------------------------------------------------------


def test_only_lines_of_three_integers_are_clients() -> None:
    text = "\n".join(
        [
            "4242 1796400000 1796400005",
            "  4243 1796400001 1796400001  ",
            "",
            "garbage",
            "1 2",
            "1 2 3 4",
            "-1 2 3",
            "1.5 2 3",
            "\uff11 \uff12 \uff13",  # full-width digits: int() would take them, tmux never prints them
            "1 2 " + "9" * 5000,
            "#{client_pid} 1 2",
        ]
    )

    clients, rejected = parse_clients(text)

    assert clients == [Client(4242, 1796400000, 1796400005), Client(4243, 1796400001, 1796400001)]
    assert len(rejected) == 8 and all(len(line) <= 200 for line in rejected)


def test_the_probe_asks_as_the_user_through_setpriv_or_directly_when_it_is_the_user() -> None:
    me = os.geteuid()
    other = TmuxProbe("/s", "main", uid=me + 1, gid=7, tmux="/t/tmux", setpriv="/t/setpriv").command()
    same = TmuxProbe("/s", "main", uid=me, gid=7, tmux="/t/tmux", setpriv="/t/setpriv").command()

    ask = ["/t/tmux", "-S", "/s", "list-clients", "-t", "=main", "-F"]
    assert same[:-1] == ask
    assert other[0] == "/t/setpriv" and other[-8:-1] == ask
    assert {f"--reuid={me + 1}", "--regid=7", "--clear-groups", "--no-new-privs"} <= set(other)
    assert {"--inh-caps=-all", "--ambient-caps=-all"} <= set(other)


# --- the /proc CPU reader ---------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")
USER = 1000


class FakeProc:
    def __init__(self, root: Path) -> None:
        self.root = root

    def process(
        self, pid: int, *, comm: str = "sh", ppid: int = 1, uid: int = USER, spent: int = 0, reaped: int = 0,
        started: int = 500,
    ) -> None:  # fmt: skip
        directory = self.root / str(pid)
        directory.mkdir(exist_ok=True)
        (directory / "stat").write_text(
            f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 0 0 0 0 {spent} 0 {reaped} 0 20 0 1 0 {started} "
            "0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
        )
        (directory / "status").write_text(
            f"Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t1\t1\t1\t1\n"
        )

    def exit(self, pid: int) -> None:
        for name in ("stat", "status"):
            (self.root / str(pid) / name).unlink()
        (self.root / str(pid)).rmdir()


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path)


def test_the_users_cpu_time_since_the_last_look_is_counted(proc: FakeProc) -> None:
    proc.process(10, comm="make", spent=1000)
    proc.process(11, comm="root thing", uid=0, spent=0)
    proc.process(12, comm="tmux: server", spent=0)
    proc.process(13, comm="tmux: client", spent=0)
    proc.process(14, comm="odd) (name", spent=0)
    ledger = CpuLedger(USER, proc.root)
    assert ledger.consumed() == 0.0  # the first look is the baseline

    proc.process(10, comm="make", spent=1000 + TICK)  # a second of its own
    proc.process(11, comm="root thing", uid=0, spent=50 * TICK)  # not the user's
    proc.process(12, comm="tmux: server", spent=50 * TICK)  # tmux redrawing is not work
    proc.process(13, comm="tmux: client", spent=50 * TICK)
    proc.process(14, comm="odd) (name", spent=TICK // 2)

    assert ledger.consumed() == pytest.approx(1.5)
    assert ledger.consumed() == 0.0


def test_children_that_exit_between_looks_count_once(proc: FakeProc) -> None:
    proc.process(20, comm="make")
    proc.process(21, comm="cc", ppid=20, spent=TICK)
    ledger = CpuLedger(USER, proc.root)
    ledger.consumed()

    proc.process(21, comm="cc", ppid=20, spent=3 * TICK)  # two more seconds while seen alive
    first = ledger.consumed()
    proc.exit(21)  # it used one more second, then make reaped it (its whole 4 s)...
    # ...and a second compiler came and went unseen between two looks, with 5 s of its own.
    proc.process(20, comm="make", reaped=4 * TICK + 5 * TICK)
    second = ledger.consumed()

    assert (first, second) == (pytest.approx(2.0), pytest.approx(6.0))


def test_a_reused_pid_is_a_new_process(proc: FakeProc) -> None:
    proc.process(30, spent=100 * TICK, started=500)
    ledger = CpuLedger(USER, proc.root)
    ledger.consumed()
    proc.exit(30)
    proc.process(30, spent=2 * TICK, started=900)  # another process got the pid: all of it is new

    assert ledger.consumed() == pytest.approx(2.0)


def test_unreadable_or_garbled_processes_are_skipped(proc: FakeProc) -> None:
    proc.process(40, spent=0)
    (proc.root / "41").mkdir()  # exited between the listing and the read
    (proc.root / "42").mkdir()
    (proc.root / "42" / "stat").write_text("42 (x) S")
    (proc.root / "42" / "status").write_text("Uid:\t1000\n")
    (proc.root / "self").mkdir()
    ledger = CpuLedger(USER, proc.root)
    ledger.consumed()
    proc.process(40, spent=TICK)

    assert ledger.consumed() == pytest.approx(1.0)


# --- the answer and the configuration ---------------------------------------------------------------

ANSWER = {
    "policy": {
        "idlePolicy": "input",
        "idleTimeoutSeconds": 600,
        "disconnectGraceSeconds": 0,
        "reportSeconds": 60,
    },
    "idleDeadline": "2026-12-04T16:10:00Z",
    "idleSecondsLeft": 600,
    "status": "READY",
}


def test_an_answer_sets_the_policy_and_the_deadline() -> None:
    answer = Answer.parse(ANSWER, now=START)
    compressed = Answer.parse(ANSWER, now=START, rate=10)

    assert answer.policy == Policy(IdlePolicy.INPUT, 600, 0, 60)
    assert answer.idle_deadline == START + 600 and answer.live
    assert compressed.policy == Policy(IdlePolicy.INPUT, 60, 0, 6) and compressed.idle_deadline == START + 60
    assert not Answer.parse({**ANSWER, "status": "STOPPING"}, now=START).live


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"error": "AccessRefused", "message": "is not live"}, "AccessRefused"),
        ([], "not an object"),
        ({**ANSWER, "policy": None}, "no policy"),
        ({**ANSWER, "status": 3}, "no status"),
        ({**ANSWER, "policy": {**ANSWER["policy"], "idlePolicy": "never"}}, "idlePolicy"),
        ({**ANSWER, "policy": {**ANSWER["policy"], "reportSeconds": 0}}, "reportSeconds"),
        ({**ANSWER, "policy": {**ANSWER["policy"], "idleTimeoutSeconds": "600"}}, "idleTimeoutSeconds"),
        (
            {**ANSWER, "policy": {**ANSWER["policy"], "disconnectGraceSeconds": True}},
            "disconnectGraceSeconds",
        ),
        ({**ANSWER, "idleSecondsLeft": "tomorrow"}, "idleSecondsLeft"),
        ({**ANSWER, "idleSecondsLeft": -1}, "idleSecondsLeft"),
    ],
)
def test_an_answer_out_of_contract_is_a_failed_report(body: Any, names: str) -> None:
    with pytest.raises(ReportFailed, match=names):
        Answer.parse(body, now=START)


def test_the_configuration_names_every_bad_setting() -> None:
    with pytest.raises(ConfigError) as caught:
        MonitorConfig.from_env(
            {"USAGE_POLL_SECONDS": "0", "USAGE_WORK_CPU_FRACTION": "x", "CLOUDIDE_UID": "-1",
             "CLOUDIDE_TMUX_SOCKET": "relative"}
        )  # fmt: skip

    for name in ("USAGE_REPORT_FUNCTION", "USAGE_POLL_SECONDS", "USAGE_WORK_CPU_FRACTION", "CLOUDIDE_UID",
                 "CLOUDIDE_TMUX_SOCKET"):  # fmt: skip
        assert name in str(caught.value)
    config = MonitorConfig.from_env({"USAGE_REPORT_FUNCTION": "usage", "USAGE_POLL_SECONDS": "0.25"})
    assert (config.poll_seconds, config.uid, config.tmux_session) == (0.25, 1000, "main")


# --- the loop: a bad answer or a failed call is logged and retried later, never a crash -------------


class FakeLambda:
    def __init__(self, *replies: dict[str, Any]) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []

    def invoke(self, FunctionName: str, Payload: bytes) -> dict[str, Any]:
        self.requests.append(json.loads(Payload))
        reply = self.replies.pop(0)
        return {**reply, "Payload": io.BytesIO(json.dumps(reply.pop("body")).encode())}


class FakeSts:
    def generate_presigned_url(self, operation: str, Params: dict[str, Any], ExpiresIn: int) -> str:
        return f"https://sts.amazonaws.com/?Action=GetCallerIdentity&X-Amz-Expires={ExpiresIn}"


class NobodyAttached:
    rejected = ()

    def clients(self) -> list[Client]:
        return []


class NoWork:
    def consumed(self) -> float:
        return 0.0


def test_a_refused_or_broken_report_is_retried_after_the_backoff() -> None:
    lambda_client = FakeLambda(
        {"body": {"error": "AccessRefused", "message": "not a terminal of this cluster"}},
        {"body": {"errorMessage": "boom"}, "FunctionError": "Unhandled"},
        {"body": ANSWER},
    )
    clock = iter(START + POLL * step for step in range(100))
    monitor = Monitor(
        MonitorConfig(report_function="usage", poll_seconds=POLL),
        probe=NobodyAttached(),  # type: ignore[arg-type]
        ledger=NoWork(),  # type: ignore[arg-type]
        control_plane=ControlPlane("usage", lambda_client=lambda_client, sts_client=FakeSts()),
        logger=Logger(service="usage-monitor-test"),
        clock=lambda: next(clock),
    )

    for _ in range(5):
        monitor.step()

    # Tried at 0 (refused), at 1 poll (failed), and after two more polls (answered): never each poll.
    assert [request["usage"]["sequence"] for request in lambda_client.requests] == [1, 2, 3]
    assert [request["usage"]["detachedSeconds"] for request in lambda_client.requests] == [0, POLL, 3 * POLL]
    assert lambda_client.requests[0]["callerIdentityUrl"].endswith("X-Amz-Expires=60")
    assert monitor.schedule.policy == Answer.parse(ANSWER, now=START).policy
