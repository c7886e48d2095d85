"""`cloudide setup`: from an AWS account to a deployed stack in one idempotent, resumable command.

prerequisites -> ECR repositories -> every catalog image built for the task architecture, pushed, its
digest recorded -> `sam build` -> `sam deploy` with the digests as parameters -> the API URL and next steps.

Re-running is cheap and changes nothing when nothing changed: repositories are compared with the wanted
settings, image tags are content-addressed (an image already in ECR is neither built nor pushed), and
`sam deploy` accepts an empty change set. Digests go to a state file as they are pushed, so a run that
stopped half-way picks up where it ended. `--dry-run` prints the same plan with the exact commands and
runs nothing but read-only AWS calls.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cloudide.catalog import IMAGE_DIR, REPO_ROOT, Catalog, load_catalog
from cloudide.deployment import OperatorError, Target, add_target_arguments, target_from
from cloudide.setup.prerequisites import BUILDERS, Toolchain, check_all
from cloudide.setup.registry import Registry, RepositoryChange, image_tag

STEPS = ("prerequisites", "repositories", "images", "deploy")
PLATFORMS = {"arm64": ("linux/arm64", "ARM64"), "x86_64": ("linux/amd64", "X86_64")}
STATE_DIR = Path(".cloudide")
_BUILD_TIMEOUT = 3600
_DEPLOY_TIMEOUT = 3600


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "setup",
        help="build and push the terminal images and deploy the stack to AWS",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_arguments(parser, local=False)
    parser.add_argument("--dry-run", action="store_true", help="print the plan and commands; change nothing")
    parser.add_argument(
        "--spot", action="store_true", help="Fargate Spot first (x86_64 images: Spot runs no ARM tasks)"
    )
    parser.add_argument(
        "--arch", choices=sorted(PLATFORMS), help="image CPU (default arm64; x86_64 with --spot)"
    )
    parser.add_argument("--builder", choices=BUILDERS, help="container builder (default: docker, else finch)")
    parser.add_argument(
        "--use-container",
        action="store_true",
        help="`sam build --use-container` (no local Python 3.13 needed)",
    )
    parser.add_argument("--config-env", default="default", help="samconfig.toml environment (default, prod)")
    parser.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra template parameter (repeatable), e.g. AccessPolicy='{...}'",
    )
    parser.add_argument("--until", choices=STEPS, default=STEPS[-1], help="stop after this step")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = Options(
        dry_run=args.dry_run,
        architecture=_architecture(args.arch, args.spot),
        spot=args.spot,
        builder=args.builder,
        use_container=args.use_container,
        config_env=args.config_env,
        config_overrides=_samconfig_overrides(args.config_env),
        overrides=_key_values(args.parameter, "--parameter"),
        until=args.until,
    )
    return Setup(target_from(args), options).run()


@dataclass(frozen=True)
class Options:
    dry_run: bool
    architecture: str  # "arm64" | "x86_64"
    spot: bool
    builder: str | None
    use_container: bool
    config_env: str
    config_overrides: dict[str, str]  # samconfig.toml's, which a command-line override would replace
    overrides: dict[str, str]
    until: str


@dataclass
class SetupState:
    """What earlier runs finished: pushed images by name (tag, digest) and the last deployed parameters."""

    path: Path
    images: dict[str, dict[str, str]] = field(default_factory=dict)
    deployed: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> SetupState:
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls(path)
        return cls(path, document.get("images", {}), document.get("deployed", {}))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"images": self.images, "deployed": self.deployed}, indent=2) + "\n")


class Setup:
    def __init__(
        self, target: Target, options: Options, *, catalog: Catalog | None = None, out: TextIO | None = None
    ) -> None:
        self._target = target
        self._options = options
        self._catalog = catalog or load_catalog()
        self._out = out or sys.stdout
        self._state = SetupState.load(STATE_DIR / f"setup-{target.stack_name}-{target.region}.json")

    def run(self) -> int:
        options, target = self._options, self._target
        mode = "dry run: read-only AWS calls, nothing changes" if options.dry_run else "changes are applied"
        self._say(
            f"cloudide setup: stack {target.stack_name} in {target.region}, {options.architecture} images ({mode})"
        )
        toolchain = self._prerequisites()
        registry = Registry(target.client("ecr"), account_id=toolchain.account_id, region=target.region)
        if self._step("repositories"):
            return 0
        repositories = self._repositories(registry)
        if self._step("images"):
            return 0
        image_uris = self._images(registry, repositories, toolchain)
        if self._step("deploy"):
            return 0
        self._deploy(toolchain, image_uris)
        return 0

    def _step(self, following: str) -> bool:
        """True when the run stops before `following` (--until)."""
        done = STEPS.index(following) > STEPS.index(self._options.until)
        if done:
            self._say(f"stopped after {self._options.until} (--until); run again without it to continue")
        return done

    def _prerequisites(self) -> Toolchain:
        self._say("[1/4] prerequisites")
        toolchain, problems = check_all(
            self._target, builder=self._options.builder, use_container=self._options.use_container
        )
        if toolchain is None:
            raise OperatorError("missing prerequisites:\n  - " + "\n  - ".join(problems))
        self._say(f"  account {toolchain.account_id}; builder {toolchain.builder}; SAM CLI {toolchain.sam}")
        return toolchain

    def _repositories(self, registry: Registry) -> dict[str, RepositoryChange]:
        self._say(f"[2/4] ECR repositories in {registry.host}")
        changes = {image.name: registry.plan(image.repository) for image in self._catalog.images}
        for change in changes.values():
            self._say(f"  {change.describe()}")
            if change.action != "unchanged" and not self._options.dry_run:
                registry.ensure(change)
        return changes

    def _images(
        self, registry: Registry, repositories: dict[str, RepositoryChange], toolchain: Toolchain
    ) -> dict[str, str]:
        platform = PLATFORMS[self._options.architecture][0]
        self._say(f"[3/4] images for {platform}")
        uris: dict[str, str] = {}
        logged_in = False
        for image in self._catalog.images:
            uri = repositories[image.name].uri
            tag = image_tag(IMAGE_DIR, image.target, self._options.architecture)
            recorded = self._state.images.get(image.name, {})
            digest = recorded.get("digest") if recorded.get("tag") == tag else None
            digest = digest or registry.digest(image.repository, tag)
            if digest:
                self._say(f"  {image.name}: {uri}:{tag} is in ECR ({digest}); nothing to build")
            else:
                self._say(f"  {image.name}: build target {image.target} and push {uri}:{tag}")
                if not logged_in:
                    self._login(registry, toolchain)
                    logged_in = True
                for command in _build_commands(toolchain.builder, platform, image.target, f"{uri}:{tag}"):
                    self._execute(command, timeout=_BUILD_TIMEOUT)
                digest = None if self._options.dry_run else registry.digest(image.repository, tag)
                if digest is None and not self._options.dry_run:
                    raise OperatorError(f"{uri}:{tag} was pushed but ECR does not list it; run setup again")
            uris[image.name] = f"{uri}@{digest or f'<digest of {image.name} after push>'}"
            self._say(f"    digest: {uris[image.name]}")
            if digest and not self._options.dry_run:
                self._state.images[image.name] = {"tag": tag, "digest": digest, "uri": uri}
                self._state.save()
        return uris

    def _login(self, registry: Registry, toolchain: Toolchain) -> None:
        if self._options.dry_run:
            command = _login_command(toolchain.builder, "AWS", registry.host)
            self._say(f"    $ {shlex.join(command)}   # password from ecr:GetAuthorizationToken")
            return
        user, password = registry.login()
        self._execute(_login_command(toolchain.builder, user, registry.host), timeout=120, input=password)

    def _deploy(self, toolchain: Toolchain, image_uris: dict[str, str]) -> None:
        options, target = self._options, self._target
        parameters = (
            options.config_overrides
            | {
                "TaskArchitecture": PLATFORMS[options.architecture][1],
                "UseFargateSpot": str(options.spot).lower(),
            }
            | {image.image_parameter: image_uris[image.name] for image in self._catalog.images}
            | options.overrides
        )
        self._say("[4/4] sam build and sam deploy")
        for name, value in parameters.items():
            self._say(f"  parameter {name}={value}")
        location = ["--region", target.region] + (
            ["--profile", target.session.profile_name] if _named_profile(target) else []
        )
        build = [toolchain.sam, "build", "--config-env", options.config_env]
        self._execute(build + (["--use-container"] if options.use_container else []), timeout=_BUILD_TIMEOUT)
        deploy = [
            toolchain.sam, "deploy", "--config-env", options.config_env, "--stack-name", target.stack_name,
            *location, "--no-confirm-changeset", "--no-fail-on-empty-changeset",
            "--parameter-overrides", *(f"{name}={value}" for name, value in parameters.items()),
        ]  # fmt: skip
        self._execute(deploy, timeout=_DEPLOY_TIMEOUT)
        if options.dry_run:
            self._say("then: the stack's outputs (ApiUrl, UserPoolId, UserPoolClientId) and the next steps")
            return
        self._state.deployed = parameters
        self._state.save()
        self._next_steps(target.outputs())

    def _next_steps(self, outputs: dict[str, str]) -> None:
        self._say(f"\nDeployed. API: {outputs.get('ApiUrl', '(no ApiUrl output)')}")
        pool = outputs.get("UserPoolId")
        flags = f"--stack {self._target.stack_name} --region {self._target.region}"
        steps = [
            f"create a user: aws cognito-idp admin-create-user --user-pool-id {pool} --username you@example.com"
            if pool
            else "users come from your existing Cognito user pool (ExistingUserPoolArn)",
            f"watch sessions: cloudide sessions --all {flags}; logs: cloudide logs SESSION {flags}",
            "run the first-deploy acceptance check: docs/operators.md",
        ]
        self._say("Next steps:\n" + "\n".join(f"  {n}. {step}" for n, step in enumerate(steps, 1)))

    def _execute(self, command: list[str], *, timeout: float, input: str | None = None) -> None:
        self._say(f"    $ {shlex.join(command)}")
        if self._options.dry_run:
            return
        self._out.flush()
        try:
            result = subprocess.run(
                command, cwd=REPO_ROOT, input=input, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as error:
            raise OperatorError(f"`{command[0]} {command[1]}` did not finish in {timeout:.0f} s") from error
        if result.returncode != 0:
            raise OperatorError(
                f"`{shlex.join(command[:2])}` failed (exit {result.returncode}): fix the problem above and run "
                "setup again; finished steps are skipped"
            )

    def _say(self, line: str) -> None:
        print(line, file=self._out, flush=True)


def _login_command(builder: str, user: str, host: str) -> list[str]:
    return [builder, "login", "--username", user, "--password-stdin", host]


def _build_commands(builder: str, platform: str, target: str, reference: str) -> list[list[str]]:
    context = str(IMAGE_DIR.relative_to(REPO_ROOT))
    if Path(builder).name == "docker":
        # One platform, no provenance attestation: ECR gets a plain image manifest, as Fargate expects.
        return [
            [builder, "buildx", "build", "--platform", platform, "--target", target, "--provenance=false",
             "--tag", reference, "--push", context],
        ]  # fmt: skip
    return [
        [builder, "build", "--platform", platform, "--target", target, "--tag", reference, context],
        [builder, "push", reference],
    ]


def _architecture(requested: str | None, spot: bool) -> str:
    if spot and requested == "arm64":
        raise OperatorError("Fargate Spot runs x86_64 tasks only: drop --arch arm64, or drop --spot")
    return requested or ("x86_64" if spot else "arm64")


def _key_values(items: list[str], option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise OperatorError(f"{option} {item!r}: write KEY=VALUE")
        pairs[key] = value
    return pairs


def _samconfig_overrides(config_env: str) -> dict[str, str]:
    """samconfig.toml's parameter_overrides for the environment: the command line replaces them, so
    setup passes them on alongside its own."""
    try:
        config: dict[str, Any] = tomllib.loads((REPO_ROOT / "samconfig.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise OperatorError(f"samconfig.toml: {error}") from error
    if config_env not in config:
        raise OperatorError(
            f"samconfig.toml has no environment {config_env!r}: choose one of {sorted(k for k in config if k != 'version')}"
        )
    text = config[config_env].get("deploy", {}).get("parameters", {}).get("parameter_overrides", "")
    return _key_values(shlex.split(text), "samconfig.toml parameter_overrides")


def _named_profile(target: Target) -> bool:
    return target.session.profile_name not in (None, "default")
