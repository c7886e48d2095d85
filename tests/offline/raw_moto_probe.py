"""Run in a fresh interpreter WITHOUT the corrections: prints what plain moto does, as JSON."""

import json
import logging
import time

import boto3
from moto import mock_aws

logging.disable(logging.CRITICAL)
SFN = {"stepfunctions": {"execute_state_machine": True}}
ROLE = "arn:aws:iam::123456789012:role/r"


def run(sfn, definition, name=None):
    arn = sfn.create_state_machine(name=f"m{time.time_ns()}", definition=json.dumps(definition), roleArn=ROLE)
    start = {"stateMachineArn": arn["stateMachineArn"], "input": json.dumps({"a": [{"b": 5}]})}
    execution = sfn.start_execution(**start, **({"name": name} if name else {}))["executionArn"]
    for _ in range(200):
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            return execution, described
        time.sleep(0.02)
    return execution, described


TASK_DEFINITION_TEMPLATE = {
    "Resources": {
        "Definition": {
            "Type": "AWS::ECS::TaskDefinition",
            "Properties": {
                "Family": "from-cfn",
                "Cpu": "256",
                "Memory": "512",
                "NetworkMode": "awsvpc",
                "RequiresCompatibilities": ["FARGATE"],
                "TaskRoleArn": "arn:aws:iam::123456789012:role/task",
                "ContainerDefinitions": [{"Name": "x", "Image": "i"}],
            },
        }
    }
}


def main():
    seen = {}
    with mock_aws(config=SFN):
        sfn = boto3.client("stepfunctions", region_name="us-east-1")
        ecs = boto3.client("ecs", region_name="us-east-1")
        _, d = run(
            sfn,
            {
                "StartAt": "T",
                "States": {
                    "T": {
                        "Type": "Task",
                        "Resource": "arn:aws:states:::aws-sdk:ecs:describeTasks",
                        "Parameters": {"Cluster": "c", "Tasks": ["t"]},
                        "End": True,
                    }
                },
            },
        )
        seen["sdk_ecs"] = [d["status"], d.get("error"), d.get("cause")]
        _, d = run(
            sfn,
            {
                "StartAt": "P",
                "States": {"P": {"Type": "Pass", "Parameters": {"x.$": "$.a[0].b"}, "End": True}},
            },
        )
        seen["indexed_path"] = json.loads(d["output"])["x"]
        execution, _ = run(sfn, {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
        seen["execution_arn"] = execution
        ecs.create_cluster(clusterName="c")
        ecs.register_task_definition(
            family="f", containerDefinitions=[{"name": "x", "image": "i", "memory": 512}]
        )
        ran = [
            ecs.run_task(cluster="c", taskDefinition="f", clientToken="tok", launchType="FARGATE")["tasks"][0]
            for _ in range(2)
        ]
        seen["client_token_tasks"] = len({t["taskArn"] for t in ran})
        seen["enable_execute_command"] = ecs.run_task(
            cluster="c", taskDefinition="f", launchType="FARGATE", enableExecuteCommand=True
        )["tasks"][0].get("enableExecuteCommand")
        seen["statuses_on_describe"] = [
            ecs.describe_tasks(cluster="c", tasks=[ran[0]["taskArn"]])["tasks"][0]["lastStatus"]
            for _ in range(3)
        ]
        try:
            ecs.execute_command(cluster="c", task=ran[0]["taskArn"], command="sh", interactive=True)
            seen["execute_command"] = "implemented"
        except Exception as error:
            seen["execute_command"] = type(error).__name__
        ecs.register_task_definition(
            family="g",
            cpu="256",
            memory="512",
            requiresCompatibilities=["FARGATE"],
            containerDefinitions=[{"name": "x", "image": "i"}],
        )
        try:
            ecs.run_task(cluster="c", taskDefinition="g", launchType="FARGATE")
            seen["task_level_memory"] = "ok"
        except Exception as error:
            seen["task_level_memory"] = type(error).__name__
        cfn = boto3.client("cloudformation", region_name="us-east-1")
        cfn.create_stack(StackName="td", TemplateBody=json.dumps(TASK_DEFINITION_TEMPLATE))
        arn = cfn.describe_stack_resources(StackName="td")["StackResources"][0]["PhysicalResourceId"]
        described = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        seen["cfn_task_definition"] = {k: described.get(k) for k in ("taskRoleArn", "cpu", "networkMode")}
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
