"""A container-like sandbox without Docker: bubblewrap with the local stack's file system layout, root with
full capabilities inside (as ECS Exec gives the wrapper), and the task definition's volumes made as Fargate
makes them from the Dockerfile's declarations (root:0755 unless the image declares the path a `VOLUME`).
Separate sandboxes sharing the same volume directories see the same tmux server, as successive ECS Exec
sessions in one container do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from samcli.yamlhelper import yaml_parse

from cloudide.localstack.sandbox import REPO, filesystem_args
from cloudide.localstack.volumes import MountPoint, declared_volumes, make_volumes
from tests.support import require_tool


def task_mount_points() -> list[MountPoint]:
    """The terminal container's mount points in template.yaml, as DescribeTaskDefinition gives them."""
    template: dict[str, Any] = yaml_parse((REPO / "template.yaml").read_text())
    container = template["Resources"]["TerminalTaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    mount_points = [
        {"sourceVolume": m["SourceVolume"], "containerPath": m["ContainerPath"]}
        for m in container["MountPoints"]
    ]
    return MountPoint.from_task_definition({"mountPoints": mount_points})


class Sandbox:
    def __init__(self, base: Path) -> None:
        self.bwrap = require_tool("bwrap", "sandboxed wrapper and entrypoint tests")
        require_tool("tmux", "the persistent shell")
        require_tool("setpriv", "the privilege drop")
        (base / "volumes").mkdir(parents=True)
        self.volumes = make_volumes(base / "volumes", task_mount_points(), declared_volumes())
        self.workspace = self.volumes["/workspace"]
        self.tmp = self.volumes["/tmp"]
        self.home = self.volumes["/home/dev"]
        self.socket = self.tmp / "cloudide-tmux" / "default"

    def command(self, *argv: str) -> list[str]:
        """The local stack's file system layout (cloudide.localstack.sandbox), with full capabilities."""
        return [self.bwrap, *filesystem_args(self.volumes), "--cap-add", "ALL", "--", *argv]

    def wrapper(self, *args: str) -> list[str]:
        return self.command("/opt/cloudide/terminal_image/cloudide-shell", *args)

    def wrapper_env(self) -> dict[str, str]:
        """What the exec agent's environment might hold: credentials the user must never see."""
        return {
            "PATH": "/usr/bin:/bin",
            "TERM": "xterm-256color",
            "CLOUDIDE_TMUX_CONF": "/opt/cloudide/terminal_image/tmux.conf",
            "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "AWS_SESSION_TOKEN": "token",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/abc",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.2/creds",
        }
