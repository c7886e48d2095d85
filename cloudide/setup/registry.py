"""The ECR side of `setup`: one repository per catalog image, with the settings a release needs.

Scan on push (every image is checked for CVEs), IMMUTABLE tags (a tag names one image forever, so a
deployed digest can never be swapped under a running task definition) and a lifecycle policy (untagged
layers go after a day, only the newest images stay). Tags are content-addressed (see `image_tag`): an
unchanged build context is never built or pushed twice, which makes re-running setup cheap.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

KEEP_IMAGES = 30
LIFECYCLE_POLICY: dict[str, Any] = {
    "rules": [
        {
            "rulePriority": 1,
            "description": "untagged images (superseded pushes) go after a day",
            "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1},
            "action": {"type": "expire"},
        },
        {
            "rulePriority": 2,
            "description": f"keep the {KEEP_IMAGES} newest images",
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": KEEP_IMAGES},
            "action": {"type": "expire"},
        },
    ]
}  # fmt: skip
_IGNORED = {"__pycache__", ".pytest_cache", ".mypy_cache"}


@dataclass(frozen=True)
class RepositoryChange:
    """What ensuring one repository does: `create`, `update` (naming the drifted settings) or nothing."""

    name: str
    uri: str
    action: str  # "create" | "update" | "unchanged"
    fixes: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.action == "create":
            return f"{self.name}: create (scan on push, IMMUTABLE tags, lifecycle policy)"
        if self.action == "update":
            return f"{self.name}: update {', '.join(self.fixes)}"
        return f"{self.name}: exists with the right settings"


def image_tag(context: Path, target: str, architecture: str) -> str:
    """A tag that changes exactly when the image would: the build context's content, stage and CPU."""
    digest = hashlib.sha256(f"{target}\0{architecture}\0".encode())
    for path in sorted(p for p in context.rglob("*") if p.is_file() and not _IGNORED & set(p.parts)):
        digest.update(str(path.relative_to(context)).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{target}-{architecture}-{digest.hexdigest()[:16]}"


class Registry:
    def __init__(self, ecr: Any, *, account_id: str, region: str) -> None:
        self._ecr = ecr
        self.host = f"{account_id}.dkr.ecr.{region}.amazonaws.com"

    def plan(self, name: str) -> RepositoryChange:
        try:
            (repository,) = self._ecr.describe_repositories(repositoryNames=[name])["repositories"]
        except ClientError as error:
            if _code(error) != "RepositoryNotFoundException":
                raise
            return RepositoryChange(name, f"{self.host}/{name}", "create")
        fixes = []
        if not repository.get("imageScanningConfiguration", {}).get("scanOnPush"):
            fixes.append("scan on push")
        if repository.get("imageTagMutability") != "IMMUTABLE":
            fixes.append("IMMUTABLE tags")
        if self._lifecycle_policy(name) != LIFECYCLE_POLICY:
            fixes.append("lifecycle policy")
        return RepositoryChange(
            name, repository["repositoryUri"], "update" if fixes else "unchanged", tuple(fixes)
        )

    def ensure(self, change: RepositoryChange) -> None:
        if change.action == "create":
            self._ecr.create_repository(
                repositoryName=change.name,
                imageScanningConfiguration={"scanOnPush": True},
                imageTagMutability="IMMUTABLE",
                encryptionConfiguration={"encryptionType": "AES256"},
                tags=[{"Key": "created-by", "Value": "cloudide-setup"}],
            )
        if "scan on push" in change.fixes:
            self._ecr.put_image_scanning_configuration(
                repositoryName=change.name, imageScanningConfiguration={"scanOnPush": True}
            )
        if "IMMUTABLE tags" in change.fixes:
            self._ecr.put_image_tag_mutability(repositoryName=change.name, imageTagMutability="IMMUTABLE")
        if change.action == "create" or "lifecycle policy" in change.fixes:
            self._ecr.put_lifecycle_policy(
                repositoryName=change.name, lifecyclePolicyText=json.dumps(LIFECYCLE_POLICY)
            )

    def digest(self, repository: str, tag: str) -> str | None:
        """The digest ECR holds for `tag`, or None if it was never pushed (or the repository is new)."""
        try:
            images = self._ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
        except ClientError as error:
            if _code(error) in ("ImageNotFoundException", "RepositoryNotFoundException"):
                return None
            raise
        return str(images["imageDetails"][0]["imageDigest"])

    def login(self) -> tuple[str, str]:
        """(user, password) for `docker login` to this registry (valid 12 hours)."""
        token = self._ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
        user, _, password = base64.b64decode(token).decode().partition(":")
        return user, password

    def _lifecycle_policy(self, name: str) -> Any:
        try:
            return json.loads(self._ecr.get_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"])
        except ClientError as error:
            if _code(error) != "LifecyclePolicyNotFoundException":
                raise
            return None


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
