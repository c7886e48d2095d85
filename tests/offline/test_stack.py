"""The harness end to end: the fixture SAM template deployed into moto, its workflow run for real."""

import json
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from cloudide.offline import preflight
from cloudide.offline.ecs import CAPACITY_UNAVAILABLE
from cloudide.offline.preflight import DeployRefused
from cloudide.offline.stack import DeployError, OfflineAws, deploy
from tests.offline.conftest import FIXTURE_TEMPLATE, finished, wait_for


def start_flow(aws: OfflineAws, pk: str) -> str:
    return aws.client("stepfunctions").start_execution(
        stateMachineArn=aws.stack.outputs["FlowArn"], input=json.dumps({"pk": pk})
    )["executionArn"]


def token_item(aws: OfflineAws, pk: str) -> dict:
    ddb = aws.client("dynamodb")
    table = aws.stack.outputs["TableName"]
    return wait_for(lambda: ddb.get_item(TableName=table, Key={"pk": {"S": f"token#{pk}"}}).get("Item"))


def test_deploy_resolves_outputs_parameters_and_conditions(aws: OfflineAws) -> None:
    stack = aws.stack
    assert stack.outputs["ApiUrl"].endswith("/dev")
    assert stack.outputs["ClusterArn"].startswith("arn:aws:ecs:us-east-1:123456789012:cluster/")
    assert stack.resources["UserPool"]["type"] == "AWS::Cognito::UserPool"  # placeholder, still deployed
    assert aws.client("lambda").get_function_configuration(FunctionName=stack.physical_id("RecordFunction"))[
        "Environment"
    ]["Variables"] == {"TABLE_NAME": stack.outputs["TableName"], "STAGE": "dev"}
    with pytest.raises(KeyError, match="NoSuch"):
        stack.physical_id("NoSuch")


def test_parameter_overrides_and_false_conditions() -> None:
    with OfflineAws(FIXTURE_TEMPLATE, parameters={"Stage": "prod", "CreateUserPool": "false"}) as offline:
        assert offline.stack.outputs["ApiUrl"].endswith("/prod")
        assert "UserPool" not in offline.stack.resources
        assert "UserPoolId" not in offline.stack.outputs


def test_unknown_parameter_is_a_clear_error() -> None:
    with OfflineAws() as offline, pytest.raises(ValueError, match="Nope"):
        deploy(FIXTURE_TEMPLATE, parameters={"Nope": "1"}, stack_name="x", session=offline.session())


def test_workflow_runs_lambda_ecs_callback_dynamodb_and_stop(aws: OfflineAws) -> None:
    sfn, ecs = aws.client("stepfunctions"), aws.client("ecs")
    cluster = aws.stack.outputs["ClusterArn"]
    execution = start_flow(aws, "s1")
    item = token_item(aws, "s1")
    [task_arn] = ecs.list_tasks(cluster=cluster)["taskArns"]
    task = ecs.describe_tasks(cluster=cluster, tasks=[task_arn])["tasks"][0]
    assert task["lastStatus"] == "PROVISIONING"
    assert task["enableExecuteCommand"] is True
    assert task["capacityProviderName"] == "FARGATE_SPOT" and task["startedBy"] == "fixture"
    detail = aws.ecs.report(cluster, task_arn, "RUNNING", agent_status="RUNNING")
    sfn.send_task_success(taskToken=item["token"]["S"], output=json.dumps(detail))
    result = finished(sfn, execution)
    assert result["status"] == "SUCCEEDED", result
    output = json.loads(result["output"])
    assert output["record"] == {"recorded": "s1"}  # handler ran in-process, ResultSelector scalar
    assert output["task"] == {"taskArn": task_arn, "status": "PROVISIONING"}
    assert output["described"] == {"agent": "RUNNING"}
    assert output["stopped"] == {"desired": "STOPPED"}
    # Describing never advanced the status by itself; StopTask only asked the task to stop.
    assert ecs.describe_tasks(cluster=cluster, tasks=[task_arn])["tasks"][0]["lastStatus"] == "RUNNING"
    # The task event reached the rule's Lambda, with the function's environment.
    ddb = aws.client("dynamodb")
    table = aws.stack.outputs["TableName"]
    recorded = wait_for(lambda: ddb.get_item(TableName=table, Key={"pk": {"S": task_arn}}).get("Item"))
    assert recorded["source"] == {"S": "aws.ecs"} and recorded["stage"] == {"S": "dev"}


def test_capacity_failures_are_retried_then_caught(aws: OfflineAws) -> None:
    aws.ecs.fail_next_run_tasks(4)  # MaxAttempts 3 = four calls
    result = finished(aws.client("stepfunctions"), start_flow(aws, "s2"))
    assert result["status"] == "FAILED" and result["error"] == "ProvisionFailed"
    history = aws.client("stepfunctions").get_execution_history(executionArn=result["executionArn"])["events"]
    failures = [e["taskFailedEventDetails"] for e in history if e["type"] == "TaskFailed"]
    assert [f["error"] for f in failures] == ["ECS.AmazonECSException"] * 4
    assert CAPACITY_UNAVAILABLE in failures[0]["cause"]


def test_one_capacity_failure_then_success(aws: OfflineAws) -> None:
    aws.ecs.fail_next_run_tasks(1)
    execution = start_flow(aws, "s3")
    token_item(aws, "s3")
    assert len(aws.client("ecs").list_tasks(cluster=aws.stack.outputs["ClusterArn"])["taskArns"]) == 1
    aws.client("stepfunctions").stop_execution(executionArn=execution)


def test_deploy_error_names_the_failing_template(tmp_path) -> None:
    bad = tmp_path / "template.yaml"
    bad.write_text(
        "Transform: AWS::Serverless-2016-10-31\nResources:\n  F:\n    Type: AWS::Serverless::Function\n"
        "    Properties: {CodeUri: missing/, Handler: a.b, Runtime: python3.13}\n"
    )
    with OfflineAws() as offline, pytest.raises(FileNotFoundError, match="missing/"):
        deploy(bad, stack_name="bad", session=offline.session())
    assert issubclass(DeployError, RuntimeError)


def test_server_mode_runs_the_workflow_from_separate_clients() -> None:
    with OfflineAws(FIXTURE_TEMPLATE, server=True, wait_scale=0.01) as offline:
        assert offline.endpoint_url and offline.endpoint_url.startswith("http://127.0.0.1:")
        execution = start_flow(offline, "srv")
        item = token_item(offline, "srv")
        offline.client("stepfunctions").send_task_failure(
            taskToken=item["token"]["S"], error="Gone", cause="x"
        )
        result = finished(offline.client("stepfunctions"), execution)
        assert result["status"] == "FAILED" and result["error"] == "Gone"


# Stand-in rules: the offline deploy refuses what CloudFormation and the services refuse (preflight).
PRODUCT_TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
IMAGE = {"TerminalImageUri": "local/terminal:dev"}
LOGGED_STAGE = {
    "Resources": {
        "Role": {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": {}}},
        "Settings": {
            "Type": "AWS::ApiGateway::Account",
            "Properties": {"CloudWatchRoleArn": {"Fn::GetAtt": ["Role", "Arn"]}},
        },
        "Api": {"Type": "AWS::ApiGateway::RestApi", "Properties": {"Name": "api"}},
        "Stage": {
            "Type": "AWS::ApiGateway::Stage",
            "Properties": {
                "RestApiId": {"Ref": "Api"},
                "StageName": "dev",
                "AccessLogSetting": {"DestinationArn": "arn:aws:logs:us-east-1:123456789012:log-group:x"},
            },
        },
    }
}


def _deploy_refusal(**parameters: str) -> str:
    """Deploy the product template into a new offline account; what the offline deploy refused."""
    with OfflineAws() as offline, pytest.raises(DeployRefused) as refused:
        deploy(
            PRODUCT_TEMPLATE, parameters=IMAGE | parameters, stack_name="refused", session=offline.session()
        )
    return str(refused.value)


@pytest.mark.stand_in_rule("apigateway-access-logs-need-cloudwatch-role")
def test_a_stage_with_access_logs_needs_the_regions_cloudwatch_role() -> None:
    refusal = _deploy_refusal(CreateApiGatewayAccountRole="false")
    assert refusal.startswith("ApiStage: CloudWatch Logs role ARN must be set in account settings")


@pytest.mark.stand_in_rule("apigateway-access-logs-wait-for-the-account-settings")
def test_a_stage_that_does_not_wait_for_the_account_settings_is_refused() -> None:
    account = preflight.Account()
    with pytest.raises(DeployRefused, match=r"Stage: .* \(it does not wait for Settings\)"):
        preflight.check(LOGGED_STAGE, {}, account)
    waits = json.loads(json.dumps(LOGGED_STAGE))
    waits["Resources"]["Stage"]["DependsOn"] = "Settings"
    preflight.check(waits, {}, account)
    preflight.check(
        LOGGED_STAGE, {}, preflight.Account(apigateway_cloudwatch_role_arn="arn:aws:iam::1:role/r")
    )


def test_the_product_sets_the_role_once_per_region_and_a_second_stack_may_skip_it() -> None:
    with OfflineAws(PRODUCT_TEMPLATE, parameters=IMAGE) as offline:
        assert offline.stack
        role = offline.stack.physical_id("ApiGatewayCloudWatchRole")
        setting = offline.client("apigateway").get_account()["cloudwatchRoleArn"]
        assert setting == offline.client("iam").get_role(RoleName=role)["Role"]["Arn"]
        second = deploy(
            PRODUCT_TEMPLATE,
            parameters=IMAGE | {"CreateApiGatewayAccountRole": "false"},
            stack_name="second",
            session=offline.session(),
        )
        assert "ApiGatewayAccount" not in second.resources


@pytest.mark.stand_in_rule("cloudformation-rules")
def test_template_rules_refuse_spot_on_arm64_with_the_rules_description() -> None:
    refusal = _deploy_refusal(UseFargateSpot="true")
    assert refusal.startswith("Rule SpotRunsOnlyX86: Fargate Spot runs only X86_64 tasks")


@pytest.mark.stand_in_rule("lambda-reserved-concurrency-quota")
def test_reserved_concurrency_is_refused_on_a_new_accounts_quota() -> None:
    refusal = _deploy_refusal(ReserveConcurrency="true")
    assert "decreases account's UnreservedConcurrentExecution below its minimum value of [10]" in refusal


def _run_on(offline: OfflineAws, architecture: str, provider: str) -> dict:
    ecs = offline.client("ecs")
    ecs.create_cluster(clusterName="c")
    family = f"t-{architecture.lower()}"
    ecs.register_task_definition(
        family=family,
        containerDefinitions=[{"name": "c", "image": "i"}],
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="256",
        memory="512",
        runtimePlatform={"cpuArchitecture": architecture, "operatingSystemFamily": "LINUX"},
    )
    subnet = offline.client("ec2").describe_subnets()["Subnets"][0]["SubnetId"]
    return ecs.run_task(
        cluster="c",
        taskDefinition=family,
        capacityProviderStrategy=[{"capacityProvider": provider, "weight": 1}],
        networkConfiguration={"awsvpcConfiguration": {"subnets": [subnet]}},
    )


@pytest.mark.stand_in_rule("fargate-spot-runs-only-x86")
def test_run_task_refuses_arm64_on_fargate_spot() -> None:
    with OfflineAws() as offline:
        with pytest.raises(ClientError, match="FARGATE_SPOT capacity provider") as refused:
            _run_on(offline, "ARM64", "FARGATE_SPOT")
        assert refused.value.response["Error"]["Code"] == "ClientException"
        assert (
            _run_on(offline, "X86_64", "FARGATE_SPOT")["tasks"][0]["capacityProviderName"] == "FARGATE_SPOT"
        )
        assert _run_on(offline, "ARM64", "FARGATE")["tasks"]
