"""The Dockerfile, checked statically everywhere and built (with the sandbox assertions) where Docker runs."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from importlib.metadata import version
from pathlib import Path

import pexpect
import pytest

from tests.support import eventually

from .conftest import REPO
from .test_shell_wrapper import PROBE

IMAGE_DIR = REPO / "terminal_image"
DOCKERFILE = (IMAGE_DIR / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    """Arguments of every instruction called ``name`` (continuation lines joined)."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.*)$", joined, re.MULTILINE)]


def stages() -> dict[str, str]:
    """Each build stage's text by its name (catalog.json builds them by target)."""
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\w+)\s*$", DOCKERFILE, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def installed_packages() -> set[str]:
    (apt,) = [run for run in instructions("RUN") if "apt-get install" in run and "EXTRA_APT_PACKAGES" in run]
    words = apt.split("apt-get install", 1)[1].split("&&", 1)[0].split()
    return {w for w in words if not w.startswith("-") and not w.startswith("$")}


def test_base_image_is_pinned_to_a_version() -> None:
    (arg,) = [a for a in instructions("ARG") if a.startswith("BASE_IMAGE=")]
    assert re.fullmatch(r"BASE_IMAGE=python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", arg)


def test_runs_as_the_unprivileged_user_with_its_workspace() -> None:
    for name, text in stages().items():  # language stages install as root, then drop back
        assert re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)[-1] == "${USER_UID}:${USER_GID}", name
    assert "ARG USER_UID=1000" in DOCKERFILE and "ARG USER_GID=1000" in DOCKERFILE
    (setup,) = [run for run in instructions("RUN") if "useradd" in run]
    assert '--uid "${USER_UID}"' in setup and 'install -d -o "${USER_UID}"' in setup and "/workspace" in setup
    assert "find / -xdev -perm /6000 -type f -exec chmod a-s {} +" in setup  # no setuid binaries left
    assert "! command -v sudo" in setup  # the build fails if anything brought sudo in


def test_required_tools_are_installed_and_sudo_is_not() -> None:
    packages = installed_packages()
    assert {"bash", "tmux", "bsdutils", "coreutils", "util-linux", "tini", "git", "procps"} <= packages
    assert "sudo" not in packages


def test_wrapper_entrypoint_and_health_check_are_wired() -> None:
    assert "cloudide-shell /usr/local/bin/cloudide-shell" in instructions("COPY")
    assert "workspace_sync /opt/cloudide/lib/workspace_sync" in instructions("COPY")
    assert instructions("ENTRYPOINT") == ['["/usr/bin/tini", "-s", "--", "python3", "-m", "workspace_sync"]']
    assert instructions("CMD") == ['["run"]']
    (health,) = instructions("HEALTHCHECK")
    assert health.endswith('CMD ["python3", "-m", "workspace_sync", "health"]')
    for source in ("requirements.txt", "workspace_sync", "cloudide-shell", "tmux.conf"):
        assert (IMAGE_DIR / source).exists(), source
    assert {"org.opencontainers.image.title", "io.cloudide.variant"} <= set(
        re.findall(r"([\w.]+)=", " ".join(instructions("LABEL")))
    )
    assert {"BASE_IMAGE", "IMAGE_VARIANT", "EXTRA_APT_PACKAGES"} <= {
        a.split("=")[0] for a in instructions("ARG")
    }


def test_image_requirements_match_the_tested_versions() -> None:
    for line in (IMAGE_DIR / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, pinned = line.split("==")
            assert version(name) == pinned, f"{name}: image pins {pinned}, tests run {version(name)}"


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    result = subprocess.run(
        [hadolint, str(IMAGE_DIR / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _docker_daemon() -> str:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("no Docker daemon on this machine: the image build runs where one exists")
    return docker


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_built_image_gives_the_same_confined_shell(tmp_path: Path) -> None:
    docker = _docker_daemon()
    tag = f"cloudide-terminal-test:{uuid.uuid4().hex[:8]}"
    subprocess.run([docker, "build", "--target", "base", "-t", tag, str(IMAGE_DIR)], check=True, timeout=900)
    name = f"cloudide-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [
            docker,
            "run",
            "-d",
            "--name",
            name,
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            "/workspace:uid=1000",
            "--entrypoint",
            "sleep",
            tag,
            "600",
        ],
        check=True,
        timeout=60,
    )
    try:
        subprocess.run(
            [docker, "exec", "-i", "-u", "0", name, "tee", "/tmp/probe.sh"],
            input=PROBE.encode(),
            capture_output=True,
            check=True,
            timeout=30,
        )
        shell = pexpect.spawn(
            docker,
            [
                "exec",
                "-it",
                "-u",
                "0",
                "-e",
                "AWS_SECRET_ACCESS_KEY=leak",
                name,
                "/usr/local/bin/cloudide-shell",
            ],
            timeout=30,
            dimensions=(40, 160),
        )
        shell.sendline("bash /tmp/probe.sh > /tmp/probe.out 2>&1; echo PRO''BED")
        shell.expect_exact("PROBED")
        out = eventually(
            lambda: (
                subprocess.run(
                    [docker, "exec", name, "cat", "/tmp/probe.out"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                ).stdout
            )
        )
        shell.close(force=True)
        assert "uid=1000 gid=1000 groups=1000" in out
        assert "NoNewPrivs=1" in out and "CapEff=0000000000000000" in out and "CapBnd=0000000000000000" in out
        assert "sudo=absent" in out and "wrote=" not in out and "aws_vars=0" in out
    finally:
        subprocess.run([docker, "rm", "-f", name], capture_output=True, timeout=60)
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True, timeout=60)
