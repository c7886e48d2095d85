"""The task definition's volumes as Fargate makes them: root:0755 unless the image declares the path a
`VOLUME`, then a copy of the image's directory. The image's user must be able to write its workspace,
/tmp and $HOME, as the sync agent, tmux, npm, git, bash and editors do."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cloudide.localstack.volumes import ImageDirectory, MountPoint, declared_volumes, make_volumes

from .sandbox import Sandbox, task_mount_points

pytestmark = pytest.mark.sandbox

AS_USER = ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "--no-new-privs", "--"]
USER_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/home/dev", "LANG": "C.UTF-8"}


def as_user(box: Sandbox, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        box.command(*AS_USER, "/bin/bash", "-c", script),
        env=USER_ENV, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.stand_in_rule("fargate-volume-ownership")
def test_an_undeclared_task_volume_is_root_0755_and_a_declared_one_is_the_images_copy(tmp_path: Path) -> None:
    declared = {"/home/dev": ImageDirectory("/home/dev", 1000, 1000, 0o750, skeleton=Path("/etc/skel"))}
    volumes = make_volumes(tmp_path, [MountPoint("data", "/data"), MountPoint("home", "/home/dev")], declared)
    data = volumes["/data"].stat()
    assert (data.st_uid, data.st_gid, oct(data.st_mode & 0o7777)) == (0, 0, "0o755")
    assert not list(volumes["/data"].iterdir()), "an undeclared volume starts empty"
    home = volumes["/home/dev"]
    assert (home.stat().st_uid, oct(home.stat().st_mode & 0o7777)) == (1000, "0o750")
    assert (home / ".bashrc").read_bytes() == Path("/etc/skel/.bashrc").read_bytes()
    assert (home / ".bashrc").stat().st_uid == 1000


@pytest.mark.stand_in_rule("fargate-volume-ownership")
def test_every_volume_the_user_writes_is_declared_after_its_owner_and_mode_are_set() -> None:
    declared = declared_volumes()
    mounted = {mount.path for mount in task_mount_points()}
    assert {"/workspace", "/tmp", "/home/dev"} <= mounted
    assert declared["/workspace"] == ImageDirectory("/workspace", 1000, 1000, 0o755)
    assert declared["/home/dev"] == ImageDirectory("/home/dev", 1000, 1000, 0o755, skeleton=Path("/etc/skel"))
    assert declared["/tmp"] == ImageDirectory("/tmp", 0, 0, 0o1777)
    assert set(declared) <= mounted, "a VOLUME no task volume is mounted at would be an anonymous volume"


@pytest.mark.stand_in_rule("fargate-volume-ownership")
def test_the_user_writes_workspace_tmp_and_home_as_npm_git_bash_and_editors_do(tmp_path: Path) -> None:
    box = Sandbox(tmp_path)
    result = as_user(
        box,
        "set -e; cd /workspace; mkdir .cloudide-sync; mkdir -m 700 /tmp/cloudide-tmux;"
        ' mkdir pkg; echo \'{"name": "probe", "version": "1.0.0"}\' > pkg/package.json;'
        " npm pack ./pkg --silent >/dev/null; npm cache add ./probe-1.0.0.tgz --offline --silent;"
        " git config --global user.name Dev;"
        " HISTFILE=~/.bash_history bash -c 'set -o history; history -s echo hi; history -w';"
        " printf draft > ~/.notes.txt.swp && mv ~/.notes.txt.swp ~/notes.txt; echo ok",
    )
    assert result.stdout.strip() == "ok", result.stderr
    assert "name = Dev" in (box.home / ".gitconfig").read_text()
    assert "echo hi" in (box.home / ".bash_history").read_text()
    assert (box.home / "notes.txt").read_text() == "draft"
    cached = [path for path in (box.home / ".npm" / "_cacache").rglob("*") if path.is_file()]
    assert cached and all(path.stat().st_uid == 1000 for path in cached), "npm's cache is in $HOME"
