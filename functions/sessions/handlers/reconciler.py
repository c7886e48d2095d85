"""The scheduled reconciler (EventBridge schedule): one run of sessions/reconciler.py, counted in metrics.

Every repair kind is published on every run, zeros included, so alarms and the dashboard see a
continuous series; so are the live sessions and running tasks the run saw (the "running sessions" gauge).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sessions.observability import logger, metrics, tracer
from sessions.reconciler import Repair
from sessions.wiring import components


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = components().reconciler.run()
    for kind in Repair:
        metrics.add_metric(name=kind.value, unit=MetricUnit.Count, value=report.count(kind))
    metrics.add_metric(name="LiveSessions", unit=MetricUnit.Count, value=report.live_sessions)
    metrics.add_metric(name="RunningTasks", unit=MetricUnit.Count, value=report.running_tasks)
    for kind, subject in report.repairs:
        logger.warning("repaired", extra={"repair": kind.value, "subject": subject})
    metrics.add_metric(name="ReconcilerCheckFailures", unit=MetricUnit.Count, value=report.failures)
    logger.info("reconciled", extra={"repairs": len(report.repairs), "truncated": report.truncated})
    return {
        "repairs": [{"kind": kind.value, "subject": subject} for kind, subject in report.repairs],
        "liveSessions": report.live_sessions,
        "runningTasks": report.running_tasks,
        "failures": report.failures,
        "truncated": report.truncated,
    }
