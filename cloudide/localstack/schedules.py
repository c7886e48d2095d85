"""EventBridge schedules for the local stack: moto stores `rate(...)` rules but never fires them.

Every rule deployed with a rate expression is run here at its period (times the stack's time scale),
delivering the scheduled event to its Lambda targets as EventBridge would, asynchronously. So the
reconciler repairs the local stack exactly as it repairs a deployment.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cloudide.offline.stack import OfflineAws

logger = logging.getLogger(__name__)

_RATE = re.compile(r"rate\((?P<value>\d+) (?P<unit>minutes?|hours?|days?)\)")
_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> float | None:
    """`rate(5 minutes)` -> 300; None for cron expressions (not run locally) and anything else."""
    match = _RATE.fullmatch(expression.strip())
    if not match:
        return None
    return int(match["value"]) * _SECONDS[match["unit"].rstrip("s")]


@dataclass(frozen=True)
class Schedule:
    rule: str
    period_s: float
    targets: tuple[dict[str, Any], ...]


class Schedules:
    """Fires the deployed rate rules on a thread until `close()`."""

    def __init__(self, aws: OfflineAws, *, time_scale: float = 1.0) -> None:
        self._aws = aws
        self._time_scale = time_scale
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.schedules: list[Schedule] = []

    def start(self) -> Schedules:
        events: Any = self._aws.client("events")
        for rule in events.list_rules().get("Rules", []):
            period = rate_seconds(rule.get("ScheduleExpression") or "")
            if period is None or rule.get("State") == "DISABLED":
                continue
            targets = tuple(events.list_targets_by_rule(Rule=rule["Name"]).get("Targets", []))
            schedule = Schedule(rule["Name"], period * self._time_scale, targets)
            self.schedules.append(schedule)
            thread = threading.Thread(target=self._run, args=(schedule,), name=f"schedule-{rule['Name']}")
            thread.daemon = True
            thread.start()
            self._threads.append(thread)
        return self

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self, schedule: Schedule) -> None:
        lambda_client: Any = self._aws.client("lambda")
        while not self._stop.wait(schedule.period_s):
            event = _scheduled_event(schedule.rule, self._aws.region)
            for target in schedule.targets:
                if ":lambda:" not in target["Arn"]:
                    continue
                payload = target.get("Input") or json.dumps(event)
                try:
                    lambda_client.invoke(FunctionName=target["Arn"], InvocationType="Event", Payload=payload)
                except Exception:  # the next period tries again, as EventBridge's retries would
                    logger.exception("scheduled delivery failed", extra={"rule": schedule.rule})


def _scheduled_event(rule: str, region: str) -> dict[str, Any]:
    """The event EventBridge sends a schedule's targets."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:123456789012:rule/{rule}"],
        "detail": {},
    }
