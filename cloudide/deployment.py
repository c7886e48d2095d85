"""Finding a deployment: the AWS account, Region and endpoint to talk to, and a stack's outputs.

The operator commands and `setup` take the same options: `--stack`, `--profile`, `--region`,
`--endpoint-url` (AWS_ENDPOINT_URL is honoured by boto3 itself) and `--local`, which reads what
`cloudide local` writes to .local-state/stack.json so the same commands work against the local stack.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

LOCAL_STATE = Path(".local-state") / "stack.json"
DEFAULT_STACK = "cloudide-terminals-dev"
_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=10, read_timeout=60)


class OperatorError(Exception):
    """A problem the operator can fix; the CLI prints the message alone (no traceback) and exits 2."""


def add_target_arguments(parser: argparse.ArgumentParser, *, local: bool = True) -> None:
    target = parser.add_argument_group("deployment")
    target.add_argument("--stack", default=None, help=f"stack name (default {DEFAULT_STACK})")
    target.add_argument("--profile", default=None, help="AWS named profile")
    target.add_argument("--region", default=None, help="AWS Region (default: the profile's)")
    target.add_argument(
        "--endpoint-url", default=None, help="AWS endpoint (a local stack); AWS_ENDPOINT_URL works too"
    )
    if local:
        target.add_argument(
            "--local", action="store_true", help=f"the stack `cloudide local` runs (reads {LOCAL_STATE})"
        )


@dataclass
class Target:
    """Where the commands point: a boto3 session, an optional endpoint, and a stack name."""

    session: boto3.Session
    stack_name: str
    endpoint_url: str | None = None
    _outputs: dict[str, str] | None = field(default=None, repr=False)

    @property
    def region(self) -> str:
        return str(self.session.region_name)

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint_url, config=_CLIENT_CONFIG)  # type: ignore[call-overload]

    def outputs(self) -> dict[str, str]:
        """The stack's outputs (cached): the physical names the operator commands work on."""
        if self._outputs is None:
            try:
                stacks = self.client("cloudformation").describe_stacks(StackName=self.stack_name)["Stacks"]
            except ClientError as error:
                raise OperatorError(
                    f"stack {self.stack_name!r} not found in {self.region}: {_message(error)} "
                    "(pass --stack, --region or --profile)"
                ) from error
            except BotoCoreError as error:
                raise OperatorError(f"could not reach AWS: {error}") from error
            self._outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
        return self._outputs

    def output(self, key: str) -> str:
        try:
            return self.outputs()[key]
        except KeyError:
            raise OperatorError(
                f"stack {self.stack_name!r} has no output {key!r}: deploy the current template.yaml"
            ) from None


def target_from(args: argparse.Namespace) -> Target:
    stack, endpoint, region = args.stack, args.endpoint_url, args.region
    access_key = secret_key = None
    if getattr(args, "local", False):
        try:
            local = json.loads(LOCAL_STATE.read_text())
        except (OSError, ValueError) as error:
            raise OperatorError(
                f"no local stack found ({LOCAL_STATE}): start one with `cloudide local`"
            ) from error
        stack, endpoint = stack or local["stackName"], endpoint or local["endpointUrl"]
        region = region or local.get("region")
        # The local AWS accepts any key; the operator's own (if any) must never be sent anywhere by --local.
        access_key = secret_key = "local"
    try:
        session = boto3.Session(
            profile_name=args.profile,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
        )
    except BotoCoreError as error:  # ProfileNotFound and friends
        raise OperatorError(str(error)) from error
    if not session.region_name:
        raise OperatorError("no AWS Region: pass --region or set AWS_REGION (or a region in the profile)")
    return Target(session=session, stack_name=stack or DEFAULT_STACK, endpoint_url=endpoint)


def _message(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Message", error))
