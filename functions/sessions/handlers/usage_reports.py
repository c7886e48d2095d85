"""Invoked by a terminal's usage monitor (terminal_image/usage_monitor) with what it saw; authenticated
as the calling task (sessions/task_identity.py), applied by sessions/usage_reports.py.

The answer is the session's status, idle deadline and policy, or `{"error", "message"}` naming the
field or check at fault: the monitor logs it and reports again later, never crashes on it."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import ValidationError, parse
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from sessions.errors import MAX_MESSAGE_CHARS, excerpt
from sessions.observability import logger, metrics, tracer
from sessions.task_identity import AccessRefused
from sessions.usage import UsageReport
from sessions.wiring import task_calls


class UsageReportEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    caller_identity_url: str = Field(alias="callerIdentityUrl", min_length=1, max_length=4096)
    usage: UsageReport


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        request = parse(event=event, model=UsageReportEvent)
    except ValidationError as invalid:
        first = invalid.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        return {"error": "InvalidRequest", "message": excerpt(f"{field}: {first['msg']}", MAX_MESSAGE_CHARS)}
    try:
        answer = task_calls().usage_reports.accept(request.caller_identity_url, request.usage)
    except AccessRefused as refusal:
        logger.warning("usage report refused", extra={"reason": str(refusal)})
        metrics.add_metric(name="UsageReportsRefused", unit=MetricUnit.Count, value=1)
        return {"error": "AccessRefused", "message": str(refusal)}
    logger.info("usage reported", extra={"usage": request.usage.model_dump(by_alias=True), **answer})
    return answer
