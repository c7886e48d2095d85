"""Invoked by a terminal's sync agent (its task role may invoke nothing else): short-lived credentials
for its own workspace prefix, or a refusal saying which check failed (sessions/workspace_access.py)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sessions.observability import logger, metrics, tracer
from sessions.task_identity import AccessRefused
from sessions.wiring import task_calls


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    url = event.get("callerIdentityUrl") if isinstance(event, dict) else None
    if not isinstance(url, str) or not url:
        return {"error": "InvalidRequest", "message": "callerIdentityUrl (a presigned URL) is required"}
    try:
        vended = task_calls().workspace_access.vend(url)
    except AccessRefused as refusal:
        logger.warning("workspace credentials refused", extra={"reason": str(refusal)})
        metrics.add_metric(name="WorkspaceCredentialsRefused", unit=MetricUnit.Count, value=1)
        return {"error": "AccessRefused", "message": str(refusal)}
    logger.info("workspace credentials vended", extra={"prefix": vended.prefix})
    return {"credentials": vended.as_response()}
