"""`cloudide setup` against moto's ECR, STS and CloudFormation with fake builders: the plan, the
repositories it creates, resuming, and one clear message per missing prerequisite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cloudide.catalog import IMAGE_DIR, load_catalog
from cloudide.cli import main
from cloudide.offline.stack import OfflineAws
from cloudide.setup.registry import LIFECYCLE_POLICY, image_tag
from tests.operator.conftest import Toolbox, no_credentials

CATALOG = load_catalog()
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                       "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1,
                                  "digest": "sha256:" + "0" * 64}, "layers": []})  # fmt: skip


def setup(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    code = main(["setup", "--region", "us-east-1", *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def push(aws: OfflineAws, image_name: str, architecture: str = "arm64") -> str:
    """What a finished build and push leaves in ECR: the content-addressed tag; returns the digest."""
    image = next(i for i in CATALOG.images if i.name == image_name)
    ecr = aws.client("ecr")
    tag = image_tag(IMAGE_DIR, image.target, architecture)
    return str(
        ecr.put_image(repositoryName=image.repository, imageManifest=MANIFEST, imageTag=tag)["image"][
            "imageId"
        ]["imageDigest"]
    )


def test_dry_run_names_every_repository_image_digest_and_parameter(
    aws: OfflineAws, toolbox: Toolbox, capsys: pytest.CaptureFixture[str]
) -> None:
    toolbox.standard()

    code, out, err = setup(capsys, "--dry-run")

    assert code == 0, err
    deploy = next(line for line in out.splitlines() if "sam deploy --config-env" in line)
    for image in CATALOG.images:
        uri = f"{REGISTRY}/{image.repository}"
        assert f"{image.repository}: create (scan on push, IMMUTABLE tags, lifecycle policy)" in out
        tag = image_tag(IMAGE_DIR, image.target, "arm64")
        assert (
            f"--platform linux/arm64 --target {image.target} --provenance=false --tag {uri}:{tag} --push"
            in out
        )
        assert f"{image.image_parameter}={uri}@<digest of {image.name} after push>" in deploy
    assert "--stack-name cloudide-terminals-dev" in deploy and "--no-fail-on-empty-changeset" in deploy
    assert "TaskArchitecture=ARM64" in deploy and "UseFargateSpot=false" in deploy
    assert "Stage=dev" in deploy  # samconfig.toml's overrides survive the command line's
    assert f"docker login --username AWS --password-stdin {REGISTRY}" in out
    assert "sam build --config-env default" in out
    # Nothing changed: no repository, no build, no deploy, no state.
    assert aws.client("ecr").describe_repositories()["repositories"] == []
    assert [
        call for call in toolbox.calls() if not call.endswith(("info", "buildx version", "--version"))
    ] == []
    assert not Path(".cloudide").exists()


def test_spot_builds_x86_images(
    aws: OfflineAws, toolbox: Toolbox, capsys: pytest.CaptureFixture[str]
) -> None:
    toolbox.standard()

    code, out, _ = setup(capsys, "--dry-run", "--spot")

    assert code == 0
    assert "--platform linux/amd64" in out and "linux/arm64" not in out
    assert "TaskArchitecture=X86_64" in out and "UseFargateSpot=true" in out
    code, _, err = setup(capsys, "--dry-run", "--spot", "--arch", "arm64")
    assert code == 2 and "Fargate Spot runs x86_64 tasks only" in err


def test_repositories_are_created_once_with_the_release_settings(
    aws: OfflineAws, toolbox: Toolbox, capsys: pytest.CaptureFixture[str]
) -> None:
    toolbox.standard()
    ecr = aws.client("ecr")

    code, out, err = setup(capsys, "--until", "repositories")

    assert code == 0, err
    repositories = {r["repositoryName"]: r for r in ecr.describe_repositories()["repositories"]}
    assert sorted(repositories) == sorted(image.repository for image in CATALOG.images)
    for name, repository in repositories.items():
        assert repository["imageScanningConfiguration"]["scanOnPush"] is True
        assert repository["imageTagMutability"] == "IMMUTABLE"
        assert (
            json.loads(ecr.get_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"])
            == LIFECYCLE_POLICY
        )
    assert "stopped after repositories" in out

    # Again: nothing is created or changed.
    created = {name: r["createdAt"] for name, r in repositories.items()}
    code, out, _ = setup(capsys, "--until", "repositories")
    assert code == 0
    assert out.count("exists with the right settings") == len(CATALOG.images) and ": create" not in out
    assert {
        r["repositoryName"]: r["createdAt"] for r in ecr.describe_repositories()["repositories"]
    } == created


def test_a_drifted_repository_is_put_back(
    aws: OfflineAws, toolbox: Toolbox, capsys: pytest.CaptureFixture[str]
) -> None:
    toolbox.standard()
    ecr = aws.client("ecr")
    name = CATALOG.images[0].repository
    ecr.create_repository(repositoryName=name)  # mutable tags, no scanning, no lifecycle policy

    code, out, _ = setup(capsys, "--until", "repositories")

    assert code == 0
    assert f"{name}: update scan on push, IMMUTABLE tags, lifecycle policy" in out
    (repository,) = ecr.describe_repositories(repositoryNames=[name])["repositories"]
    assert (
        repository["imageTagMutability"] == "IMMUTABLE"
        and repository["imageScanningConfiguration"]["scanOnPush"]
    )


def test_a_full_run_deploys_the_pushed_digests_and_a_second_run_builds_nothing(
    aws: OfflineAws, toolbox: Toolbox, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given: the images of an earlier, interrupted run are in ECR, and the stack exists with its outputs.
    toolbox.standard()
    assert setup(capsys, "--until", "repositories")[0] == 0
    digests = {image.name: push(aws, image.name) for image in CATALOG.images}
    aws.client("cloudformation").create_stack(
        StackName="cloudide-terminals-dev",
        TemplateBody=json.dumps({
            "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {"ApiUrl": {"Value": "https://api.example/dev"}, "UserPoolId": {"Value": "us-east-1_pool"}},
        }),
    )  # fmt: skip

    # When
    code, out, err = setup(capsys)

    # Then: no build, the digests go to sam deploy, and the outputs are printed with next steps.
    assert code == 0, err
    calls = toolbox.calls()
    assert not [c for c in calls if "build --platform" in c or c.startswith("docker push")]
    (deploy,) = [c for c in calls if c.startswith("sam deploy")]
    for image in CATALOG.images:
        assert f"{image.image_parameter}={REGISTRY}/{image.repository}@{digests[image.name]}" in deploy
    assert "API: https://api.example/dev" in out and "--user-pool-id us-east-1_pool" in out
    state = json.loads(next(Path(".cloudide").glob("setup-*.json")).read_text())
    assert {name: entry["digest"] for name, entry in state["images"].items()} == digests

    code, out, _ = setup(capsys)
    assert code == 0 and out.count("nothing to build") == len(CATALOG.images)


def test_an_image_missing_from_ecr_is_built_and_pushed(
    aws: OfflineAws, toolbox: Toolbox, capsys: pytest.CaptureFixture[str]
) -> None:
    toolbox.standard()
    assert setup(capsys, "--until", "repositories")[0] == 0

    code, _, err = setup(capsys, "--until", "images")

    # The fake docker pushes nothing, so ECR does not list the tag: setup says so instead of deploying.
    assert code == 2 and "was pushed but ECR does not list it" in err
    calls = toolbox.calls()
    assert any(c.startswith(f"docker login --username AWS --password-stdin {REGISTRY}") for c in calls)
    assert any(c.startswith("docker buildx build --platform linux/arm64 --target base") for c in calls)


# Missing prerequisites: one message each, exit 2, no traceback ------------------------------------------


def assert_one_problem(code: int, err: str, text: str) -> None:
    assert code == 2, err
    assert err.count("\n  - ") == 1, err
    assert text in err and "Traceback" not in err


def test_no_credentials(
    toolbox: Toolbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toolbox.standard()
    no_credentials(monkeypatch, tmp_path)

    code, _, err = setup(capsys, "--dry-run")

    assert_one_problem(code, err, "no AWS credentials found: run `aws configure`")


def test_no_container_builder(aws: OfflineAws, toolbox: Toolbox, capsys: pytest.CaptureFixture[str]) -> None:
    toolbox.add("sam", output="SAM CLI, version 1.170.0")
    toolbox.add("python3.13", output="Python 3.13.5")

    code, _, err = setup(capsys, "--dry-run")

    assert_one_problem(code, err, "no container builder: install Docker")


def test_a_docker_without_its_daemon(
    aws: OfflineAws, toolbox: Toolbox, capsys: pytest.CaptureFixture[str]
) -> None:
    toolbox.standard()
    toolbox.add("docker", failing="info")

    assert_one_problem(*setup(capsys, "--dry-run")[::2], "its engine does not answer")


def test_finch_is_used_when_docker_is_absent(
    aws: OfflineAws, toolbox: Toolbox, capsys: pytest.CaptureFixture[str]
) -> None:
    toolbox.standard()
    (toolbox.folder / "docker").unlink()
    toolbox.add("finch", output="ok")

    code, out, _ = setup(capsys, "--dry-run")

    assert code == 0
    assert "finch build --platform linux/arm64 --target node" in out and "finch push" in out


def test_wrong_python(aws: OfflineAws, toolbox: Toolbox, capsys: pytest.CaptureFixture[str]) -> None:
    toolbox.standard()
    (toolbox.folder / "python3.13").unlink()
    toolbox.add("python3", output="Python 3.11.2")

    code, _, err = setup(capsys, "--dry-run")

    assert_one_problem(
        code, err, "`sam build` needs Python 3.13 on PATH (the functions' runtime); python3 is 3.11"
    )
    assert "--use-container" in err
    assert setup(capsys, "--dry-run", "--use-container")[0] == 0


def test_no_sam_cli(aws: OfflineAws, toolbox: Toolbox, capsys: pytest.CaptureFixture[str]) -> None:
    toolbox.standard()
    (toolbox.folder / "sam").unlink()

    assert_one_problem(*setup(capsys, "--dry-run")[::2], "SAM CLI not found: install it")


def test_the_installed_command_prints_no_traceback(toolbox: Toolbox, tmp_path: Path) -> None:
    toolbox.standard()
    environment = {"PATH": str(toolbox.folder), "HOME": str(tmp_path), "AWS_EC2_METADATA_DISABLED": "true",
                   "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}  # fmt: skip
    command = [sys.executable, "-m", "cloudide.cli", "setup", "--dry-run", "--region", "us-east-1"]

    result = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )

    assert result.returncode == 2
    assert (
        result.stderr.startswith("cloudide setup: missing prerequisites:")
        and "Traceback" not in result.stderr
    )


def test_the_samconfig_environment_supplies_its_own_parameters(
    aws: OfflineAws, toolbox: Toolbox, capsys: pytest.CaptureFixture[str]
) -> None:
    toolbox.standard()

    code, out, _ = setup(capsys, "--dry-run", "--config-env", "prod", "--parameter", "SessionsPerUser=1")

    deploy = next(line for line in out.splitlines() if "sam deploy --config-env prod" in line)
    assert code == 0
    assert "Stage=prod" in deploy and "LogRetentionDays=365" in deploy
    assert "SessionsPerUser=1" in deploy and "SessionsPerUser=3" not in deploy  # --parameter wins
    code, _, err = setup(capsys, "--dry-run", "--config-env", "staging")
    assert code == 2 and "samconfig.toml has no environment 'staging'" in err
