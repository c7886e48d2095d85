"""Translate a SAM template to plain CloudFormation without AWS, for moto's CloudFormation.

`samtranslator` does the real work (the same code `sam deploy` runs server-side as the transform). Two
things are local-only: each function's local `CodeUri` becomes a placeholder S3 object whose key
`moto_fixes` maps back to the folder (so invocations import the handler from there), and a local
`DefinitionUri` is inlined as `Definition`, as `sam package` would upload and reference it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samcli.yamlhelper import yaml_parse

from cloudide.offline import moto_fixes

ACCOUNT_ID = "123456789012"
AWS_MANAGED_POLICIES = {
    name: f"arn:aws:iam::aws:policy/{path}{name}"
    for path, names in {
        "": ["AWSXrayWriteOnlyAccess", "AWSXRayDaemonWriteAccess",
             "CloudWatchLambdaInsightsExecutionRolePolicy", "AmazonSSMManagedInstanceCore",
             "AWSStepFunctionsFullAccess", "AmazonS3ReadOnlyAccess"],
        "service-role/": ["AWSLambdaBasicExecutionRole", "AWSLambdaVPCAccessExecutionRole",
                          "AmazonECSTaskExecutionRolePolicy", "AWSLambdaRole"],
    }.items()
    for name in names
}  # fmt: skip
"""AWS managed policy names SAM templates use in `Policies`; SAM resolves names to ARNs through IAM, which
is out of reach offline. Add a name here when a template needs another one."""


class _StaticPolicyLoader:
    """The `ManagedPolicyLoader` interface samtranslator calls, without the IAM ListPolicies call."""

    def load(self) -> dict[str, str]:
        return AWS_MANAGED_POLICIES


@dataclass
class Translation:
    """A translated template and where each function's code lives."""

    template: dict[str, Any]
    code_folders: dict[str, Path] = field(default_factory=dict)  # placeholder S3 key -> folder


def _code_key(folder: Path) -> str:
    return f"code/{hashlib.sha256(str(folder).encode()).hexdigest()[:16]}.zip"


def _localise_code(properties: dict[str, Any], base: Path, code_folders: dict[str, Path]) -> None:
    code_uri = properties.get("CodeUri")
    if isinstance(code_uri, str) and not code_uri.startswith("s3://"):
        folder = (base / code_uri).resolve()
        if not folder.is_dir():
            raise FileNotFoundError(f"CodeUri {code_uri!r} is not a folder under {base}")
        key = _code_key(folder)
        code_folders[key] = folder
        properties["CodeUri"] = {"Bucket": moto_fixes.CODE_BUCKET, "Key": key}


def _inline_definition(properties: dict[str, Any], base: Path) -> None:
    definition_uri = properties.get("DefinitionUri")
    if isinstance(definition_uri, str) and not definition_uri.startswith("s3://"):
        path = (base / definition_uri).resolve()
        text = path.read_text()
        properties["Definition"] = json.loads(text) if path.suffix == ".json" else yaml_parse(text)
        del properties["DefinitionUri"]


def parameter_values(template: dict[str, Any], overrides: dict[str, Any], region: str) -> dict[str, Any]:
    """Template defaults, then overrides, then the pseudo parameters SAM resolves."""
    unknown = set(overrides) - set(template.get("Parameters", {}))
    if unknown:
        raise ValueError(f"unknown template parameters: {sorted(unknown)}")
    values = {
        name: spec["Default"] for name, spec in template.get("Parameters", {}).items() if "Default" in spec
    }
    values.update(overrides)
    values.update({"AWS::Region": region, "AWS::AccountId": ACCOUNT_ID, "AWS::Partition": "aws"})
    return values


def translate(template_path: Path, *, parameters: dict[str, Any], region: str) -> Translation:
    """SAM template file -> CloudFormation template (dict), offline."""
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.translator.arn_generator import ArnGenerator
    from samtranslator.translator.transform import transform

    base = template_path.parent
    template = yaml_parse(template_path.read_text())
    source = copy.deepcopy(template)
    code_folders: dict[str, Path] = {}
    _localise_code(source.get("Globals", {}).get("Function", {}), base, code_folders)
    for resource in source.get("Resources", {}).values():
        properties = resource.setdefault("Properties", {}) if isinstance(resource, dict) else {}
        if resource.get("Type") == "AWS::Serverless::Function":
            _localise_code(properties, base, code_folders)
        elif resource.get("Type") == "AWS::Serverless::StateMachine":
            _inline_definition(properties, base)
    ArnGenerator.BOTO_SESSION_REGION_NAME = region
    # samtranslator asks a default boto3 session for the region of its pseudo parameters.
    region_was_set = "AWS_DEFAULT_REGION" in os.environ
    os.environ.setdefault("AWS_DEFAULT_REGION", region)
    try:
        translated = transform(source, parameter_values(template, parameters, region), _StaticPolicyLoader())
    except InvalidDocumentException as error:
        causes = "; ".join(cause.message for cause in error.causes)
        raise ValueError(f"{template_path}: SAM cannot translate it: {causes}") from error
    finally:
        if not region_was_set:
            del os.environ["AWS_DEFAULT_REGION"]
    translated.pop("Transform", None)
    return Translation(template=translated, code_folders=code_folders)
