"""What `cloudide setup` needs on this machine and in the account, checked before anything changes.

Each check returns the problem as one actionable sentence (what is missing, how to get it), never an
exception: the operator sees every missing piece at once, and no traceback.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from cloudide.deployment import Target

BUILDERS = ("docker", "finch")
SAM_PYTHON = (3, 13)  # the functions' runtime (template.yaml Globals); `sam build` needs it on PATH
_PYTHONS = (f"python{SAM_PYTHON[0]}.{SAM_PYTHON[1]}", "python3", "python")
_PROBE_TIMEOUT = 30


@dataclass(frozen=True)
class Toolchain:
    """The tools found: the container builder's executable, SAM CLI and the account id."""

    builder: str
    sam: str
    account_id: str


def check_aws(target: Target) -> tuple[str | None, str | None]:
    """(account id, problem): credentials that AWS accepts, in a Region."""
    if target.session.get_credentials() is None:
        return None, (
            "no AWS credentials found: run `aws configure` (or `aws sso login --profile NAME`) "
            "and pass --profile NAME, or set AWS_PROFILE"
        )
    try:
        return str(target.client("sts").get_caller_identity()["Account"]), None
    except NoCredentialsError:
        return (
            None,
            "no AWS credentials found: run `aws configure` and pass --profile NAME, or set AWS_PROFILE",
        )
    except ClientError as error:
        message = error.response.get("Error", {}).get("Message", str(error))
        return (
            None,
            f"AWS refused the credentials ({message}): refresh them (`aws sso login`) or pick --profile",
        )
    except BotoCoreError as error:
        return None, f"could not reach AWS in {target.region}: {error}"


def check_builder(preferred: str | None) -> tuple[str | None, str | None]:
    """(executable, problem): Docker or Finch, installed and with its engine answering."""
    names = (preferred,) if preferred else BUILDERS
    found = next((path for name in names if (path := shutil.which(name))), None)
    if found is None:
        return None, (
            f"no container builder: install Docker (https://docs.docker.com/get-docker/) or Finch "
            f"(https://runfinch.com/) and put `{' or '.join(names)}` on PATH"
        )
    if _run([found, "info"]) is None:
        return None, (
            f"{found} is installed but its engine does not answer (`{found} info` failed): start Docker "
            "Desktop or the docker service, or `finch vm start`"
        )
    if found.endswith("docker") and _run([found, "buildx", "version"]) is None:
        return None, f"{found} has no buildx plugin (`docker buildx version` failed): install docker-buildx"
    return found, None


def check_sam() -> tuple[str | None, str | None]:
    sam = shutil.which("sam")
    if sam is None or _run([sam, "--version"]) is None:
        return None, (
            "SAM CLI not found: install it (`pip install aws-sam-cli`, or see "
            "https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/install-sam-cli.html)"
        )
    return sam, None


def check_python(use_container: bool) -> str | None:
    """`sam build` builds the functions with a local Python of the runtime's version."""
    if use_container:
        return None
    wanted = ".".join(map(str, SAM_PYTHON))
    found: list[str] = []
    for name in _PYTHONS:
        path = shutil.which(name)
        output = _run([path, "--version"]) if path else None
        match = re.search(r"Python (\d+)\.(\d+)", output or "")
        if match and (int(match.group(1)), int(match.group(2))) == SAM_PYTHON:
            return None
        if match:
            found.append(f"{name} is {match.group(1)}.{match.group(2)}")
    return (
        f"`sam build` needs Python {wanted} on PATH (the functions' runtime); "
        f"{'; '.join(found) or 'no python found'}: install Python {wanted}, or pass --use-container "
        "to build inside SAM's build image (needs Docker)"
    )


def check_all(
    target: Target, *, builder: str | None, use_container: bool
) -> tuple[Toolchain | None, list[str]]:
    account_id, aws_problem = check_aws(target)
    builder_path, builder_problem = check_builder(builder)
    sam, sam_problem = check_sam()
    problems = [p for p in (aws_problem, builder_problem, sam_problem, check_python(use_container)) if p]
    if problems or not (account_id and builder_path and sam):
        return None, problems
    return Toolchain(builder=builder_path, sam=sam, account_id=account_id), []


def _run(command: list[str]) -> str | None:
    """The command's output, or None when it is missing, fails or hangs."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=_PROBE_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (result.stdout + result.stderr) if result.returncode == 0 else None
