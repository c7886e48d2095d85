"""The image catalog, the Dockerfile and the template stay one thing: every catalog image has a build
stage, a task definition, an image parameter and an entry in the API's allow-list, and nothing else does."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid

import pytest
from sessions.tiers import TIERS

from cloudide.catalog import IMAGE_DIR, load_catalog
from tests.api import cfn

CATALOG = load_catalog()
DOCKERFILE = (IMAGE_DIR / "Dockerfile").read_text()


def task_definitions() -> dict[str, dict[str, object]]:
    return {
        name: resource
        for name, resource in cfn.template()["Resources"].items()
        if resource["Type"] == "AWS::ECS::TaskDefinition"
    }


def test_every_catalog_image_is_a_dockerfile_stage() -> None:
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\w+)\s*$", DOCKERFILE, re.MULTILINE))
    assert {image.target for image in CATALOG.images} <= stages


def test_catalog_images_and_task_definitions_match_one_to_one() -> None:
    definitions = task_definitions()

    assert sorted(image.task_definition for image in CATALOG.images) == sorted(definitions)
    for image in CATALOG.images:
        (container,) = definitions[image.task_definition]["Properties"]["ContainerDefinitions"]  # type: ignore[index]
        assert container["Image"] == {"Ref": image.image_parameter}, image.name
        assert image.image_parameter in cfn.template()["Parameters"], image.name


def test_the_allow_list_the_api_reads_is_the_catalog() -> None:
    # Every image given: the deployed IMAGES map names each catalog image with its own task definition.
    stack = cfn.Stack(
        name="cloudide",
        region="us-east-1",
        parameters={i.image_parameter: f"repo/{i.name}" for i in CATALOG.images},
    )
    stack.refs |= {i.task_definition: f"arn:task-definition/{i.task_definition}:1" for i in CATALOG.images}
    for function in ("ApiFunction", "WorkflowFunction"):  # the allow-list, and what RunTask runs
        variables = cfn.resource(function)["Properties"]["Environment"]["Variables"]
        images = json.loads(stack.resolve(variables["IMAGES"]))
        assert images == {i.name: f"arn:task-definition/{i.task_definition}:1" for i in CATALOG.images}

    assert (
        cfn.resource("ApiFunction")["Properties"]["Environment"]["Variables"]["DEFAULT_IMAGE"]
        == CATALOG.default
    )


def test_only_the_base_image_is_required() -> None:
    parameters = cfn.template()["Parameters"]
    required = [i.name for i in CATALOG.images if "Default" not in parameters[i.image_parameter]]
    assert required == [CATALOG.default]


def test_the_workflow_may_run_every_catalog_task_definition() -> None:
    statements = [
        statement
        for policy in cfn.resource("WorkflowFunction")["Properties"]["Policies"]
        if isinstance(policy, dict)
        for statement in policy.get("Statement", [])
    ]
    (run_task,) = [s for s in statements if s["Action"] == "ecs:RunTask"]
    families = {re.search(r"task-definition/(.+):\*", r["Fn::Sub"]).group(1) for r in run_task["Resource"]}  # type: ignore[union-attr]
    defined = {d["Properties"]["Family"]["Fn::Sub"] for d in task_definitions().values()}  # type: ignore[index]
    assert families == defined


def test_the_template_offers_exactly_the_tiers_the_code_knows() -> None:
    assert cfn.template()["Parameters"]["DefaultTier"]["AllowedValues"] == list(TIERS)


def test_every_catalog_image_builds() -> None:
    """Where a Docker daemon answers (not in CI: it has none), build each catalog target."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("no Docker daemon answers on this machine (CI has none): catalog images are not built")
    for image in CATALOG.images:
        tag = f"cloudide-catalog-test-{image.name}:{uuid.uuid4().hex[:8]}"
        try:
            subprocess.run(
                [docker, "build", "--target", image.target, "-t", tag, str(IMAGE_DIR)],
                check=True,
                timeout=1200,
            )
            labels = subprocess.run(
                [docker, "image", "inspect", "--format", "{{json .Config.Labels}}", tag],
                capture_output=True, text=True, check=True, timeout=60,
            )  # fmt: skip
            assert json.loads(labels.stdout)["io.cloudide.variant"] == image.name
        finally:
            subprocess.run([docker, "rmi", "-f", tag], capture_output=True, timeout=120)
