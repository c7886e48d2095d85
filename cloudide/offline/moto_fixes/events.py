# mypy: disable-error-code="method-assign,attr-defined,assignment,union-attr"
# mypy: disable-error-code="typeddict-item,arg-type,var-annotated,unused-ignore"
# (this module patches moto classes in place; moto's own annotations cannot describe that)
"""Correction of moto's EventBridge: rules deliver to Lambda and Step Functions targets."""

from __future__ import annotations

import copy
import json
import logging
import threading
from typing import Any

LOG = logging.getLogger(__name__)


def _target_input(target: dict[str, Any], event: dict[str, Any]) -> Any:
    from moto.events.models import EventTemplateParser
    from moto.stepfunctions.parser.asl.utils.json_path import extract_json

    if "Input" in target:
        return json.loads(target["Input"])
    if "InputPath" in target:
        return extract_json(target["InputPath"], event)
    if "InputTransformer" in target:
        transformer = target["InputTransformer"]
        return EventTemplateParser.parse(
            input_template=transformer.get("InputTemplate"),
            input_paths_map=transformer.get("InputPathsMap", {}),
            event=event,
        )
    return event


def _deliver(target: dict[str, Any], event: dict[str, Any]) -> None:
    from moto.awslambda.models import lambda_backends
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends
    from moto.utilities.arns import parse_arn

    arn = parse_arn(target["Arn"])
    payload = _target_input(target, event)
    try:
        if arn.service == "lambda":
            function = lambda_backends[arn.account][arn.region].get_function(target["Arn"])
            function.invoke(json.dumps(payload), {"x-amz-invocation-type": "Event"}, {})
        else:
            backend = stepfunctions_parser_backends[arn.account][arn.region]
            backend.start_execution(target["Arn"], None, json.dumps(payload))
    except Exception:
        LOG.exception("EventBridge delivery to %s failed", target["Arn"])


def fix_eventbridge_targets() -> None:
    """moto's rules raise NotImplementedError for Lambda and Step Functions targets. This delivers to
    them asynchronously (a thread per delivery, as EventBridge invokes asynchronously), honouring
    Input, InputPath and InputTransformer; other targets keep moto's delivery. Delete when moto
    delivers to both."""
    from moto.events.models import Rule

    original = Rule.__dict__.get("_cloudide_original_send", Rule.send_to_targets)
    Rule._cloudide_original_send = original

    def send_to_targets(self: Any, original_event: Any, transform_input: bool = True) -> None:
        # A schedule-only rule has no pattern, and moto's empty pattern matches every event.
        if not self.event_pattern.get_pattern() or not self.event_pattern.matches_event(original_event):
            return
        ours = [t for t in self.targets if t["Arn"].split(":")[2] in ("lambda", "states")]
        others = [t for t in self.targets if t not in ours]
        for target in ours:
            threading.Thread(target=_deliver, args=(target, original_event), daemon=True).start()
        if others:
            rest = copy.copy(self)
            rest.targets = others
            original(rest, original_event, transform_input)

    Rule.send_to_targets = send_to_targets
