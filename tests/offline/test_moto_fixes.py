"""Every correction of moto is needed and works: its probe fails on plain moto and passes corrected.

The probes run in two fresh interpreters (plain and corrected moto cannot share a process), once for
the module. The tests after them check the corrected behaviours the probes do not reach.
"""

import pytest

from cloudide.offline.moto_fixes import CORRECTIONS, Correction
from cloudide.offline.moto_fixes.proof import ProbeResult, run_probes
from cloudide.offline.stack import OfflineAws
from tests.offline.conftest import run_definition


@pytest.fixture(scope="module")
def probes() -> dict[str, ProbeResult]:
    return run_probes()


def test_corrections_are_named_once_and_say_both_behaviours() -> None:
    names = [correction.name for correction in CORRECTIONS]
    assert len(names) == len(set(names)) and len(names) >= 19
    assert all(correction.moto and correction.aws for correction in CORRECTIONS)


@pytest.mark.parametrize("correction", CORRECTIONS, ids=[c.name for c in CORRECTIONS])
def test_probe_fails_on_plain_moto_and_passes_corrected(
    correction: Correction, probes: dict[str, ProbeResult]
) -> None:
    result = probes[correction.name]
    assert result.plain is not None, f"plain moto now does what AWS does; delete {correction.name}"
    assert result.corrected is None, f"corrected moto still differs from AWS: {result.corrected}"


def test_only_a_probe_that_plain_moto_fails_proves_its_correction() -> None:
    result = ProbeResult("x", plain=None, corrected=None)
    assert not result.proven  # a probe plain moto passes proves nothing
    assert ProbeResult("x", plain="AssertionError", corrected=None).proven


@pytest.fixture
def corrected() -> OfflineAws:
    with OfflineAws(wait_scale=0.01) as offline:
        yield offline


def test_sdk_errors_carry_the_service_name_as_aws_writes_it(corrected: OfflineAws) -> None:
    result = run_definition(
        corrected,
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


def test_run_task_client_token_exec_agent_and_task_level_memory(corrected: OfflineAws) -> None:
    ecs = corrected.client("ecs")
    ecs.create_cluster(clusterName="c")
    ecs.register_task_definition(
        family="g",
        cpu="256",
        memory="512",
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        containerDefinitions=[{"name": "x", "image": "i"}],
    )
    vpc = corrected.client("ec2").create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = corrected.client("ec2").create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
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
    detail = corrected.ecs.set_task_status("c", first["taskArn"], "RUNNING", agent_status="RUNNING")
    agents = ecs.describe_tasks(cluster="c", tasks=[first["taskArn"]])["tasks"][0]["containers"][0][
        "managedAgents"
    ]
    assert agents == [{"name": "ExecuteCommandAgent", "lastStatus": "RUNNING"}]
    session = ecs.execute_command(cluster="c", task=first["taskArn"], command="/bin/sh", interactive=True)[
        "session"
    ]
    assert session["streamUrl"] == f"ws://127.0.0.1:0/v1/data-channel/{session['sessionId']}"
    stopped = corrected.ecs.set_task_status(
        "c", first["taskArn"], "STOPPED", exit_code=137, stopped_reason="OOM"
    )
    assert stopped["version"] == detail["version"] + 1 and stopped["containers"][0]["exitCode"] == 137
    assert stopped["stopCode"] == "EssentialContainerExited" and stopped["stoppedAt"].endswith("Z")
