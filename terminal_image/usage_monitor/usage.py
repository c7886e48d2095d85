"""What counts as use, decided over timestamped samples: no clock is read here, so tests drive time.

- Input: a key from any client. tmux's ``client_activity`` equals ``client_created`` until the client
  types; keys within ATTACH_SETTLE_SECONDS of attaching are not counted either, because a terminal's
  replies to tmux's queries on attach (split across packets on a slow link) can arrive as keys. A
  reconnect (ECS Exec drops an idle channel every 20 minutes, the client attaches again) is not use.
  The latest input is remembered here, since the client that typed may be gone by the next sample.
- Work: the user's processes used at least ``work_cpu_fraction`` of a CPU over the sample; the user
  is ``working`` while one of the last WORK_SAMPLES samples was busy, so a build pausing for a few
  seconds (a download, a linker waiting on disk) is not taken for its end.
- Detached: no client attached, since ``detached_since`` (the first sample if none ever was).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from .tmux import Client

ATTACH_SETTLE_SECONDS = 2
WORK_SAMPLES = 3


@dataclass(frozen=True)
class Sample:
    at: float  # epoch seconds
    clients: tuple[Client, ...] | None  # None: tmux could not be asked, the count is unknown
    cpu_seconds: float  # the user's work since the previous sample


@dataclass(frozen=True)
class Usage:
    clients: int
    last_input_at: float | None
    last_work_at: float | None
    working: bool
    detached_since: float | None
    observed_at: float

    def payload(self, sequence: int, *, rate: float = 1.0) -> dict[str, Any]:
        """The report's `usage`: times as ages in the control plane's seconds (`rate` of them per second
        here: 1, except on the local stack's compressed clock), so the two clocks need not agree."""

        def age(moment: float | None) -> float | None:
            return None if moment is None else round(max(0.0, self.observed_at - moment) * rate, 1)

        return {
            "clients": self.clients,
            "inputAgeSeconds": age(self.last_input_at),
            "workAgeSeconds": age(self.last_work_at),
            "working": self.working,
            "detachedSeconds": age(self.detached_since),
            "sequence": sequence,
        }


class UsageTracker:
    def __init__(self, work_cpu_fraction: float) -> None:
        self._fraction = work_cpu_fraction
        self._previous_at: float | None = None
        self._clients = 0
        self._detached_since: float | None = None
        self._last_input_at: float | None = None
        self._last_work_at: float | None = None
        self._busy: deque[bool] = deque(maxlen=WORK_SAMPLES)

    def observe(self, sample: Sample) -> Usage:
        # An unknown count changes nothing: unknown from the start, no detachment is ever claimed, and
        # the idle timeout alone ends the session.
        if sample.clients is not None:
            self._observe_clients(sample.at, sample.clients)
        interval = None if self._previous_at is None else sample.at - self._previous_at
        busy = interval is not None and interval > 0 and sample.cpu_seconds >= self._fraction * interval
        if busy:
            self._last_work_at = sample.at
        self._busy.append(busy)
        self._previous_at = sample.at
        return Usage(
            clients=self._clients,
            last_input_at=self._last_input_at,
            last_work_at=self._last_work_at,
            working=any(self._busy),
            detached_since=self._detached_since,
            observed_at=sample.at,
        )

    def _observe_clients(self, at: float, clients: tuple[Client, ...]) -> None:
        if not clients:
            if self._clients or self._detached_since is None:
                self._detached_since = at
        else:
            self._detached_since = None
        self._clients = len(clients)
        for client in clients:
            if client.activity - client.created >= ATTACH_SETTLE_SECONDS:
                # Never later than the sample: the server is the user's and could claim any time.
                typed = min(float(client.activity), at)
                self._last_input_at = max(typed, self._last_input_at or typed)
