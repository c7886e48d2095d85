"""Who is attached to the user's shell, and when each client last typed: ``tmux list-clients``.

tmux keeps, per client, when it attached (``client_created``) and when its last key arrived
(``client_activity``), both in whole seconds; attaching, resizing and redrawing do not move the latter
(tests/image/test_usage_monitor.py proves it with a real server and a client on a pty). The
server is the user's and serves only its own uid (and root), so the monitor asks as that uid: through
setpriv with a clean environment and no capabilities when it runs as another uid, directly when it is
that uid. What the server prints is the user's to choose: only lines of three integers are read, the
output is bounded in size and time, and anything else is ignored.
"""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

FORMAT = "#{client_pid} #{client_created} #{client_activity}"
OUTPUT_LIMIT = 64 * 1024  # hundreds of clients' lines; more is not a tmux answer
TIMEOUT_SECONDS = 5.0
_LINE = re.compile(r"^(\d{1,10}) (\d{1,12}) (\d{1,12})$", re.ASCII)
# What tmux says when there is no server (or it is exiting), no socket, or no such session: no one is
# attached.
_NOBODY = re.compile(
    r"^(no server running on |error connecting to .* \((No such file or directory|Connection refused)\)$"
    r"|server exited unexpectedly$|can't find session)"
)


class ProbeError(RuntimeError):
    """tmux could not be asked (or answered out of bounds): the number of clients is unknown."""


@dataclass(frozen=True)
class Client:
    pid: int
    created: int  # epoch seconds, as tmux keeps them
    activity: int  # epoch seconds of the client's last key, == created until it types


def parse_clients(text: str) -> tuple[list[Client], list[str]]:
    """The clients in ``FORMAT`` lines, and the lines that were not (for the log)."""
    clients: list[Client] = []
    rejected: list[str] = []
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match:
            clients.append(Client(*(int(field) for field in match.groups())))
        elif line.strip():
            rejected.append(line[:200])
    return clients, rejected


class TmuxProbe:
    def __init__(self, socket: str, session: str, *, uid: int, gid: int, tmux: str, setpriv: str) -> None:
        self._socket = socket
        self._session = session
        self._uid = uid
        self._gid = gid
        self._tmux = tmux
        self._setpriv = setpriv
        self.rejected: list[str] = []  # the last answer's lines that were not clients

    def command(self) -> list[str]:
        ask = [self._tmux, "-S", self._socket, "list-clients", "-t", f"={self._session}", "-F", FORMAT]
        if os.geteuid() == self._uid:
            return ask
        # The user's uid, no groups, no capabilities to inherit or keep, no way to gain any back.
        drop = [f"--reuid={self._uid}", f"--regid={self._gid}", "--clear-groups"]
        return [self._setpriv, *drop, "--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs", "--", *ask]

    def clients(self) -> list[Client]:
        """The attached clients; [] when there is no server, socket or session (nobody attached)."""
        code, output = _run_bounded(self.command())
        if code != 0:
            if _NOBODY.match(output):
                return []
            raise ProbeError(f"tmux list-clients exited {code}: {output.strip()[:200]}")
        clients, self.rejected = parse_clients(output)
        return clients


def _run_bounded(argv: Sequence[str]) -> tuple[int, str]:
    """Run with an empty environment; at most OUTPUT_LIMIT bytes of output and TIMEOUT_SECONDS."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    try:
        proc = subprocess.Popen(
            argv, env={}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    except OSError as error:
        raise ProbeError(f"cannot run {argv[0]}: {error}") from error
    assert proc.stdout is not None
    output = bytearray()
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    raise ProbeError(f"tmux list-clients did not answer within {TIMEOUT_SECONDS:g} s")
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                output += chunk
                if len(output) > OUTPUT_LIMIT:
                    raise ProbeError(f"tmux list-clients printed more than {OUTPUT_LIMIT} bytes")
        code = proc.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired as error:
        raise ProbeError(f"tmux list-clients did not exit within {TIMEOUT_SECONDS:g} s") from error
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    return code, output.decode("utf-8", "replace")
