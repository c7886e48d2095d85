"""Fake command-line tools for the operator tests: `setup` must find, probe and call them like the real
Docker, Finch, SAM CLI and Python, and the tests must control which exist and how they answer."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudide.offline.stack import OfflineAws


@dataclass
class Toolbox:
    """A PATH of fake tools; every call is appended to `calls.log` as "name arg arg..."."""

    folder: Path

    @property
    def log(self) -> Path:
        return self.folder / "calls.log"

    def add(self, name: str, *, output: str = "", failing: str | None = None) -> None:
        """A tool printing `output`; exit 1 when its first argument is `failing`."""
        script = self.folder / name
        fail = f'[ "$1" = "{failing}" ] && exit 1\n' if failing else ""
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{self.log}"\n{fail}echo "{output}"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)

    def standard(self) -> Toolbox:
        self.add("docker", output="ok")
        self.add("sam", output="SAM CLI, version 1.170.0")
        self.add("python3.13", output="Python 3.13.5")
        return self

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def toolbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Toolbox:
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))  # only the fakes: no real docker, sam or python is found
    monkeypatch.chdir(tmp_path)  # the state file (.cloudide/) and .local-state/ land here
    return Toolbox(folder)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[OfflineAws]:
    """moto in this process: ECR, STS and CloudFormation answer `setup` as AWS would."""
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with OfflineAws() as offline:
        yield offline


def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An environment where boto3 finds no credentials anywhere (and does not wait for IMDS)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "missing-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "missing-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
