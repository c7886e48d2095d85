"""Deploy a SAM template into moto and hand out the handles tests and the local stack need.

Two ways to host moto, same corrections and same deploy:
- in-process `mock_aws` (the workflow tests): boto3 calls in this process are intercepted;
- a `ThreadedMotoServer` in this process (the local stack): other processes reach it over HTTP.
  `MOTO_PORT` is set first so the Step Functions interpreter's own clients reach it, and
  `AWS_ENDPOINT_URL` so the in-process Lambda handlers' clients do too.
"""

from __future__ import annotations

import io
import json
import os
import socket
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config

from cloudide.offline import ecs, moto_fixes, preflight, s3_multipart, sam
from cloudide.offline.ecs import EcsDriver
from cloudide.offline.moto_fixes import ExecSessionFactory

DEFAULT_REGION = "us-east-1"
SFN_CONFIG = {"stepfunctions": {"execute_state_machine": True}}
_FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


class DeployError(RuntimeError):
    """The stack did not reach CREATE_COMPLETE; the message lists the failed resources."""


@dataclass(frozen=True)
class DeployedStack:
    """A stack created in moto: its outputs and the physical id of every resource."""

    name: str
    stack_id: str
    outputs: dict[str, str]
    resources: dict[str, dict[str, str]] = field(default_factory=dict)  # logical id -> {type, physical_id}
    template: dict[str, Any] = field(default_factory=dict)  # the translated template that was deployed
    parameters: dict[str, str] = field(default_factory=dict)  # every parameter's value, defaults included

    def physical_id(self, logical_id: str) -> str:
        try:
            return self.resources[logical_id]["physical_id"]
        except KeyError:
            raise KeyError(f"stack {self.name} has no resource {logical_id!r}") from None


def _empty_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("PLACEHOLDER", "code runs in-process from the CodeUri folder")
    return buffer.getvalue()


def deploy(
    template_path: str | Path,
    *,
    parameters: dict[str, Any] | None = None,
    stack_name: str,
    session: boto3.Session | None = None,
    endpoint_url: str | None = None,
    timeout: float = 60.0,
    lambda_concurrency_quota: int = preflight.NEW_ACCOUNT_CONCURRENCY_QUOTA,
) -> DeployedStack:
    """Translate the SAM template, refuse what AWS would refuse (`preflight`), register its code folders,
    create the stack and wait for it. The offline account is a new one: no API Gateway CloudWatch
    role until a stack sets it, and `lambda_concurrency_quota` concurrent executions."""
    session = session or boto3.Session(region_name=DEFAULT_REGION)
    region = session.region_name or DEFAULT_REGION
    parameters = {k: str(v) for k, v in (parameters or {}).items()}
    translation = sam.translate(Path(template_path), parameters=parameters, region=region)
    apigateway = session.client("apigateway", endpoint_url=endpoint_url)
    account = preflight.Account(
        apigateway_cloudwatch_role_arn=apigateway.get_account().get("cloudwatchRoleArn"),
        lambda_concurrency_quota=lambda_concurrency_quota,
    )
    preflight.check(
        translation.template, sam.parameter_values(translation.template, parameters, region), account
    )
    moto_fixes.SETTINGS.code_folders.update(translation.code_folders)

    s3 = session.client("s3", endpoint_url=endpoint_url)
    if translation.code_folders:
        s3.create_bucket(Bucket=moto_fixes.CODE_BUCKET)
        for key in translation.code_folders:
            s3.put_object(Bucket=moto_fixes.CODE_BUCKET, Key=key, Body=_empty_zip())

    cfn = session.client("cloudformation", endpoint_url=endpoint_url)
    stack_id = cfn.create_stack(
        StackName=stack_name,
        TemplateBody=json.dumps(translation.template),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
    )["StackId"]
    deadline = time.monotonic() + timeout
    while (stack := cfn.describe_stacks(StackName=stack_id)["Stacks"][0])["StackStatus"].endswith(
        "IN_PROGRESS"
    ):
        if time.monotonic() > deadline:
            raise DeployError(f"stack {stack_name} still {stack['StackStatus']} after {timeout} s")
        time.sleep(0.05)
    if stack["StackStatus"] != "CREATE_COMPLETE":
        failures = [
            f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason')}"
            for e in cfn.describe_stack_events(StackName=stack_id)["StackEvents"]
            if e["ResourceStatus"].endswith("FAILED")
        ]
        raise DeployError(f"stack {stack_name} is {stack['StackStatus']}: {failures}")
    resources = {
        r["LogicalResourceId"]: {"type": r["ResourceType"], "physical_id": r.get("PhysicalResourceId", "")}
        for r in cfn.describe_stack_resources(StackName=stack_id)["StackResources"]
        if "LogicalResourceId" in r  # moto lists resources whose Condition is false without one
    }
    _apply_account_settings(translation.template, resources, session, endpoint_url)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    return DeployedStack(
        name=stack_name,
        stack_id=stack_id,
        outputs=outputs,
        resources=resources,
        template=translation.template,
        parameters={
            name: str(spec.get("Default", ""))
            for name, spec in translation.template.get("Parameters", {}).items()
        }
        | parameters,
    )


def _apply_account_settings(
    template: dict[str, Any],
    resources: dict[str, dict[str, str]],
    session: boto3.Session,
    endpoint_url: str | None,
) -> None:
    """`AWS::ApiGateway::Account` sets the Region's API Gateway CloudWatch role for every API in the
    account (moto's CloudFormation does not model it): set it, so the next deploy sees it as AWS would."""
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::ApiGateway::Account" or logical_id not in resources:
            continue
        role = resource["Properties"]["CloudWatchRoleArn"]
        if isinstance(role, dict):  # {"Fn::GetAtt": [role, "Arn"]}: the role this stack created
            role_name = resources[role["Fn::GetAtt"][0]]["physical_id"]
            role = session.client("iam", endpoint_url=endpoint_url).get_role(RoleName=role_name)["Role"][
                "Arn"
            ]
        session.client("apigateway", endpoint_url=endpoint_url).update_account(
            patchOperations=[{"op": "replace", "path": "/cloudwatchRoleArn", "value": role}]
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OfflineAws:
    """Start moto (in-process or as a local server), install the corrections, optionally deploy a
    template; a context manager, so a pytest fixture is `with OfflineAws(...) as aws: yield aws`.

    Environment variables it sets (fake credentials, region, and in server mode MOTO_PORT and
    AWS_ENDPOINT_URL) are process-wide and restored on exit: use one at a time per process.
    """

    def __init__(
        self,
        template_path: str | Path | None = None,
        *,
        parameters: dict[str, Any] | None = None,
        stack_name: str = "cloudide",
        server: bool = False,
        port: int | None = None,
        region: str = DEFAULT_REGION,
        wait_scale: float | None = None,
        scale_timestamp_waits: bool | None = None,
        exec_session_factory: ExecSessionFactory | None = None,
    ) -> None:
        self.template_path = Path(template_path) if template_path else None
        self.parameters = parameters or {}
        self.stack_name = stack_name
        self.server = server
        self.port = port
        self.region = region
        self._knobs = {
            "wait_scale": wait_scale,
            "scale_timestamp_waits": scale_timestamp_waits,
            "exec_session_factory": exec_session_factory,
        }
        self.endpoint_url: str | None = None
        self.stack: DeployedStack | None = None
        self.ecs = EcsDriver(sam.ACCOUNT_ID, region)
        self._saved_env: dict[str, str | None] = {}
        self._mock: Any = None
        self._server: Any = None

    def _set_env(self, **values: str) -> None:
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def start(self) -> OfflineAws:
        self._set_env(**_FAKE_CREDENTIALS, AWS_DEFAULT_REGION=self.region, AWS_REGION=self.region)
        if self.server:
            from moto.server import ThreadedMotoServer

            self.port = self.port or _free_port()
            self.endpoint_url = f"http://127.0.0.1:{self.port}"
            self._set_env(MOTO_PORT=str(self.port), AWS_ENDPOINT_URL=self.endpoint_url)
            self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
            self._server.start()
            import requests

            requests.post(
                f"{self.endpoint_url}/moto-api/config", json=SFN_CONFIG, timeout=10
            ).raise_for_status()
        else:
            from moto import mock_aws

            self._mock = mock_aws(config=SFN_CONFIG)  # type: ignore[call-overload]
            self._mock.start()
        moto_fixes.install(**self._knobs)  # type: ignore[arg-type]
        s3_multipart.install()
        ecs.refuse_unsupported_capacity()
        if self.template_path:
            self.stack = deploy(
                self.template_path,
                parameters=self.parameters,
                stack_name=self.stack_name,
                session=self.session(),
                endpoint_url=self.endpoint_url,
            )
        return self

    def stop(self) -> None:
        try:
            if self._mock is not None:
                self._mock.stop()
            if self._server is not None:
                self._server.stop()
        finally:
            self._mock = self._server = None
            moto_fixes.SETTINGS.run_task_faults.clear()
            moto_fixes.SETTINGS.stop_task_listeners.clear()
            moto_fixes.SETTINGS.exec_session_factory = moto_fixes.unreachable_exec_session
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self._saved_env.clear()

    def __enter__(self) -> OfflineAws:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def session(self) -> boto3.Session:
        return boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=self.region
        )

    def client(self, service: str) -> BaseClient:
        """A boto3 client for `service` that reaches this moto (with a bounded retry budget)."""
        return self.session().client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.endpoint_url,
            config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30),
        )
