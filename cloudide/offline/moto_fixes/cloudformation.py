# mypy: disable-error-code="method-assign,attr-defined,assignment,union-attr"
# mypy: disable-error-code="typeddict-item,arg-type,var-annotated,unused-ignore"
# (this module patches moto classes in place; moto's own annotations cannot describe that)
"""Corrections of moto's CloudFormation resources the template uses, and placeholders for the rest."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from cloudide.offline.moto_fixes import probing
from cloudide.offline.moto_fixes.correction import Correction

LOG = logging.getLogger(__name__)


def _substitute(definition: str, substitutions: dict[str, Any]) -> str:
    return re.sub(r"\$\{([^}]+)\}", lambda m: str(substitutions.get(m.group(1), m.group(0))), definition)


def fix_cfn_state_machine() -> None:
    """Substitutes `${Name}`, accepts `Definition`/`DefinitionString`, and creates the machine where
    StartExecution looks. Delete when moto's resource does all three."""
    from moto.stepfunctions.models import StateMachine
    from moto.stepfunctions.responses import get_backend

    def create_from_cloudformation_json(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kw: Any
    ) -> Any:
        properties = cloudformation_json["Properties"]
        definition = properties.get("DefinitionString") or json.dumps(properties.get("Definition", {}))
        definition = _substitute(definition, properties.get("DefinitionSubstitutions", {}))
        tags = [{"key": tag["Key"], "value": tag["Value"]} for tag in properties.get("Tags", [])]
        return get_backend(account_id, region_name).create_state_machine(
            properties.get("StateMachineName", resource_name),
            definition,
            properties.get("RoleArn", ""),
            tags=tags,
        )

    def delete_from_cloudformation_json(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        backend = get_backend(account_id, region_name)
        for machine in backend.list_state_machines():
            if resource_name in (machine.name, machine.arn):
                backend.delete_state_machine(machine.arn)

    StateMachine.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)
    StateMachine.delete_from_cloudformation_json = classmethod(delete_from_cloudformation_json)


def fix_cfn_task_definition() -> None:
    """Registers every property of the resource. Delete when moto does."""
    from moto.core.utils import pascal_to_camelcase, remap_nested_keys
    from moto.ecs.models import TaskDefinition, ecs_backends

    def create_from_cloudformation_json(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kw: Any
    ) -> Any:
        properties = cloudformation_json["Properties"]
        tags = [{"key": tag["Key"], "value": tag["Value"]} for tag in properties.get("Tags", [])]
        return ecs_backends[account_id][region_name].register_task_definition(
            family=properties.get("Family", resource_name),
            container_definitions=remap_nested_keys(
                properties.get("ContainerDefinitions", []), pascal_to_camelcase
            ),
            volumes=remap_nested_keys(properties.get("Volumes", []), pascal_to_camelcase),
            network_mode=properties.get("NetworkMode"),
            tags=tags or None,
            requires_compatibilities=properties.get("RequiresCompatibilities"),
            cpu=properties.get("Cpu"),
            memory=properties.get("Memory"),
            task_role_arn=properties.get("TaskRoleArn"),
            execution_role_arn=properties.get("ExecutionRoleArn"),
            runtime_platform=remap_nested_keys(properties.get("RuntimePlatform") or {}, pascal_to_camelcase)
            or None,
        )

    TaskDefinition.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)


def fix_cfn_rest_api() -> None:
    """The REST API is imported from `Body` when moto can parse it (the offline stack serves the API
    itself, so a partial import only logs a warning). Delete when moto supports both."""
    from moto.apigateway.models import RestAPI, Stage, apigateway_backends

    def create_api(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kw: Any
    ) -> Any:
        properties = cloudformation_json["Properties"]
        body = properties.get("Body")
        backend = apigateway_backends[account_id][region_name]
        name = properties.get("Name") or (body or {}).get("info", {}).get("title") or resource_name
        api = backend.create_rest_api(
            name=name,
            description=properties.get("Description", ""),
            endpoint_configuration=properties.get("EndpointConfiguration"),
        )
        if body:
            try:
                # moto reads only OpenAPI 3 documents; SAM writes Swagger 2.0, whose `paths` moto can use.
                paths_only = {
                    "openapi": "3.0.1",
                    "info": body.get("info", {}),
                    "paths": body.get("paths", {}),
                }
                backend.put_rest_api(api.id, paths_only, mode="overwrite", fail_on_warnings=False)
            except Exception as error:
                LOG.info("moto could not import the OpenAPI body of %s: %r", resource_name, error)
        return api

    def create_stage(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kw: Any
    ) -> Any:
        properties = cloudformation_json["Properties"]
        backend = apigateway_backends[account_id][region_name]
        stage = backend.create_stage(
            properties["RestApiId"],
            properties["StageName"],
            properties.get("DeploymentId", ""),
            variables=properties.get("Variables"),
            description=properties.get("Description", ""),
            tracing_enabled=properties.get("TracingEnabled"),
        )
        stage.physical_resource_id = properties["StageName"]
        return stage

    RestAPI.create_from_cloudformation_json = classmethod(create_api)
    Stage.cloudformation_type = staticmethod(lambda: "AWS::ApiGateway::Stage")
    Stage.create_from_cloudformation_json = classmethod(create_stage)
    Stage.cloudformation_name_type = staticmethod(lambda: "StageName")


def _cloudformation_model() -> type:
    from moto.core.common_models import CloudFormationModel

    return CloudFormationModel


class PlaceholderResource(_cloudformation_model()):  # type: ignore[misc]
    """Stands in for a resource type moto's CloudFormation does not support (cloudformation_type
    AWS::Cognito::..., AWS::EC2::VPCEndpoint, AWS::ECS::ClusterCapacityProviderAssociations, ...).
    Its physical id is the generated name; `Ref` yields it and `GetAtt X.Attr` yields
    `<physical id>.<Attr>`, or an ARN-shaped value for attributes whose name ends in `Arn`."""

    def __init__(self, physical_id: str, resource_type: str, account_id: str, region_name: str) -> None:
        self.physical_resource_id = physical_id
        self.resource_type = resource_type
        self.account_id = account_id
        self.region_name = region_name

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kw: Any
    ) -> PlaceholderResource:
        return cls(resource_name, kw.get("ResourceType", "Unknown"), account_id, region_name)

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return True

    def get_cfn_attribute(self, attribute_name: str) -> str:
        if attribute_name.endswith("Arn"):
            service = self.resource_type.split("::")[1].lower()
            where = f"{self.region_name}:{self.account_id}"
            return f"arn:aws:{service}:{where}:placeholder/{self.physical_resource_id}"
        return f"{self.physical_resource_id}.{attribute_name}"

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @staticmethod
    def cloudformation_type() -> str:
        return "Offline::Placeholder"

    def is_created(self) -> bool:
        return True

    def delete(self, account_id: str, region_name: str) -> None:
        """Nothing to delete: the placeholder owns no moto state."""


def fix_cfn_unsupported_types() -> None:
    """Unsupported types get a `PlaceholderResource`. Delete per type as moto adds models (it never
    models all of them)."""
    from moto.cloudformation import parsing

    original = parsing.__dict__.get("_cloudide_original_class_from_type", parsing.resource_class_from_type)
    parsing._cloudide_original_class_from_type = original

    def resource_class_from_type(resource_type: str) -> Any:
        if resource_type in parsing.NULL_MODELS or resource_type.startswith("Custom::"):
            return original(resource_type)
        if resource_type in parsing.get_model_map():
            return original(resource_type)
        LOG.info("offline placeholder for %s", resource_type)
        return PlaceholderResource

    parsing.resource_class_from_type = resource_class_from_type


def _probe_cfn_state_machine() -> None:
    definition = {
        "StartAt": "P",
        "States": {"P": {"Type": "Pass", "Result": {"greeting": "${Greeting}"}, "End": True}},
    }
    machine = {
        "Type": "AWS::StepFunctions::StateMachine",
        "Properties": {
            "RoleArn": probing.ROLE_ARN,
            "Definition": definition,
            "DefinitionSubstitutions": {"Greeting": "hello"},
        },
    }
    stack = probing.deploy({"Machine": machine}, {"Arn": {"Value": {"Ref": "Machine"}}})
    arn = stack["Outputs"][0]["OutputValue"]
    execution = probing.client("stepfunctions").start_execution(stateMachineArn=arn)["executionArn"]
    described = probing.finished(execution, timeout=5)
    assert json.loads(described.get("output") or "null") == {"greeting": "hello"}, described


TASK_DEFINITION = {
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


def _probe_cfn_task_definition() -> None:
    stack = probing.deploy({"Definition": TASK_DEFINITION}, {"Arn": {"Value": {"Ref": "Definition"}}})
    arn = stack["Outputs"][0]["OutputValue"]
    described = probing.client("ecs").describe_task_definition(taskDefinition=arn)["taskDefinition"]
    kept = {key: described.get(key) for key in ("taskRoleArn", "cpu", "networkMode")}
    assert kept == {
        "taskRoleArn": "arn:aws:iam::123456789012:role/task",
        "cpu": "256",
        "networkMode": "awsvpc",
    }, kept


def _probe_cfn_rest_api() -> None:
    body = {"swagger": "2.0", "info": {"title": "probe-api", "version": "1"}, "paths": {}}
    resources = {
        "Api": {"Type": "AWS::ApiGateway::RestApi", "Properties": {"Body": body}},
        "Stage": {
            "Type": "AWS::ApiGateway::Stage",
            "Properties": {"RestApiId": {"Ref": "Api"}, "StageName": "prod", "DeploymentId": "none"},
        },
    }
    stack = probing.deploy(resources)
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    apis = probing.client("apigateway").get_rest_apis()["items"]
    assert [api["name"] for api in apis] == ["probe-api"], apis


def _probe_cfn_unsupported_types() -> None:
    association = {
        "Type": "AWS::ECS::ClusterCapacityProviderAssociations",
        "Properties": {
            "Cluster": "probe",
            "CapacityProviders": ["FARGATE"],
            "DefaultCapacityProviderStrategy": [],
        },
    }
    outputs = {"Id": {"Value": {"Ref": "Association"}}}
    stack = probing.deploy({"Association": association}, outputs)
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    assert [output["OutputKey"] for output in stack.get("Outputs", [])] == ["Id"], stack


CFN_STATE_MACHINE = Correction(
    name="cfn-state-machine",
    moto="AWS::StepFunctions::StateMachine ignores `Definition` (object) and `DefinitionSubstitutions` and"
    " creates the machine where the interpreter never runs it",
    aws="takes either definition form, substitutes `${Name}`, and StartExecution runs the machine",
    install=fix_cfn_state_machine,
    probe=_probe_cfn_state_machine,
)
CFN_TASK_DEFINITION = Correction(
    name="cfn-task-definition",
    moto="AWS::ECS::TaskDefinition keeps only family, containers, volumes and memory: task role, CPU,"
    " network mode, compatibilities and platform are dropped",
    aws="registers every property",
    install=fix_cfn_task_definition,
    probe=_probe_cfn_task_definition,
)
CFN_REST_API = Correction(
    name="cfn-rest-api",
    moto="AWS::ApiGateway::RestApi requires `Name` and ignores `Body`; AWS::ApiGateway::Stage is not"
    " supported",
    aws="takes the name and the API from the OpenAPI `Body`; creates the stage",
    install=fix_cfn_rest_api,
    probe=_probe_cfn_rest_api,
)
CFN_UNSUPPORTED_TYPES = Correction(
    name="cfn-unsupported-types",
    moto="skips resource types it does not model, and then `Ref`/`GetAtt` on them fail the stack",
    aws="creates them (Cognito pools, VPC endpoints, alarms...); offline they become placeholders whose"
    " `Ref` is the logical id and whose `GetAtt` is a name-shaped (or ARN-shaped) value",
    install=fix_cfn_unsupported_types,
    probe=_probe_cfn_unsupported_types,
)
