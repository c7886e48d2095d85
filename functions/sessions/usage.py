"""What a terminal's use is, as its own task reports it, and what the control plane makes of a report.

The task is the source of truth for use: a usage monitor inside it (terminal_image/usage_monitor, its
own uid, so the user's shell cannot read or forge its credentials) watches the user's tmux clients, the
last keystroke from any of them and the CPU the user's processes burn, and reports when that state
changes, and while in use at most once per `UsageReportMinutes` (docs/usage-monitor.md). Only these
reports (and the REST `/activity` route, for IDEs that edit files without a terminal) move the idle
deadline and heartbeat the workflow: connecting, re-attaching after ECS Exec's 20-minute idle cut and
tmux's redraw are not use, so an open but untouched terminal idles out.

Two policies, per group in the access policy (sessions/policy.py) with a template default:
- `idlePolicy`: `input` (only keystrokes are use) or `work` (keystrokes, and the user's processes using
  CPU: a build left running keeps its terminal, a silent test run is not stopped under its user);
- `disconnectGraceMinutes`: once no client has been attached for that long (and, under `work`, nothing
  runs) the session stops, because nobody can be using a terminal nobody has open.

Precision without polling: a report heartbeats the watch step (resetting its idle timer to a full idle
timeout) only when the use it reports is recent, so the timer never fires more than
:data:`HEARTBEAT_LAG_SECONDS` after the deadline. A report of older use moves the record's deadline
without a heartbeat; the timer then fires early, and the evaluate step watches again for exactly the
time left (sessions/lifecycle.py `watch_limits`). A heartbeat is an API call, a re-watch three billed
state transitions, so this costs almost nothing while a terminal is in steady use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

# A heartbeat resets the watch step's timer to a full idle timeout from now, so it is sent only for use
# at most this old: the session then stops no later than this past its idle deadline.
HEARTBEAT_LAG_SECONDS = 45
# One task runs one tmux server; more clients than this is not a terminal in use but a broken report.
MAX_CLIENTS = 256
# Ages beyond the longest lifetime a policy allows (sessions/policy.py) are not a terminal's.
MAX_AGE_SECONDS = 8760 * 3600


class IdlePolicy(StrEnum):
    INPUT = "input"  # only keystrokes are use
    WORK = "work"  # keystrokes, and the user's processes using CPU

    @property
    def generosity(self) -> int:
        """Groups grant, never take away: `work` keeps a terminal in more cases than `input`."""
        return 1 if self is IdlePolicy.WORK else 0


Age = Annotated[float, Field(ge=0, le=MAX_AGE_SECONDS, allow_inf_nan=False)]


class UsageReport(BaseModel):
    """What the usage monitor saw, bounded; anything else is refused with the field named.

    Times are ages (seconds before the report), not timestamps: the task's clock and Lambda's need not
    agree, and the local stack's compressed clock is not the task's."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    clients: int = Field(ge=0, le=MAX_CLIENTS, description="tmux clients attached now")
    input_age_seconds: Age | None = Field(None, alias="inputAgeSeconds", description="last keystroke")
    work_age_seconds: Age | None = Field(
        None, alias="workAgeSeconds", description="last time the user's processes used CPU"
    )
    working: bool = Field(description="the user's processes used CPU in the last sample")
    detached_seconds: Age | None = Field(
        None, alias="detachedSeconds", description="how long no client has been attached (clients is 0)"
    )
    sequence: int = Field(ge=0, le=2**53, description="increasing per monitor run")

    @model_validator(mode="after")
    def _consistent(self) -> UsageReport:
        if self.clients and self.detached_seconds is not None:
            raise ValueError("detachedSeconds must be null while clients are attached")
        return self


@dataclass(frozen=True)
class UsageVerdict:
    """What a report changes: the new last use (None: no newer use), whether to heartbeat the watch
    step, and why the session should stop now (None: it should not)."""

    used_at: datetime | None
    heartbeat: bool
    stop_reason: str | None


def judge(
    report: UsageReport,
    *,
    policy: IdlePolicy,
    grace_seconds: int,
    last_use: datetime,
    now: datetime,
) -> UsageVerdict:
    """The verdict on one report, given the session's policy and the last use the record holds."""
    working = policy is IdlePolicy.WORK and report.working
    ages = [report.input_age_seconds]
    if policy is IdlePolicy.WORK:
        ages += [report.work_age_seconds, 0.0 if working else None]
    youngest = min((age for age in ages if age is not None), default=None)
    used = None if youngest is None else (now - timedelta(seconds=youngest)).replace(microsecond=0)
    # Ages are floats and the clock has whole seconds: the same keystroke reported twice may differ by one.
    newer = used is not None and used > last_use + timedelta(seconds=1)
    return UsageVerdict(
        used_at=used if newer else None,
        heartbeat=newer and youngest is not None and youngest <= HEARTBEAT_LAG_SECONDS,
        stop_reason=None if working else _unattended_reason(report, grace_seconds),
    )


def _unattended_reason(report: UsageReport, grace_seconds: int) -> str | None:
    if report.clients or report.detached_seconds is None or report.detached_seconds < grace_seconds:
        return None
    return f"no client attached for {_minutes(grace_seconds)}"


def _minutes(seconds: int) -> str:
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"
