"""The condition and rule functions the offline deploy evaluates, as CloudFormation defines them."""

from __future__ import annotations

from typing import Any

import pytest

from cloudide.offline.preflight import DeployRefused, Intrinsics, check_rules

TEMPLATE = {
    "Parameters": {"Arch": {"Type": "String"}, "Azs": {"Type": "CommaDelimitedList"}},
    "Conditions": {"IsArm": {"Fn::Equals": [{"Ref": "Arch"}, "ARM64"]}},
}


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ({"Condition": "IsArm"}, True),
        ({"Fn::Not": [{"Condition": "IsArm"}]}, False),
        ({"Fn::And": [{"Condition": "IsArm"}, {"Fn::Equals": ["a", "b"]}]}, False),
        ({"Fn::Or": [{"Condition": "IsArm"}, {"Fn::Equals": ["a", "b"]}]}, True),
        ({"Fn::If": ["IsArm", 50, {"Ref": "AWS::NoValue"}]}, 50),
        ({"Fn::Contains": [["X86_64", "ARM64"], {"Ref": "Arch"}]}, True),
        ({"Fn::EachMemberEquals": [{"Ref": "Azs"}, "a"]}, False),
        ({"Fn::EachMemberIn": [{"Ref": "Azs"}, ["a", "b", "c"]]}, True),
        ({"Fn::Join": ["-", {"Ref": "Azs"}]}, "a-b"),
        ({"Fn::Select": [1, {"Ref": "Azs"}]}, "b"),
    ],
)
def test_functions(expression: dict[str, Any], value: Any) -> None:
    assert Intrinsics(TEMPLATE, {"Arch": "ARM64", "Azs": "a,b"}).evaluate(expression) == value


def test_an_empty_list_parameter_is_one_empty_member() -> None:
    intrinsics = Intrinsics(TEMPLATE, {"Azs": ""})
    assert intrinsics.evaluate({"Fn::EachMemberEquals": [{"Ref": "Azs"}, ""]}) is True


def test_a_function_it_does_not_know_is_an_error_not_a_guess() -> None:
    with pytest.raises(NotImplementedError, match="Fn::GetAZs"):
        Intrinsics(TEMPLATE, {}).evaluate({"Fn::GetAZs": ""})


def test_a_rule_applies_only_when_its_condition_holds() -> None:
    rules = {
        "Rules": {
            "SpotX86": {
                "RuleCondition": {"Fn::Equals": [{"Ref": "Spot"}, "true"]},
                "Assertions": [
                    {
                        "Assert": {"Fn::Not": [{"Fn::Equals": [{"Ref": "Arch"}, "ARM64"]}]},
                        "AssertDescription": "x86 only",
                    }
                ],
            }
        }
    }
    template = TEMPLATE | rules
    check_rules(template, Intrinsics(template, {"Arch": "ARM64", "Spot": "false"}))
    with pytest.raises(DeployRefused, match="Rule SpotX86: x86 only"):
        check_rules(template, Intrinsics(template, {"Arch": "ARM64", "Spot": "true"}))
