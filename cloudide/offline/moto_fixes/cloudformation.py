# mypy: disable-error-code="method-assign,attr-defined,assignment,union-attr"
# mypy: disable-error-code="typeddict-item,arg-type,var-annotated,unused-ignore"
# (this module patches moto classes in place; moto's own annotations cannot describe that)
"""Corrections of moto's CloudFormation resources the template uses, and placeholders for the rest."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

LOG = logging.getLogger(__name__)


def _substitute(definition: str, substitutions: dict[str, Any]) -> str:
    return re.sub(r"\$\{([^}]+)\}", lambda m: str(substitutions.get(m.group(1), m.group(0))), definition)


def fix_cfn_state_machine() -> None:
    """moto's AWS::StepFunctions::StateMachine ignores `Definition` (object) and
    `DefinitionSubstitutions`, and creates the machine in the plain back end even when the interpreter
    (`execute_state_machine`) is on, so StartExecution never runs it. This substitutes `${Name}`,
    accepts `Definition`/`DefinitionString`, and creates it where StartExecution looks. Delete when
    moto's resource does all three."""
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
    """moto's AWS::ECS::TaskDefinition keeps only the family, containers, volumes and memory: the task
    role, CPU, network mode, compatibilities and platform are dropped, so a task started from it has no
    role to assume and no size to enforce. This registers every property. Delete when moto does."""
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
    """moto's AWS::ApiGateway::RestApi requires `Name` (AWS takes it from an OpenAPI `Body`) and ignores
    `Body`; AWS::ApiGateway::Stage is not supported. The REST API is imported from `Body` when moto can
    parse it (the offline stack serves the API itself, so a partial import only logs a warning).
    Delete when moto supports both."""
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
    """moto's CloudFormation skips resource types it does not model, and then `Ref`/`GetAtt` on them
    fail the stack. Unsupported types get a `PlaceholderResource` instead, so a template that also
    declares Cognito pools, VPC endpoints, alarms and the like still deploys. Delete per type as moto
    adds models (it never models all of them)."""
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
