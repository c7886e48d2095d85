# mypy: disable-error-code="method-assign,attr-defined,assignment,union-attr"
# mypy: disable-error-code="typeddict-item,arg-type,var-annotated,unused-ignore"
# (this module patches moto classes in place; moto's own annotations cannot describe that)
"""Correction of moto's Lambda invoke: run harness functions with the in-process runtime."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from cloudide.offline.moto_fixes import probing, runtime
from cloudide.offline.moto_fixes.correction import Correction
from cloudide.offline.moto_fixes.settings import CODE_BUCKET, SETTINGS


def fix_lambda_invoke() -> None:
    """Runs functions whose code is a harness placeholder (`SETTINGS.code_folders`, filled by
    `cloudide.offline.sam`) in this process with `runtime`; other functions keep moto's behaviour.
    Not a moto bug (moto would need Docker): permanent for Docker-less machines."""
    from moto.awslambda.models import LambdaFunction

    original = LambdaFunction.__dict__.get("_cloudide_original_invoke", LambdaFunction.invoke)
    LambdaFunction._cloudide_original_invoke = original

    def invoke(self: Any, body: str, request_headers: Any, response_headers: Any) -> str | bytes:
        if (self.code or {}).get("S3Key") not in SETTINGS.code_folders:
            return original(self, body, request_headers, response_headers)  # type: ignore[no-any-return]
        event = json.loads(body) if body else {}
        if request_headers.get("x-amz-invocation-type") == "Event":
            runtime.start_async(self, event)
            return b""
        payload, errored = runtime.invoke_in_process(self, event)
        if errored:
            response_headers["x-amz-function-error"] = "Unhandled"
        return json.dumps(payload, default=str).encode()

    LambdaFunction.invoke = invoke


_PROBE_HANDLER = """
def handler(event, context):
    return {"echo": event, "function": context.function_name}
"""


def _probe_lambda_invoke() -> None:
    placeholder = io.BytesIO()
    with zipfile.ZipFile(placeholder, "w") as archive:
        archive.writestr("placeholder", "")
    probing.client("s3").create_bucket(Bucket=CODE_BUCKET)
    probing.client("s3").put_object(Bucket=CODE_BUCKET, Key="probe", Body=placeholder.getvalue())
    role = probing.client("iam").create_role(RoleName="probe-function", AssumeRolePolicyDocument="{}")
    lambdas = probing.client("lambda")
    with tempfile.TemporaryDirectory() as folder, SETTINGS.scoped(code_folders={"probe": Path(folder)}):
        Path(folder, "probe_handler.py").write_text(_PROBE_HANDLER)
        lambdas.create_function(
            FunctionName="probe",
            Runtime="python3.12",
            Role=role["Role"]["Arn"],
            Handler="probe_handler.handler",
            Code={"S3Bucket": CODE_BUCKET, "S3Key": "probe"},
        )
        reply = lambdas.invoke(FunctionName="probe", Payload=b'{"n": 1}')
        payload = json.loads(reply["Payload"].read())
    assert "FunctionError" not in reply, payload
    assert payload == {"echo": {"n": 1}, "function": "probe"}, payload


LAMBDA_INVOKE = Correction(
    name="lambda-invoke-in-process",
    moto="runs a function's handler only in Docker; without it, invoke answers `error running docker`",
    aws="runs the handler; a raised exception is an `Unhandled` function error with"
    " `{errorType, errorMessage}`; an `Event` invocation returns at once and is retried twice on failure",
    install=fix_lambda_invoke,
    probe=_probe_lambda_invoke,
)
