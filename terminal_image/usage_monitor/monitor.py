"""The monitor's loop: sample every poll, report when the schedule says, until asked to stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from .config import MonitorConfig
from .control_plane import ControlPlane, ReportFailed
from .cpu import CpuLedger
from .schedule import ReportSchedule
from .tmux import Client, ProbeError, TmuxProbe
from .usage import Sample, UsageTracker


class Monitor:
    def __init__(
        self,
        config: MonitorConfig,
        *,
        probe: TmuxProbe,
        ledger: CpuLedger,
        control_plane: ControlPlane,
        logger: Logger,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._probe = probe
        self._ledger = ledger
        self._control_plane = control_plane
        self._logger = logger
        self._clock = clock
        self._tracker = UsageTracker(config.work_cpu_fraction)
        self.schedule = ReportSchedule(config.poll_seconds)
        self._sequence = 0
        # The user's tmux may print anything, every poll: each kind of oddity is logged once per run.
        self._logged: set[str] = set()

    def run(self, stop: threading.Event) -> None:
        """Sample and report until ``stop`` is set; once the session has ended, only wait for it."""
        while not self.schedule.ended:
            self.step()
            if stop.wait(self._config.poll_seconds):
                return
        self._logger.info("the session is no longer live; reporting stops")
        stop.wait()

    def step(self) -> None:
        """One sample, and the report it makes due, if any."""
        now = self._clock()
        sample = Sample(at=now, clients=self._clients(), cpu_seconds=self._ledger.consumed())
        usage = self._tracker.observe(sample)
        reason = self.schedule.due(usage)
        if reason is None:
            return
        self._sequence += 1
        try:
            answer = self._control_plane.report(usage, self._sequence)
        except (ReportFailed, ClientError, BotoCoreError) as error:
            wait = self.schedule.failed(now)
            self._logger.warning(
                "usage report failed; retrying later",
                extra={"reason": reason, "error": str(error), "retry_in_seconds": wait},
            )
            return
        self.schedule.reported(
            usage, policy=answer.policy, idle_deadline=answer.idle_deadline, live=answer.live
        )
        self._logger.info(
            "usage reported",
            extra={"reason": reason, "usage": usage.payload(self._sequence, rate=self._config.time_rate),
                   "status": answer.status,
                   "policy": answer.policy.idle_policy, "report_seconds": answer.policy.report_seconds},
        )  # fmt: skip

    def _clients(self) -> tuple[Client, ...] | None:
        try:
            clients = self._probe.clients()
        except ProbeError as error:
            self._once("tmux-failed", "tmux could not be asked; the client count is unknown", str(error))
            return None
        if self._probe.rejected:
            self._once(
                "tmux-output", "ignored lines tmux printed that are not clients", self._probe.rejected[:5]
            )
        return tuple(clients)

    def _once(self, kind: str, message: str, detail: object) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            self._logger.warning(message, extra={"detail": detail, "logged": "once per run"})
