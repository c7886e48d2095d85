"""Every IAM statement the deployed stack would hold, read from the translated template (SAM expands
function policies into roles exactly as `sam deploy` does), for the least-privilege checks and the
security benchmark."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cloudide.offline import sam

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
POLICY_TYPES = ("AWS::IAM::Role", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")


@dataclass(frozen=True)
class Statement:
    owner: str  # the logical id of the role or policy resource holding it
    sid: str
    effect: str
    actions: tuple[str, ...]
    resources: tuple[Any, ...]
    condition: dict[str, Any]

    @property
    def wildcard_resource(self) -> bool:
        return "*" in self.resources


@cache
def translated() -> dict[str, Any]:
    return dict(sam.translate(TEMPLATE, parameters={"TerminalImageUri": "x"}, region="us-east-1").template)


def resources() -> dict[str, Any]:
    return dict(translated()["Resources"])


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements() -> Iterator[Statement]:
    for logical_id, resource in resources().items():
        if resource["Type"] not in POLICY_TYPES:
            continue
        properties = resource["Properties"]
        documents = [p["PolicyDocument"] for p in properties.get("Policies", [])]
        documents += [properties["PolicyDocument"]] if "PolicyDocument" in properties else []
        for document in documents:
            for raw in _as_list(document["Statement"]):
                yield Statement(
                    owner=logical_id,
                    sid=raw.get("Sid", ""),
                    effect=raw["Effect"],
                    actions=tuple(_as_list(raw["Action"])),
                    resources=tuple(_as_list(raw.get("Resource", []))),
                    condition=dict(raw.get("Condition", {})),
                )


def roles() -> dict[str, dict[str, Any]]:
    return {lid: r["Properties"] for lid, r in resources().items() if r["Type"] == "AWS::IAM::Role"}
