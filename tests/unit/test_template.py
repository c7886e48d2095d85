"""The template and the workflow definition pass the linters a deploy would run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudide.offline import preflight, sam

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENV = os.environ | {"AWS_DEFAULT_REGION": "us-east-1"}


def _run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=240, check=False)


def test_cfn_lint_is_clean() -> None:
    result = _run(str(BIN / "cfn-lint"), "template.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_validate_lint_is_clean() -> None:
    result = _run(str(BIN / "sam"), "validate", "--lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_definition_passes_cfn_lint_once_inlined(tmp_path: Path) -> None:
    # `sam validate` does not read DefinitionUri files; lint the translated template, definition inlined.
    translated = sam.translate(
        ROOT / "template.yaml", parameters={"TerminalImageUri": "x"}, region="us-east-1"
    )
    out = tmp_path / "translated.json"
    out.write_text(json.dumps(translated.template))
    result = _run(str(BIN / "cfn-lint"), str(out))
    errors = [line for line in result.stdout.splitlines() if line.startswith("E")]
    assert not errors, result.stdout
    definition = next(
        r["Properties"]
        for r in translated.template["Resources"].values()
        if r["Type"] == "AWS::StepFunctions::StateMachine"
    )
    assert "Definition" in definition or "DefinitionString" in definition


NEW_ACCOUNT = preflight.Account()


def _refusal(
    region: str = "us-east-1", account: preflight.Account = NEW_ACCOUNT, **parameters: str
) -> str | None:
    translated = sam.translate(ROOT / "template.yaml", parameters={"TerminalImageUri": "x"}, region=region)
    values = sam.parameter_values(translated.template, {"TerminalImageUri": "x", **parameters}, region)
    try:
        preflight.check(translated.template, values, account)
    except preflight.DeployRefused as refused:
        return str(refused)
    return None


def test_the_defaults_deploy_in_a_new_account() -> None:
    assert _refusal() is None


def test_spot_needs_x86() -> None:
    assert "SpotRunsOnlyX86" in str(_refusal(UseFargateSpot="true"))
    assert _refusal(UseFargateSpot="true", TaskArchitecture="X86_64") is None


@pytest.mark.parametrize("region", ["us-west-1", "ap-northeast-1"])
def test_regions_where_fargate_runs_in_some_azs_need_az_ids(region: str) -> None:
    assert "AvailabilityZoneIds" in str(_refusal(region))
    assert _refusal(region, AvailabilityZoneIds="x-az1,x-az2") is None
    assert _refusal(region, CreateVpc="false") is None


def test_subnets_take_the_az_ids_when_given() -> None:
    resources = sam.translate(
        ROOT / "template.yaml", parameters={"TerminalImageUri": "x"}, region="us-east-1"
    ).template["Resources"]
    for index, subnet in enumerate(("PrivateSubnetA", "PrivateSubnetB")):
        properties = resources[subnet]["Properties"]
        assert properties["AvailabilityZoneId"] == {
            "Fn::If": [
                "HasAzIds",
                {"Fn::Select": [index, {"Ref": "AvailabilityZoneIds"}]},
                {"Ref": "AWS::NoValue"},
            ]
        }
        assert properties["AvailabilityZone"]["Fn::If"][0] == "HasAzIds"


def test_reserved_concurrency_needs_a_quota_of_181() -> None:
    # 81 reserved, and Lambda keeps 100 unreserved.
    assert (
        _refusal(account=preflight.Account(lambda_concurrency_quota=181), ReserveConcurrency="true") is None
    )
    refusal = _refusal(account=preflight.Account(lambda_concurrency_quota=180), ReserveConcurrency="true")
    assert "minimum value of [100]" in str(refusal)
