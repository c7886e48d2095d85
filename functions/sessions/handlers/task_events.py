"""ECS Task State Change events for this product's tasks: record them and settle the session.

Delivery is at least once and out of order: only the events of the task the record names apply (any
other task carrying the session's id is stopped), stale and duplicate versions of it are dropped and
settling is idempotent, so a redelivered event is harmless and publishes no metric twice.
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from sessions.ecs_tasks import TASK_GROUP
from sessions.lifecycle import OOM_EXIT_CODE, Verdict
from sessions.observability import logger, metrics, tracer
from sessions.record import TaskStatus
from sessions.task_events import EcsTaskStateChange
from sessions.wiring import components


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=EcsTaskStateChange)
def handler(event: EcsTaskStateChange, context: LambdaContext) -> dict[str, str | None]:
    detail = event.detail
    if detail.group != TASK_GROUP or not detail.started_by:
        logger.info("ignoring a task this product did not start", extra={"task_arn": detail.task_arn})
        return {"result": "ignored"}
    logger.append_keys(session_id=detail.started_by, task_arn=detail.task_arn, version=detail.version)
    c = components()
    outcome = c.lifecycle.on_task_facts(detail.started_by, event.facts(c.settings.container_name))
    session = outcome.session
    status = session.status.value if session else None
    match outcome.verdict:
        case Verdict.APPLIED:
            logger.info("task event applied", extra={"last_status": detail.last_status, "status": status})
            if detail.last_status is TaskStatus.STOPPED:
                metrics.add_metric(name="TasksStopped", unit=MetricUnit.Count, value=1)
                if session and session.exit_code == OOM_EXIT_CODE:
                    metrics.add_metric(name="TasksOutOfMemory", unit=MetricUnit.Count, value=1)
        case Verdict.STRAY_STOPPED:
            logger.warning(
                "stopped a stray task: it carries the session's id but is not its task",
                extra={"session_task_arn": session and session.task_arn, "status": status},
            )
            metrics.add_metric(name="StrayTasksStopped", unit=MetricUnit.Count, value=1)
        case Verdict.UNKNOWN_SESSION:
            logger.warning("task event for an unknown session")
        case Verdict.STALE:
            logger.info(
                "stale task event ignored: a newer version of the task was applied",
                extra={"applied_version": session and session.last_event_version},
            )
        case _:
            logger.info(f"task event not applied: {outcome.verdict}", extra={"status": status})
    return {"result": outcome.verdict.value, "status": status}
