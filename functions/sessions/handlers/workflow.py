"""The session workflow's code steps (statemachines/session_lifecycle.asl.json names them by `step`).

Exceptions are part of the contract: their class names are the error names the workflow's Retry and
Catch rules match (CapacityUnavailable, AgentNotReady, StopRequested, TaskStopped, ...).
"""

from __future__ import annotations

from typing import Any, Literal

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from sessions.observability import logger, metrics, tracer
from sessions.throttling import throttling_is_retryable
from sessions.wiring import components


class StepRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    step: Literal["provision", "watch", "evaluate", "stop"]
    sessionId: str
    token: str | None = None
    error: dict[str, Any] | None = None


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=StepRequest)
def handler(event: StepRequest, context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(session_id=event.sessionId, step=event.step)
    with throttling_is_retryable():
        return _run_step(event)


def _run_step(event: StepRequest) -> dict[str, Any]:
    lifecycle = components().lifecycle
    if event.step == "evaluate":
        return lifecycle.evaluate(event.sessionId)
    if event.token is None:
        raise ValueError(f"step {event.step} needs the workflow's task token")
    if event.step == "provision":
        lifecycle.provision(event.sessionId, event.token)
    elif event.step == "watch":
        lifecycle.watch(event.sessionId, event.token)
    else:
        lifecycle.stop(event.sessionId, event.token, event.error)
    return {}
