"""template.yaml read the way these tests need it: table definitions and each function's environment.

The tests build their moto resources from the template rather than from a copy of it, so a changed key
schema, index or environment variable reaches the tests the moment the template changes. Intrinsic
functions are resolved against the physical ids of the resources the tests created; a reference to any
other resource fails loudly instead of producing a half-configured function.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from samcli.yamlhelper import yaml_parse

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
ACCOUNT_ID = "123456789012"
# The create_table arguments CloudFormation's table properties map to one to one.
_TABLE_KEYS = ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode")


@cache
def template() -> dict[str, Any]:
    return dict(yaml_parse(TEMPLATE.read_text()))


def resource(logical_id: str) -> dict[str, Any]:
    try:
        return dict(template()["Resources"][logical_id])
    except KeyError:
        raise KeyError(f"template.yaml has no resource {logical_id!r}") from None


def create_table_arguments(logical_id: str, table_name: str) -> dict[str, Any]:
    """DynamoDB create_table arguments for an AWS::DynamoDB::Table of the template."""
    properties = resource(logical_id)["Properties"]
    return {"TableName": table_name} | {key: properties[key] for key in _TABLE_KEYS if key in properties}


@dataclass
class Stack:
    """The template's parameters and the physical ids the tests gave its resources."""

    name: str
    region: str
    refs: dict[str, str] = field(default_factory=dict)  # logical id -> what Ref returns
    attributes: dict[str, str] = field(default_factory=dict)  # "Logical.Attr" -> what GetAtt returns
    parameters: dict[str, str] = field(default_factory=dict)  # overrides of the template defaults

    def parameter(self, name: str) -> str | list[str]:
        pseudo = {
            "AWS::StackName": self.name,
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }
        if name in pseudo:
            return pseudo[name]
        spec = template()["Parameters"][name]
        value = str(self.parameters.get(name, spec.get("Default", "")))
        if spec["Type"] == "CommaDelimitedList":
            return [item for item in value.split(",") if item]
        return value

    def ref(self, name: str) -> str | list[str]:
        if name in template().get("Parameters", {}) or name.startswith("AWS::"):
            return self.parameter(name)
        try:
            return self.refs[name]
        except KeyError:
            raise KeyError(f"the tests created no physical resource for Ref {name!r}") from None

    def get_att(self, name: str) -> str:
        try:
            return self.attributes[name]
        except KeyError:
            raise KeyError(f"the tests created no physical resource for GetAtt {name!r}") from None

    def condition(self, name: str) -> bool:
        return bool(self.resolve(template()["Conditions"][name]))

    def resolve(self, node: Any) -> Any:
        """Evaluate the intrinsic functions in `node` (the subset the template's environments use)."""
        if isinstance(node, list):
            return [self.resolve(item) for item in node]
        if not isinstance(node, Mapping):
            return node
        if len(node) != 1 or not next(iter(node)).startswith(("Fn::", "Ref", "Condition")):
            return {key: self.resolve(value) for key, value in node.items()}
        ((function, argument),) = node.items()
        if function == "Ref":
            return self.ref(argument)
        if function == "Condition":
            return self.condition(argument)
        if function == "Fn::GetAtt":
            return self.get_att(".".join(argument) if isinstance(argument, list) else argument)
        if function == "Fn::Sub":
            text, variables = (argument, {}) if isinstance(argument, str) else argument
            return self._substitute(text, self.resolve(variables))
        if function == "Fn::If":
            name, when_true, when_false = argument
            return self.resolve(when_true if self.condition(name) else when_false)
        if function == "Fn::Join":
            separator, items = argument
            return separator.join(str(item) for item in self.resolve(items))
        if function == "Fn::Equals":
            left, right = self.resolve(argument)
            return str(left) == str(right)
        if function == "Fn::Not":
            return not self.resolve(argument[0])
        raise NotImplementedError(f"intrinsic {function} is not resolved by tests/api/cfn.py")

    def _substitute(self, text: str, variables: Mapping[str, Any]) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                return self.get_att(name)
            resolved = self.ref(name)
            return ",".join(resolved) if isinstance(resolved, list) else resolved

        return re.sub(r"\$\{([^}]+)\}", value, text)

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """The variables Lambda gives the function: the Globals', then the function's own (SAM merges)."""
        globals_ = (
            template().get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        )
        own = resource(logical_id)["Properties"].get("Environment", {}).get("Variables", {})
        return {name: str(self.resolve(value)) for name, value in (dict(globals_) | dict(own)).items()}
