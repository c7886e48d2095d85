"""CPU time the user's own work consumed since the last look, read from /proc (world-readable).

Work is every process of the user's uid except tmux itself (its server redraws for every attach, which
is not use). A build runs most of its CPU in short-lived children (compilers, test workers) that come
and go between two looks, so a process's own time is not enough: when a child exits, the parent that
waits for it adds the child's total to its ``cutime``/``cstime``. Counting those too sees every child
its parent reaped; the part of that total already counted while the child was alive (or excluded, as
tmux) is subtracted, so nothing is counted twice.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

# comm as tmux sets it (proctitle): the server, and every attached client.
TMUX_NAMES = frozenset({"tmux: server", "tmux: client"})


@dataclass(frozen=True)
class _Process:
    ppid: int
    started: int  # clock ticks after boot: tells a reused pid from the process seen before
    uid: int
    spent: int  # own utime + stime, in clock ticks
    reaped: int  # cutime + cstime: the totals of the children it waited for
    excluded: bool


class CpuLedger:
    def __init__(self, uid: int, proc: Path = Path("/proc")) -> None:
        self._uid = uid
        self._proc = proc
        self._tick = 1 / os.sysconf("SC_CLK_TCK")
        self._seen: dict[int, _Process] | None = None

    def consumed(self) -> float:
        """Seconds of CPU the user's work used since the previous call (0.0 on the first)."""
        now = self._snapshot()
        before, self._seen = self._seen, now
        if before is None:
            return 0.0
        # What each parent's reaped total will include that was counted (or excluded) already.
        known: dict[int, int] = defaultdict(int)
        for pid, gone in before.items():
            if pid not in now or now[pid].started != gone.started:
                known[gone.ppid] += gone.spent + gone.reaped
        ticks = 0
        for pid, process in now.items():
            if process.uid != self._uid or process.excluded:
                continue
            earlier = before.get(pid)
            if earlier is None or earlier.started != process.started:
                earlier = _Process(process.ppid, process.started, process.uid, 0, 0, False)
            ticks += process.spent - earlier.spent
            ticks += max(0, process.reaped - earlier.reaped - known[pid])
        return ticks * self._tick

    def _snapshot(self) -> dict[int, _Process]:
        processes: dict[int, _Process] = {}
        with os.scandir(self._proc) as entries:
            for entry in entries:
                if entry.name.isascii() and entry.name.isdigit():
                    process = self._read(Path(entry.path))
                    if process is not None:
                        processes[int(entry.name)] = process
        return processes

    @staticmethod
    def _read(directory: Path) -> _Process | None:
        """One process, or None if it exited while being read (or is unreadable)."""
        try:
            stat = (directory / "stat").read_text(errors="replace")
            status = (directory / "status").read_text(errors="replace")
        except OSError:
            return None
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split at the last ')'.
        head, _, tail = stat.rpartition(")")
        fields = tail.split()
        uid = next((line.split()[1] for line in status.splitlines() if line.startswith("Uid:")), None)
        try:
            return _Process(
                ppid=int(fields[1]),
                started=int(fields[19]),
                uid=int(uid) if uid is not None else -1,
                spent=int(fields[11]) + int(fields[12]),
                reaped=int(fields[13]) + int(fields[14]),
                excluded=head.partition("(")[2] in TMUX_NAMES,
            )
        except (IndexError, ValueError):
            return None
