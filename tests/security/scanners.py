"""Runs checkov on template.yaml; shared by the test and bench/security.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from samcli.yamlhelper import yaml_parse

from tests.support import require_tool

ROOT = Path(__file__).resolve().parents[2]


def checkov_report() -> dict[str, Any]:
    beside = Path(sys.executable).parent / "checkov"  # where `make venv` links it
    checkov = (
        str(beside) if beside.exists() else require_tool("checkov", "scanning template.yaml (make venv)")
    )
    result = subprocess.run(
        [
            checkov,
            "-f",
            "template.yaml",
            "--framework",
            "cloudformation",
            "--quiet",
            "--compact",
            "-o",
            "json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    report = json.loads(result.stdout)
    return dict(report[0] if isinstance(report, list) else report)


def template_suppressions() -> list[tuple[str, str, str]]:
    """(resource, check id, comment) for every checkov skip in the template's Metadata."""
    template = yaml_parse((ROOT / "template.yaml").read_text())
    return [
        (logical_id, skip["id"], skip.get("comment", ""))
        for logical_id, resource in template["Resources"].items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
