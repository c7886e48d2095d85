"""ECS Task State Change events for this product's tasks: record them and settle the session.

Delivery is at least once and out of order; the store drops stale and duplicate versions, and settling
is idempotent, so a redelivered event is harmless.
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from sessions.ecs_tasks import TASK_GROUP
from sessions.observability import logger, metrics, tracer
from sessions.task_events import EcsTaskStateChange
from sessions.wiring import components


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=EcsTaskStateChange)
def handler(event: EcsTaskStateChange, context: LambdaContext) -> dict[str, str]:
    detail = event.detail
    if detail.group != TASK_GROUP or not detail.started_by:
        logger.info("ignoring a task this product did not start", extra={"task_arn": detail.task_arn})
        return {"result": "ignored"}
    logger.append_keys(session_id=detail.started_by, task_arn=detail.task_arn)
    c = components()
    session = c.lifecycle.on_task_facts(detail.started_by, event.facts(c.settings.container_name))
    if session is None:
        logger.warning("task event for an unknown session")
        return {"result": "unknown session"}
    if detail.last_status == "STOPPED":
        metrics.add_metric(name="TasksStopped", unit=MetricUnit.Count, value=1)
        if session.exit_code == 137:
            metrics.add_metric(name="TasksOutOfMemory", unit=MetricUnit.Count, value=1)
    logger.info("task event applied", extra={"last_status": detail.last_status, "status": session.status})
    return {"result": session.status.value}
