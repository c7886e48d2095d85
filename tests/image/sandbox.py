"""A container-like sandbox without Docker: bubblewrap with a read-only root built from the host's
/usr and /etc, a private writable /workspace and /tmp, and root with full capabilities inside (as ECS
Exec gives the wrapper). Separate sandboxes sharing the same /workspace and /tmp directories see the
same tmux server, as successive ECS Exec sessions in one container do.
"""

from __future__ import annotations

import os
from pathlib import Path

from cloudide.localstack.sandbox import filesystem_args
from tests.support import require_tool


class Sandbox:
    def __init__(self, base: Path) -> None:
        self.bwrap = require_tool("bwrap", "sandboxed wrapper and entrypoint tests")
        require_tool("tmux", "the persistent shell")
        require_tool("setpriv", "the privilege drop")
        self.workspace = base / "workspace"
        self.tmp = base / "tmp"
        self.workspace.mkdir(parents=True)
        self.tmp.mkdir()
        os.chown(self.workspace, 1000, 1000)
        self.tmp.chmod(0o1777)
        self.socket = self.tmp / "cloudide-tmux" / "default"

    def command(self, *argv: str) -> list[str]:
        """The local stack's file system layout (cloudide.localstack.sandbox), with full capabilities."""
        return [self.bwrap, *filesystem_args(self.workspace, self.tmp), "--cap-add", "ALL", "--", *argv]

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
