"""Each correction next to the moto behaviour it corrects (plain moto runs in a fresh interpreter)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cloudide.offline.stack import OfflineAws
from tests.offline.conftest import run_definition


@pytest.fixture(scope="module")
def raw() -> dict:
    probe = Path(__file__).with_name("raw_moto_probe.py")
    done = subprocess.run(
        [sys.executable, str(probe)], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def plain() -> OfflineAws:
    with OfflineAws(wait_scale=0.01) as offline:
        yield offline


def test_sdk_ecs_parameters_are_pascal_case(raw: dict, plain: OfflineAws) -> None:
    assert raw["sdk_ecs"][:2] == ["FAILED", "States.Runtime"] and "'Cluster'" in raw["sdk_ecs"][2]
    result = run_definition(
        plain,
        {
            "StartAt": "T",
            "States": {
                "T": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::aws-sdk:ecs:describeTasks",
                    "Parameters": {"Cluster": "nope", "Tasks": ["t"]},
                    "End": True,
                }
            },
        },
    )
    assert result["error"] == "Ecs.ClusterNotFoundException"


def test_indexed_path_yields_the_scalar(raw: dict, plain: OfflineAws) -> None:
    assert raw["indexed_path"] == [5]
    definition = {
        "StartAt": "P",
        "States": {
            "P": {"Type": "Pass", "Parameters": {"x.$": "$.a[0].b", "all.$": "$.a[*].b"}, "End": True}
        },
    }
    assert json.loads(run_definition(plain, definition, {"a": [{"b": 5}]})["output"]) == {"x": 5, "all": [5]}


def test_execution_gets_a_name_and_string_start_time(raw: dict, plain: OfflineAws) -> None:
    assert raw["execution_arn"].endswith(":None")
    definition = {
        "StartAt": "P",
        "States": {
            "P": {
                "Type": "Pass",
                "Parameters": {"id.$": "$$.Execution.Id", "start.$": "$$.Execution.StartTime"},
                "End": True,
            }
        },
    }
    result = run_definition(plain, definition)
    output = json.loads(result["output"])
    assert output["id"] == result["executionArn"] and not output["id"].endswith(":None")
    assert output["start"].endswith("Z")


def test_heartbeat_accepted_and_expiry_named_like_aws(plain: OfflineAws) -> None:
    task = {
        "Type": "Task",
        "Resource": "arn:aws:states:::aws-sdk:dynamodb:getItem.waitForTaskToken",
        "Parameters": {"TableName": "missing-is-fine", "Key": {"k": {"S.$": "$$.Task.Token"}}},
        "HeartbeatSeconds": 5,
        "End": True,
    }
    ddb = plain.client("dynamodb")
    ddb.create_table(
        TableName="missing-is-fine",
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    result = run_definition(plain, {"StartAt": "T", "States": {"T": task}})
    assert result["error"] == "States.HeartbeatTimeout"


def test_run_task_client_token_exec_and_task_memory(raw: dict, plain: OfflineAws) -> None:
    assert raw["client_token_tasks"] == 2 and raw["enable_execute_command"] is None
    assert len(set(raw["statuses_on_describe"])) == 3  # every describe advanced the status
    assert raw["execute_command"] == "NotImplementedError" or raw["execute_command"].endswith("Error")
    assert raw["task_level_memory"] != "ok"
    ecs = plain.client("ecs")
    ecs.create_cluster(clusterName="c")
    ecs.register_task_definition(
        family="g",
        cpu="256",
        memory="512",
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        containerDefinitions=[{"name": "x", "image": "i"}],
    )
    vpc = plain.client("ec2").create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = plain.client("ec2").create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    args = {
        "cluster": "c",
        "taskDefinition": "g",
        "launchType": "FARGATE",
        "enableExecuteCommand": True,
        "networkConfiguration": {"awsvpcConfiguration": {"subnets": [subnet]}},
    }
    first = ecs.run_task(clientToken="s-1", **args)["tasks"][0]
    assert ecs.run_task(clientToken="s-1", **args)["tasks"][0]["taskArn"] == first["taskArn"]
    with pytest.raises(ecs.exceptions.ClientException):
        ecs.run_task(clientToken="s-1", **{**args, "startedBy": "other"})
    assert first["enableExecuteCommand"] is True
    with pytest.raises(ecs.exceptions.TargetNotConnectedException):
        ecs.execute_command(cluster="c", task=first["taskArn"], command="/bin/sh", interactive=True)
    detail = plain.ecs.set_task_status("c", first["taskArn"], "RUNNING", agent_status="RUNNING")
    assert [
        ecs.describe_tasks(cluster="c", tasks=[first["taskArn"]])["tasks"][0]["lastStatus"] for _ in range(3)
    ] == ["RUNNING"] * 3
    agents = ecs.describe_tasks(cluster="c", tasks=[first["taskArn"]])["tasks"][0]["containers"][0][
        "managedAgents"
    ]
    assert agents == [{"name": "ExecuteCommandAgent", "lastStatus": "RUNNING"}]
    session = ecs.execute_command(cluster="c", task=first["taskArn"], command="/bin/sh", interactive=True)[
        "session"
    ]
    assert session["streamUrl"] == f"ws://127.0.0.1:0/v1/data-channel/{session['sessionId']}"
    stopped = plain.ecs.set_task_status("c", first["taskArn"], "STOPPED", exit_code=137, stopped_reason="OOM")
    assert stopped["version"] == detail["version"] + 1 and stopped["containers"][0]["exitCode"] == 137
    assert stopped["stopCode"] == "EssentialContainerExited" and stopped["stoppedAt"].endswith("Z")


def test_cfn_task_definitions_keep_their_role_size_and_network(raw: dict, plain: OfflineAws) -> None:
    from tests.offline.raw_moto_probe import TASK_DEFINITION_TEMPLATE

    assert raw["cfn_task_definition"] == {"taskRoleArn": None, "cpu": None, "networkMode": "bridge"}
    cfn = plain.client("cloudformation")
    cfn.create_stack(StackName="td", TemplateBody=json.dumps(TASK_DEFINITION_TEMPLATE))
    arn = cfn.describe_stack_resources(StackName="td")["StackResources"][0]["PhysicalResourceId"]
    described = plain.client("ecs").describe_task_definition(taskDefinition=arn)["taskDefinition"]
    assert (described["taskRoleArn"], described["cpu"], described["networkMode"]) == (
        "arn:aws:iam::123456789012:role/task",
        "256",
        "awsvpc",
    )
