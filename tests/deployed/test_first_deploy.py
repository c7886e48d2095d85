"""The first-deploy acceptance check: the end-to-end scenario against a real deployment.

`make test-deployed STACK=<stack name>` runs it (as the SAM quick start's integration tests do with
`AWS_SAM_STACK_NAME`), with the operator's AWS credentials and a user's Cognito ID token in
`CLOUDIDE_TOKEN`. CI never runs it: the `deployed` marker is deselected by default (pyproject.toml).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from tests.e2e.local_stack import Deployment
from tests.e2e.scenarios import first_terminal

pytestmark = pytest.mark.deployed


@dataclass
class RealDeployment(Deployment):
    stack_name: str
    api: str
    id_token: str

    def token(self, user: str) -> str:
        return self.id_token  # one real user: whoever the token belongs to

    def client(self, service: str) -> Any:
        return boto3.client(service)


@pytest.fixture(scope="module")
def deployment() -> RealDeployment:
    stack_name, token = os.environ.get("AWS_SAM_STACK_NAME"), os.environ.get("CLOUDIDE_TOKEN")
    if not stack_name or not token:
        pytest.fail(
            "set AWS_SAM_STACK_NAME (make test-deployed STACK=<name>) and CLOUDIDE_TOKEN (an ID token)"
        )
    outputs = boto3.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"][0]["Outputs"]
    api = next(o["OutputValue"] for o in outputs if o["OutputKey"] == "ApiUrl").rstrip("/")
    return RealDeployment(stack_name=stack_name, api=api, id_token=token)


def test_first_terminal_on_the_deployment(deployment: RealDeployment) -> None:
    ended = first_terminal(deployment, project="first-deploy-check")

    assert ended["taskArn"] not in deployment.running_tasks()
