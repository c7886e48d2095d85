"""When to report: the control plane moves a session's idle deadline and heartbeat only on reports, and
each report is a Lambda invocation, so the monitor reports only what the control plane needs to know.

- once at start, to learn the session's policy;
- unreported use (input newer than the last reported, or under ``work`` work newer than the last
  reported) once ``reportSeconds`` have passed since the last report: while in use, one report per
  ``reportSeconds`` (12 an hour at the default five minutes), however much the user types;
- unreported use when the idle deadline is less than two polls and DEADLINE_MARGIN_SECONDS away, so no
  use is lost to a deadline that a later report would have moved;
- once per detachment, when no client has been attached for ``disconnectGraceSeconds`` and (under
  ``work``) nothing is working: the control plane then stops the session. Under ``work`` a job still
  running past the grace holds this back until it ends.

Attaching, re-attaching and redraws change none of these by themselves. Pure: the time is the usage's
``observed_at``, so tests drive hours of samples in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .usage import Usage

DEADLINE_MARGIN_SECONDS = 30.0
# A failed report is retried after one poll, then twice as long each time, up to reportSeconds or this
# many polls, whichever is shorter (so a compressed clock's short poll also retries soon).
BACKOFF_POLLS = 30


class Reason(StrEnum):
    START = "start"
    USE = "use"
    DEADLINE = "deadline"
    DETACHED = "detached"


class IdlePolicy(StrEnum):
    WORK = "work"  # keystrokes, and the user's processes using CPU
    INPUT = "input"  # keystrokes only


@dataclass(frozen=True)
class Policy:
    """The session's policy; these defaults hold until the control plane's first answer."""

    idle_policy: IdlePolicy = IdlePolicy.WORK
    idle_timeout_seconds: float = 1800
    disconnect_grace_seconds: float = 300
    report_seconds: float = 300


class ReportSchedule:
    def __init__(self, poll_seconds: float) -> None:
        self._poll = poll_seconds
        self.policy = Policy()
        self.ended = False  # the session is no longer live: nothing left to report
        self._idle_deadline: float | None = None
        self._reported: Usage | None = None
        self._reported_detachment: float | None = None
        self._retry_at = 0.0
        self._backoff = 0.0

    def due(self, usage: Usage) -> Reason | None:
        """Why a report is due at ``usage.observed_at``, or None."""
        now = usage.observed_at
        if self.ended or now < self._retry_at:
            return None
        last = self._reported
        if last is None:
            return Reason.START
        if self._unreported_use(usage, last):
            if now - last.observed_at >= self.policy.report_seconds:
                return Reason.USE
            margin = 2 * self._poll + DEADLINE_MARGIN_SECONDS
            if self._idle_deadline is not None and self._idle_deadline - now < margin:
                return Reason.DEADLINE
        if self._detached_past_grace(usage) and usage.detached_since != self._reported_detachment:
            return Reason.DETACHED
        return None

    def reported(self, usage: Usage, *, policy: Policy, idle_deadline: float | None, live: bool) -> None:
        """The control plane took the report and answered with the session's policy and state."""
        self._reported = usage
        self.policy = policy
        self._idle_deadline = idle_deadline
        self.ended = not live
        if self._detached_past_grace(usage):
            self._reported_detachment = usage.detached_since
        self._retry_at = self._backoff = 0.0

    def failed(self, now: float) -> float:
        """The report did not get through: wait before the next attempt (never a busy retry loop);
        returns the wait."""
        longest = max(min(self.policy.report_seconds, BACKOFF_POLLS * self._poll), self._poll)
        self._backoff = min(max(2 * self._backoff, self._poll), longest)
        self._retry_at = now + self._backoff
        return self._backoff

    def _unreported_use(self, usage: Usage, last: Usage) -> bool:
        if _newer(usage.last_input_at, last.last_input_at):
            return True
        return self.policy.idle_policy is IdlePolicy.WORK and _newer(usage.last_work_at, last.last_work_at)

    def _detached_past_grace(self, usage: Usage) -> bool:
        if usage.clients or usage.detached_since is None:
            return False
        if usage.observed_at - usage.detached_since < self.policy.disconnect_grace_seconds:
            return False
        return self.policy.idle_policy is IdlePolicy.INPUT or not usage.working


def _newer(current: float | None, reported: float | None) -> bool:
    return current is not None and (reported is None or current > reported)
