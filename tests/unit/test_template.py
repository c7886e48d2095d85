"""The template and the workflow definition pass the linters a deploy would run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cloudide.offline import sam

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
