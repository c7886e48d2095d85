"""A faster clock for the control plane offline, so hours of a session's life pass in seconds.

The handlers read wall-clock time through `sessions.clock.precise_now` (`clock.now` is it, to the
second); the workflow's timers are scaled by `moto_fixes.SETTINGS.wait_scale`. Patching the first with a
:class:`ScaledClock` running at the inverse of the second keeps both in step: a 30-minute idle timeout is
30 virtual minutes for the record's deadlines and for the state machine's heartbeat alike. A test can
also jump the clock ahead (`advance`) to let a grace period pass without sleeping through it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class ScaledClock:
    """Wall-clock time that runs `rate` times faster than real time from the last change of rate."""

    def __init__(self, rate: float = 1.0) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._rate = rate
        self._anchor_real, self._anchor_virtual = time.monotonic(), datetime.now(UTC)

    def set_rate(self, rate: float) -> None:
        """Change speed without a jump: virtual time continues from where it is."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._anchor_virtual, self._anchor_real, self._rate = self._virtual(), time.monotonic(), rate

    def _virtual(self) -> datetime:
        return self._anchor_virtual + timedelta(seconds=(time.monotonic() - self._anchor_real) * self._rate)

    def advance(self, seconds: float) -> None:
        """Jump ahead: a test lets a grace period pass at once instead of sleeping through it."""
        self._anchor_virtual += timedelta(seconds=seconds)

    def precise_now(self) -> datetime:
        """Signature and precision of `sessions.clock.precise_now`."""
        return self._virtual()

    def now(self) -> datetime:
        """Signature and precision of `sessions.clock.now`."""
        return self._virtual().replace(microsecond=0)
