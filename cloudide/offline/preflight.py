"""What CloudFormation and the services refuse when a stack is created, and moto's CloudFormation does not.

moto creates whatever a template declares. AWS refuses, before or while creating:
- a template whose `Rules` assertion fails for the given parameters (CloudFormation checks `Rules`
  before it creates anything, and answers with the rule's `AssertDescription`);
- an API Gateway stage with `AccessLogSetting` in an account and Region whose API Gateway settings
  name no CloudWatch Logs role ("CloudWatch Logs role ARN must be set in account settings to enable
  logging"), unless the same stack sets one (`AWS::ApiGateway::Account`);
- reserved concurrency that leaves the account less unreserved concurrency than Lambda's minimum; new
  accounts start with a quota of 10, so any reservation fails there.

`check` runs these on the translated template with the deploy's parameters; `deploy` calls it before
CreateStack. Only the intrinsic functions conditions and rules use are evaluated; anything else raises
instead of guessing. The account settings are per Region and shared by every stack: docs/operators.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

NEW_ACCOUNT_CONCURRENCY_QUOTA = 10
"""Lambda's concurrent-executions quota of a new account: the offline account's, the strictest reading."""
MINIMUM_UNRESERVED = 100
"""Lambda keeps this much unreserved (or the whole quota, when the quota is smaller)."""
ACCESS_LOGS_NEED_ROLE = "CloudWatch Logs role ARN must be set in account settings to enable logging"


class DeployRefused(RuntimeError):
    """AWS would refuse this template with these parameters; the message says what AWS would say."""


@dataclass(frozen=True)
class Account:
    """The account-level settings a deploy depends on, as the offline account has them."""

    apigateway_cloudwatch_role_arn: str | None = None
    lambda_concurrency_quota: int = NEW_ACCOUNT_CONCURRENCY_QUOTA


class Intrinsics:
    """Evaluates the condition functions (`Fn::Equals/And/Or/Not/If`, `Condition`), the rule functions
    (`Fn::Contains`, `Fn::EachMemberEquals`, `Fn::EachMemberIn`) and `Fn::Join`/`Fn::Select` over
    parameter values, the way CloudFormation does for `Conditions` and `Rules`."""

    def __init__(self, template: Mapping[str, Any], parameters: Mapping[str, Any]) -> None:
        specs = template.get("Parameters", {})
        self._values = {name: _typed(specs.get(name, {}), value) for name, value in parameters.items()}
        self._conditions = template.get("Conditions", {})
        self._resolved: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self._resolved:
            self._resolved[name] = bool(self.evaluate(self._conditions[name]))
        return self._resolved[name]

    def evaluate(self, value: Any) -> Any:
        if not (isinstance(value, dict) and len(value) == 1):
            return value
        [(function, argument)] = value.items()
        handler = self._FUNCTIONS.get(function)
        if handler is None:
            raise NotImplementedError(f"offline preflight cannot evaluate {function}")
        return handler(self, argument)

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return None
        if name not in self._values:
            raise NotImplementedError(f"offline preflight cannot resolve Ref {name}")
        return self._values[name]

    def _equals(self, pair: list[Any]) -> bool:
        left, right = (self.evaluate(item) for item in pair)
        return str(left) == str(right)

    def _if(self, arguments: list[Any]) -> Any:
        name, when_true, when_false = arguments
        return self.evaluate(when_true if self.condition(name) else when_false)

    def _list(self, value: Any) -> list[Any]:
        items = self.evaluate(value)
        return [self.evaluate(item) for item in items] if isinstance(items, list) else [items]

    def _members(self, arguments: list[Any]) -> tuple[list[str], Any]:
        members, other = (self.evaluate(item) for item in arguments)
        return [str(m) for m in (members if isinstance(members, list) else [members])], other

    def _contains(self, arguments: list[Any]) -> bool:
        members, value = self._members(arguments)
        return str(value) in members

    def _each_member_equals(self, arguments: list[Any]) -> bool:
        members, value = self._members(arguments)
        return all(member == str(value) for member in members)

    def _each_member_in(self, arguments: list[Any]) -> bool:
        members, allowed = self._members(arguments)
        return set(members) <= {str(a) for a in allowed}

    _FUNCTIONS: Mapping[str, Callable[[Intrinsics, Any], Any]] = {
        "Ref": _ref,
        "Condition": condition,
        "Fn::Equals": _equals,
        "Fn::And": lambda self, items: all(self.evaluate(i) for i in items),
        "Fn::Or": lambda self, items: any(self.evaluate(i) for i in items),
        "Fn::Not": lambda self, items: not self.evaluate(items[0]),
        "Fn::If": _if,
        "Fn::Contains": _contains,
        "Fn::EachMemberEquals": _each_member_equals,
        "Fn::EachMemberIn": _each_member_in,
        "Fn::Join": lambda self, args: str(args[0]).join(str(i) for i in self._list(args[1])),
        "Fn::Select": lambda self, args: self._list(args[1])[int(self.evaluate(args[0]))],
    }


def _typed(spec: Mapping[str, Any], value: Any) -> Any:
    """List-typed parameters are lists to the functions, as CloudFormation passes them ("" is [""])."""
    kind = str(spec.get("Type", "String"))
    if isinstance(value, str) and (kind == "CommaDelimitedList" or kind.startswith("List<")):
        return [item.strip() for item in value.split(",")]
    return value


def check_rules(template: Mapping[str, Any], intrinsics: Intrinsics) -> None:
    for name, rule in template.get("Rules", {}).items():
        if "RuleCondition" in rule and not intrinsics.evaluate(rule["RuleCondition"]):
            continue
        for assertion in rule.get("Assertions", []):
            if not intrinsics.evaluate(assertion["Assert"]):
                description = assertion.get("AssertDescription") or "template rule assertion failed"
                raise DeployRefused(f"Rule {name}: {description}")


def created(template: Mapping[str, Any], intrinsics: Intrinsics) -> dict[str, Mapping[str, Any]]:
    """The resources CloudFormation would create: those without a condition or whose condition holds."""
    return {
        logical_id: resource
        for logical_id, resource in template.get("Resources", {}).items()
        if "Condition" not in resource or intrinsics.condition(resource["Condition"])
    }


def _references(value: Any) -> set[str]:
    """Logical ids `value` names through Ref, Fn::GetAtt or Fn::Sub: what CloudFormation creates first."""
    if isinstance(value, list):
        return set().union(*map(_references, value)) if value else set()
    if not isinstance(value, dict):
        return set()
    found: set[str] = set()
    for key, argument in value.items():
        if key == "Ref" and isinstance(argument, str):
            found.add(argument)
        elif key == "Fn::GetAtt":
            found.add(argument[0] if isinstance(argument, list) else argument.split(".")[0])
        elif key == "Fn::Sub":
            text = argument[0] if isinstance(argument, list) else argument
            found |= {name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", text)}
        found |= _references(argument)
    return found


def _depends_on(resources: Mapping[str, Mapping[str, Any]], logical_id: str) -> set[str]:
    """Every resource `logical_id` waits for, directly or through others."""
    seen: set[str] = set()
    pending = [logical_id]
    while pending:
        resource = resources.get(pending.pop(), {})
        explicit = resource.get("DependsOn", [])
        direct = _references(resource.get("Properties", {})) | set(
            explicit if isinstance(explicit, list) else [explicit]
        )
        pending += [name for name in direct - seen if name in resources]
        seen |= direct
    return seen


def check_access_logging(resources: Mapping[str, Mapping[str, Any]], account: Account) -> None:
    """A stage with access logs needs the Region's CloudWatch role set before it is created: already in
    the account, or by an `AWS::ApiGateway::Account` of this stack that the stage waits for."""
    settings = {
        logical_id
        for logical_id, r in resources.items()
        if r["Type"] == "AWS::ApiGateway::Account" and r.get("Properties", {}).get("CloudWatchRoleArn")
    }
    if account.apigateway_cloudwatch_role_arn:
        return
    for logical_id, resource in resources.items():
        logs = resource["Type"] == "AWS::ApiGateway::Stage" and "AccessLogSetting" in resource.get(
            "Properties", {}
        )
        if logs and not settings & _depends_on(resources, logical_id):
            waits = f" (it does not wait for {', '.join(sorted(settings))})" if settings else ""
            raise DeployRefused(f"{logical_id}: {ACCESS_LOGS_NEED_ROLE}{waits} (BadRequestException)")


def check_reserved_concurrency(
    resources: Mapping[str, Mapping[str, Any]], intrinsics: Intrinsics, account: Account
) -> None:
    reserved = {
        logical_id: int(value)
        for logical_id, resource in resources.items()
        if resource["Type"] == "AWS::Lambda::Function"
        and isinstance(
            value := intrinsics.evaluate(resource["Properties"].get("ReservedConcurrentExecutions")),
            int | str,
        )
    }
    minimum = min(MINIMUM_UNRESERVED, account.lambda_concurrency_quota)
    if reserved and account.lambda_concurrency_quota - sum(reserved.values()) < minimum:
        raise DeployRefused(
            f"{', '.join(sorted(reserved))}: Specified ReservedConcurrentExecutions for function decreases "
            f"account's UnreservedConcurrentExecution below its minimum value of [{minimum}]. "
            f"(quota {account.lambda_concurrency_quota}, reserved {sum(reserved.values())})"
        )


def check(template: Mapping[str, Any], parameters: Mapping[str, Any], account: Account) -> None:
    """Raise `DeployRefused` where AWS would refuse to create this stack in `account`."""
    intrinsics = Intrinsics(template, parameters)
    check_rules(template, intrinsics)
    resources = created(template, intrinsics)
    check_access_logging(resources, account)
    check_reserved_concurrency(resources, intrinsics, account)
