"""A session's tier and image reach ECS: RunTask gets the tier's CPU and memory as task-level overrides
and the catalog image's own task definition."""

from __future__ import annotations

import json

import boto3
import pytest
from sessions.tiers import TIERS, Tier

from tests.api import gateway
from tests.api.conftest import API_FUNCTION, WORKFLOW_FUNCTION, Deployment, parse_api_response

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def start_and_provision(deployment: Deployment, images: dict[str, str], **body: str) -> str:
    environment = {"IMAGES": json.dumps(images), "ALLOWED_TIERS": ",".join(TIERS)}
    event = gateway.api_event("POST", "/sessions", body={"projectId": "p", **body})
    response = parse_api_response(deployment.invoke(API_FUNCTION, event, **environment))
    assert response.status == 202, response
    session_id = str(response.body["sessionId"])
    step = {"step": "provision", "sessionId": session_id, "token": f"provision-{session_id}"}
    deployment.invoke(WORKFLOW_FUNCTION, step, **environment)
    task_arn = deployment.store.require(session_id).task_arn
    assert task_arn
    return task_arn


@pytest.mark.parametrize("tier", TIERS.values(), ids=list(TIERS))
def test_each_tier_is_a_task_level_size_override(deployment: Deployment, tier: Tier) -> None:
    images = {"base": deployment.stack.refs["TerminalTaskDefinition"]}

    task_arn = start_and_provision(deployment, images, tier=tier.name)

    task = boto3.client("ecs").describe_tasks(cluster=deployment.cluster_arn, tasks=[task_arn])["tasks"][0]
    assert (task["overrides"]["cpu"], task["overrides"]["memory"]) == (str(tier.cpu), str(tier.memory))


def test_a_catalog_image_runs_its_own_task_definition(deployment: Deployment) -> None:
    python = boto3.client("ecs").register_task_definition(
        family="cloudide-dev-terminal-python",
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="256",
        memory="512",
        containerDefinitions=[{"name": "terminal", "image": "local/python:dev", "essential": True}],
    )["taskDefinition"]["taskDefinitionArn"]
    images = {"base": deployment.stack.refs["TerminalTaskDefinition"], "python": python}

    task_arn = start_and_provision(deployment, images, image="python")

    task = boto3.client("ecs").describe_tasks(cluster=deployment.cluster_arn, tasks=[task_arn])["tasks"][0]
    assert task["taskDefinitionArn"] == python
