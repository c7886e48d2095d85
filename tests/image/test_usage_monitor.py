"""The usage monitor against the real things: a tmux 3.3a server of the user's uid with a client on a
pty (keys typed through the client's terminal, resizes, `send-keys`), the user's processes in /proc,
and `python -m usage_monitor` reporting to a stand-in of the control plane's usage function.

The tests run as root. The "user" is a uid no other process on the machine has (so nothing else
running here is taken for their work); the monitor asks tmux as that uid through setpriv, or directly
when it is that uid itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from usage_monitor import tmux as tmux_module
from usage_monitor.cpu import TMUX_NAMES, CpuLedger
from usage_monitor.tmux import Client, ProbeError, TmuxProbe
from usage_monitor.usage import ATTACH_SETTLE_SECONDS

from tests.support import eventually, require_tool

REPO = Path(__file__).resolve().parents[2]
USER = 54321  # the terminal's user
BUSY, IDLE, PARENT = 54322, 54323, 54324  # one uid per work-probe process, so each ledger sees one
MONITOR = 999  # the image runs the monitor as this uid, with CAP_SETUID and CAP_SETGID
CLEAN_ENV = {"PATH": "/usr/bin:/bin", "TERM": "xterm-256color", "LANG": "C.UTF-8"}


def as_uid(uid: int, *argv: str) -> list[str]:
    if uid == os.geteuid():
        return list(argv)
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every uid can traverse (pytest's tmp_path is root's alone)."""
    require_tool("tmux", "the user's shell")
    require_tool("setpriv", "asking tmux as the user")
    path = Path(tempfile.mkdtemp(prefix="cloudide-usage-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


class UserShell:
    """The user's tmux server, as cloudide-shell starts it: their uid, a 0700 socket directory."""

    def __init__(self, base: Path, uid: int) -> None:
        self.uid = uid
        directory = base / "tmux"
        directory.mkdir(mode=0o700)
        os.chown(directory, uid, uid)
        self.socket = directory / "default"
        conf = str(REPO / "terminal_image" / "tmux.conf")
        self.tmux("-f", conf, "new-session", "-d", "-s", "main", "-x", "80", "-y", "24", "sh")

    def tmux(self, *args: str) -> str:
        argv = as_uid(self.uid, "tmux", "-S", str(self.socket), *args)
        return subprocess.run(argv, env=CLEAN_ENV, capture_output=True, text=True, check=True).stdout.strip()

    def probe(self) -> TmuxProbe:
        tools = {"tmux": shutil.which("tmux") or "tmux", "setpriv": shutil.which("setpriv") or "setpriv"}
        return TmuxProbe(str(self.socket), "main", uid=self.uid, gid=self.uid, **tools)

    def close(self) -> None:
        argv = as_uid(self.uid, "tmux", "-S", str(self.socket), "kill-server")
        subprocess.run(argv, env=CLEAN_ENV, capture_output=True, check=False)


class PtyClient:
    """`tmux attach` on a terminal of its own, as a person's terminal (or ECS Exec's) would run it."""

    def __init__(self, shell: UserShell) -> None:
        self.master, slave = os.openpty()
        self.resize(24, 80)
        self.proc = subprocess.Popen(
            as_uid(shell.uid, "tmux", "-S", str(shell.socket), "attach-session", "-t", "=main"),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=CLEAN_ENV,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # the terminal of its new session
        )
        os.close(slave)
        self.screen = bytearray()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.screen += chunk

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def close(self) -> None:
        """The terminal goes away (a closed tab, a killed `attach`); again is a no-op."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


@pytest.fixture(params=["other-uid", "same-uid"])
def shell(request: pytest.FixtureRequest, shared_dir: Path) -> Iterator[UserShell]:
    """The user's shell, asked through setpriv (the monitor's own uid differs) or directly (it is the
    user: the local stack's sandbox without privileges)."""
    started = UserShell(shared_dir, USER if request.param == "other-uid" else os.geteuid())
    yield started
    started.close()


@pytest.fixture
def clients() -> Iterator[list[PtyClient]]:
    opened: list[PtyClient] = []
    yield opened
    for client in opened:
        client.close()


def second_after(moment: int) -> None:
    """tmux keeps whole seconds: wait until the clock has passed `moment`, so a change would show."""
    eventually(lambda: time.time() >= moment + 1.05, timeout=5)


def test_keys_typed_in_a_client_are_input_and_attaching_resizing_and_send_keys_are_not(
    shell: UserShell, clients: list[PtyClient]
) -> None:
    probe = shell.probe()
    assert probe.clients() == []  # a server with nobody attached

    clients.append(client := PtyClient(shell))
    [attached] = eventually(probe.clients)
    assert attached.pid == client.proc.pid and attached.activity == attached.created
    assert Path(f"/proc/{attached.pid}/comm").read_text().strip() in TMUX_NAMES  # the work probe skips it
    second_after(attached.created)

    client.resize(40, 120)
    eventually(lambda: shell.tmux("list-clients", "-F", "#{client_width}x#{client_height}") == "120x40")
    shell.tmux("send-keys", "-t", "=main:", "echo sent-by-send-keys", "Enter")  # bypasses every client
    eventually(lambda: "sent-by-send-keys" in shell.tmux("capture-pane", "-p", "-t", "=main:"))
    assert probe.clients() == [attached]  # the resize, its redraw and send-keys moved nothing

    client.type(b"echo typed\r")
    [typed] = eventually(lambda: [c for c in probe.clients() if c.activity > attached.created])
    assert (typed.pid, typed.created) == (attached.pid, attached.created)
    assert attached.created < typed.activity <= time.time()

    client.close()
    eventually(lambda: probe.clients() == [])
    shell.close()
    assert probe.clients() == []  # no server: nobody attached, not an error


def test_no_socket_means_nobody_attached(shared_dir: Path) -> None:
    probe = TmuxProbe(
        str(shared_dir / "none" / "default"), "main", uid=USER, gid=USER, tmux="tmux", setpriv="setpriv"
    )

    assert probe.clients() == []


def fake_tmux(directory: Path, script: str) -> str:
    path = directory / "tmux"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize(
    ("script", "says"),
    [
        (
            "echo 'setpriv: setresuid failed: Operation not permitted' >&2; exit 127",
            "Operation not permitted",
        ),
        ("echo 'error connecting to /s (Permission denied)' >&2; exit 1", "Permission denied"),
        ("yes '1 2 3'", "more than"),
        ("exec sleep 60", "did not answer"),
    ],
    ids=["refused", "no-access", "endless-output", "hangs"],
)
def test_a_probe_that_cannot_tell_says_so_rather_than_nobody_attached(
    shared_dir: Path, monkeypatch: pytest.MonkeyPatch, script: str, says: str
) -> None:
    # A broken probe taken for "no client" would stop a session someone is using.
    monkeypatch.setattr(tmux_module, "TIMEOUT_SECONDS", 1.0)
    tmux = fake_tmux(shared_dir, script)
    probe = TmuxProbe("/s", "main", uid=os.geteuid(), gid=0, tmux=tmux, setpriv="setpriv")

    with pytest.raises(ProbeError, match=says):
        probe.clients()


def test_what_the_users_server_prints_is_read_as_data_only(shared_dir: Path) -> None:
    tmux = fake_tmux(shared_dir, "printf '7 100 105\\n$(id)\\n\\033]0;title\\007\\n8 1 1 1\\n'")
    probe = TmuxProbe("/s", "main", uid=os.geteuid(), gid=0, tmux=tmux, setpriv="setpriv")

    assert probe.clients() == [Client(7, 100, 105)]
    assert len(probe.rejected) == 3


def test_the_users_tmux_runs_with_none_of_the_monitors_privileges(shared_dir: Path) -> None:
    # The server is the user's, and a tmux client does what its server tells it: the client the
    # monitor starts must hold nothing the user does not already have.
    out = shared_dir / "out"
    out.mkdir()
    os.chown(out, USER, USER)
    tmux = fake_tmux(
        shared_dir, f"cat /proc/self/status > {out}/status; env > {out}/env; id -G > {out}/groups"
    )
    probe = f"from usage_monitor.tmux import TmuxProbe; print(TmuxProbe('/s', 'main', uid={USER}, gid={USER}, tmux={tmux!r}, setpriv='/usr/bin/setpriv').clients())"
    # As the image starts the monitor: its own uid, CAP_SETUID and CAP_SETGID (ambient, so they survive exec).
    monitor = ["setpriv", f"--reuid={MONITOR}", f"--regid={MONITOR}", "--clear-groups",
               "--inh-caps=+setuid,+setgid", "--ambient-caps=+setuid,+setgid", "--"]  # fmt: skip
    env = {**CLEAN_ENV, "PYTHONPATH": str(REPO / "terminal_image"), "AWS_SECRET_ACCESS_KEY": "monitor-only"}
    ran = subprocess.run([*monitor, "/usr/bin/python3", "-c", probe], env=env, capture_output=True, text=True)

    assert ran.returncode == 0 and ran.stdout.strip() == "[]", ran.stderr
    status = dict(line.split(":", 1) for line in (out / "status").read_text().splitlines())
    assert status["Uid"].split() == [str(USER)] * 4 and status["Gid"].split() == [str(USER)] * 4
    for caps in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(status[caps], 16) == 0, caps
    assert status["NoNewPrivs"].strip() == "1"
    assert (out / "groups").read_text().split() == [str(USER)]
    assert "monitor-only" not in (out / "env").read_text()


# --- the work probe ---------------------------------------------------------------------------------


class Accumulated:
    """A ledger's readings added up while a test waits for an amount."""

    def __init__(self, ledger: CpuLedger) -> None:
        self.ledger = ledger
        self.total = 0.0

    def at_least(self, seconds: float) -> bool:
        self.total += self.ledger.consumed()
        return self.total >= seconds


def started_as(uid: int, *argv: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(as_uid(uid, *argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=CLEAN_ENV)
    eventually(lambda: f"Uid:\t{uid}\t" in Path(f"/proc/{proc.pid}/status").read_text())
    return proc


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait(10)


def test_the_work_probe_sees_a_busy_loop_and_not_an_idle_process(
    processes: list[subprocess.Popen[bytes]],
) -> None:
    processes.append(started_as(BUSY, "sh", "-c", "while :; do :; done"))
    # Idle (waiting for a line), then as busy as the other: the same ledger sees it in both states.
    processes.append(idle := started_as(IDLE, "sh", "-c", "read line; while :; do :; done"))
    busy, waiting = Accumulated(CpuLedger(BUSY)), Accumulated(CpuLedger(IDLE))
    busy.ledger.consumed()
    waiting.ledger.consumed()

    eventually(lambda: busy.at_least(0.5))
    assert not waiting.at_least(0.02)

    assert idle.stdin is not None
    idle.stdin.write(b"go\n")
    idle.stdin.flush()
    eventually(lambda: waiting.at_least(0.5))


def test_the_work_probe_counts_children_that_came_and_went_between_two_looks(
    processes: list[subprocess.Popen[bytes]],
) -> None:
    # A build's CPU is mostly short-lived children (compilers): this one is born, burns CPU and is
    # reaped by its parent entirely between the ledger's two looks.
    burn = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"
    processes.append(
        parent := started_as(PARENT, "sh", "-c", f"read line; sh -c '{burn}'; echo done; read line")
    )
    ledger = CpuLedger(PARENT)
    ledger.consumed()
    assert parent.stdin is not None and parent.stdout is not None

    parent.stdin.write(b"go\n")
    parent.stdin.flush()
    assert parent.stdout.readline() == b"done\n"

    assert ledger.consumed() >= 0.1


# --- the monitor process ----------------------------------------------------------------------------


class UsageFunction(ThreadingHTTPServer):
    """The Lambda Invoke API of the control plane's usage function, as boto3 calls it: records each
    report and answers as the control plane would (a detached report past the grace stops the session)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Invoke)
        self.calls: list[tuple[str, dict[str, Any]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def reports(self) -> list[dict[str, Any]]:
        return [body["usage"] for _, body in self.calls]

    def answer(self, usage: dict[str, Any]) -> dict[str, Any]:
        return {
            "policy": {"idlePolicy": "work", "idleTimeoutSeconds": 3600, "disconnectGraceSeconds": GRACE,
                       "reportSeconds": 1},
            "idleDeadline": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600)),
            "idleSecondsLeft": 3600,
            "status": "STOPPING" if ends_session(usage) else "READY",
        }  # fmt: skip


GRACE = 1


def ends_session(usage: dict[str, Any]) -> bool:
    """What the control plane stops a session for under `work`: nobody attached past the grace, and
    nothing working."""
    if usage["clients"] or usage["detachedSeconds"] is None or usage["working"]:
        return False
    return bool(usage["detachedSeconds"] >= GRACE)


class _Invoke(BaseHTTPRequestHandler):
    server: UsageFunction

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        # Lambda takes only SigV4-signed requests: the monitor must call it as the task, signed.
        signed_by = self.headers.get("Authorization", "")
        if "/us-east-1/lambda/aws4_request" not in signed_by:
            self.send_error(403, "MissingAuthenticationTokenException")
            return
        self.server.calls.append((self.path, body))
        data = json.dumps(self.server.answer(body["usage"])).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def usage_function() -> Iterator[UsageFunction]:
    server = UsageFunction()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


class MonitorProcess:
    """`python -m usage_monitor` as the image runs it, watching `shell`, reporting to `function`."""

    def __init__(self, shell: UserShell, function: UsageFunction, log: Path) -> None:
        self.function = function
        self.log = log
        env = {
            **CLEAN_ENV,
            "HOME": str(log.parent),
            "PYTHONPATH": str(REPO / "terminal_image"),
            "AWS_ENDPOINT_URL": function.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "USAGE_REPORT_FUNCTION": "usage",
            "USAGE_POLL_SECONDS": "0.25",
            "CLOUDIDE_UID": str(shell.uid),
            "CLOUDIDE_GID": str(shell.uid),
            "CLOUDIDE_TMUX_SOCKET": str(shell.socket),
        }
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "usage_monitor"], env=env, stdout=out, stderr=out
            )

    def wait_for(self, check: Any) -> Any:
        """Wait until `check(reports)` holds; a failure shows the reports and the monitor's log."""
        return eventually(
            lambda: check(self.function.reports()),
            timeout=30,
            explain=lambda: (self.function.reports(), self.log.read_text()),
        )

    def wait_stopped_reporting(self) -> None:
        eventually(lambda: b"no longer live" in self.log.read_bytes(), explain=self.log.read_text)

    def stop(self) -> int:
        """SIGTERM, as ECS stops a task: the monitor exits 0 at once."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(10)

    def reasons(self) -> list[str]:
        logs = [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]
        assert {entry["service"] for entry in logs} == {"usage-monitor"}  # JSON lines, every one
        return [entry["reason"] for entry in logs if entry["message"] == "usage reported"]


@pytest.fixture
def user_shell(shared_dir: Path) -> Iterator[UserShell]:
    started = UserShell(shared_dir, USER)
    yield started
    started.close()


@pytest.fixture
def monitors(shared_dir: Path, usage_function: UsageFunction) -> Iterator[Any]:
    started: list[MonitorProcess] = []

    def start(shell: UserShell) -> MonitorProcess:
        started.append(monitor := MonitorProcess(shell, usage_function, shared_dir / "monitor.log"))
        return monitor

    yield start
    for monitor in started:
        if monitor.proc.poll() is None:
            monitor.proc.kill()
            monitor.proc.wait(10)


def test_the_monitor_reports_at_start_after_typing_and_once_when_the_last_client_leaves(
    user_shell: UserShell, clients: list[PtyClient], monitors: Any
) -> None:
    # Given the user's shell with a client attached that has not typed
    clients.append(client := PtyClient(user_shell))
    [attached] = eventually(user_shell.probe().clients)

    # When the monitor starts: one report, to learn the policy
    monitor = monitors(user_shell)
    [(path, first)] = monitor.wait_for(lambda _: monitor.function.calls)
    assert path == "/2015-03-31/functions/usage/invocations"
    proof = parse_qs(urlsplit(first["callerIdentityUrl"]).query)
    assert proof["Action"] == ["GetCallerIdentity"] and proof["X-Amz-Expires"] == ["60"]
    assert "X-Amz-Signature" in proof
    assert first["usage"] == {
        "clients": 1, "inputAgeSeconds": None, "workAgeSeconds": None, "working": False,
        "detachedSeconds": None, "sequence": 1,
    }  # fmt: skip

    # When the user types (past the settle window after attaching): a report with the input
    eventually(lambda: time.time() >= attached.created + ATTACH_SETTLE_SECONDS + 0.05, timeout=10)
    client.type(b"echo typed\r")
    monitor.wait_for(lambda reports: any(r["inputAgeSeconds"] is not None for r in reports))

    # When the last client leaves: one report after the grace, and the session is stopping
    client.close()
    monitor.wait_for(lambda reports: any(r["clients"] == 0 for r in reports))
    monitor.wait_stopped_reporting()
    assert monitor.stop() == 0

    # Then exactly those three reports: attaching and the redraws never caused one
    start, typed, detached = monitor.function.reports()
    assert [start["sequence"], typed["sequence"], detached["sequence"]] == [1, 2, 3]
    assert typed["clients"] == 1 and typed["inputAgeSeconds"] is not None
    assert detached["detachedSeconds"] is not None
    assert detached["inputAgeSeconds"] >= detached["detachedSeconds"], "the keystroke came before leaving"
    assert monitor.reasons() == ["start", "use", "detached"]


def test_a_job_left_running_with_nobody_attached_keeps_the_session_until_it_ends(
    user_shell: UserShell, monitors: Any
) -> None:
    # Given a busy job in the user's shell and nobody attached (started, then the terminal closed)
    user_shell.tmux("send-keys", "-t", "=main:", "while :; do :; done", "Enter")

    # When the monitor watches it past the grace: its work is use, and nothing ends the session
    monitor = monitors(user_shell)
    monitor.wait_for(lambda reports: sum(r["working"] for r in reports) >= 3)
    assert not any(ends_session(r) for r in monitor.function.reports())

    # When the job ends: one report that nothing is working, and the session stops
    user_shell.tmux("send-keys", "-t", "=main:", "C-c", "")
    monitor.wait_for(lambda reports: ends_session(reports[-1]))
    monitor.wait_stopped_reporting()
    assert monitor.stop() == 0

    # Then the job's work was reported as use while it ran, and only the last report ends the session
    # (a use report or a detachment report, whichever fell due first once the job had ended)
    reports = monitor.function.reports()
    assert reports[0]["clients"] == 0 and reports[0]["detachedSeconds"] == 0
    assert all(r["working"] and r["workAgeSeconds"] is not None for r in reports[1:-1]) and len(reports) >= 4
    assert [ends_session(r) for r in reports].count(True) == 1
    reasons = monitor.reasons()
    assert reasons[0] == "start" and set(reasons[1:-1]) == {"use"} and reasons[-1] in {"use", "detached"}
