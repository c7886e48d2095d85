# mypy: disable-error-code="method-assign,attr-defined,assignment,union-attr"
# mypy: disable-error-code="typeddict-item,arg-type,var-annotated,unused-ignore"
# (this module patches moto classes in place; moto's own annotations cannot describe that)
"""Correction of moto's Lambda invoke: run harness functions with the in-process runtime."""

from __future__ import annotations

import json
import threading
from typing import Any

from cloudide.offline.moto_fixes import runtime
from cloudide.offline.moto_fixes.settings import SETTINGS


def fix_lambda_invoke() -> None:
    """Without Docker, moto's Lambda invoke never runs the handler. This runs functions whose code is a
    harness placeholder (`SETTINGS.code_folders`, filled by `cloudide.offline.sam`) in this process; a
    raised exception becomes an `Unhandled` function error with `{errorType, errorMessage}`, so Step
    Functions sees `errorType` as the error name, as on AWS. An asynchronous (`Event`) invocation
    returns at once and runs on its own thread with Lambda's two retries (`runtime.ASYNC_RETRY_DELAYS`); moto
    would run it once, inline. Other functions keep moto's behaviour.
    Not a moto bug (moto would need Docker): permanent for Docker-less machines."""
    from moto.awslambda.models import LambdaFunction

    original = LambdaFunction.__dict__.get("_cloudide_original_invoke", LambdaFunction.invoke)
    LambdaFunction._cloudide_original_invoke = original

    def invoke(self: Any, body: str, request_headers: Any, response_headers: Any) -> str | bytes:
        if (self.code or {}).get("S3Key") not in SETTINGS.code_folders:
            return original(self, body, request_headers, response_headers)  # type: ignore[no-any-return]
        event = json.loads(body) if body else {}
        if request_headers.get("x-amz-invocation-type") == "Event":
            threading.Thread(target=runtime.invoke_async, args=(self, event), daemon=True).start()
            return b""
        payload, errored = runtime.invoke_in_process(self, event)
        if errored:
            response_headers["x-amz-function-error"] = "Unhandled"
        return json.dumps(payload, default=str).encode()

    LambdaFunction.invoke = invoke
