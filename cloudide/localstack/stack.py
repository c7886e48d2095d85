"""The whole system on one machine: the template on a local AWS, the REST API, sandboxed tasks, the page.

Start order is dependency order, and every step says what it did and how long it took: the local AWS with
``template.yaml`` deployed through the same offline SAM translation the tests use (moto as a server, so
the sandboxes' sync agents reach its S3 over HTTP), the task runner (RunTask starts the terminal image's
entrypoint in a sandbox), the SSM-protocol peer that serves ECS Exec into those sandboxes, the REST API
(API Gateway proxy events into the deployed API function) and the browser gateway, which obtains its data
channels from the REST API exactly as it does in front of a real deployment. Shutdown runs in reverse and
stops every task the way ECS does, so each workspace is flushed to the local S3 before anything exits.
EventBridge schedules (the reconciler's) fire here as on AWS, at their period times the time scale.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from botocore.config import Config
from botocore.exceptions import ReadTimeoutError

from cloudide.localstack.persistence import Persistence
from cloudide.localstack.rest_api import (
    INTEGRATION_TIMEOUT_S,
    LocalRestApi,
    RestApiServer,
    gateway_responses_from_template,
    routes_from_template,
)
from cloudide.localstack.runner import LocalTaskRunner
from cloudide.localstack.schedules import Schedules
from cloudide.offline import ssm_sessions
from cloudide.offline.clock import ScaledClock
from cloudide.offline.stack import DeployedStack, OfflineAws
from cloudide.transport.gateway import Gateway
from cloudide.transport.peer import LocalPeer
from cloudide.transport.sessions_api import SessionsApi

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
STACK_NAME = "cloudide-local"
LOCAL_IMAGE = "local/cloudide-terminal:dev"
SETTLE_TIMEOUT_S = 60.0
# The functions terminal tasks call: they check the caller's presigned STS URL, which locally points here.
TASK_FUNCTIONS = ("WorkspaceCredentialsFunction", "UsageReportFunction")
"""How long shutdown waits for the control plane to close the records of the tasks it stopped."""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class LocalStackConfig:
    host: str = "127.0.0.1"
    api_port: int = 3000
    gateway_port: int = 8080
    aws_port: int = 0  # 0: any free port
    state_dir: Path = Path(".local-state")
    persist: bool = False
    unsandboxed: bool = False  # plain processes when bubblewrap is unavailable (--unsandboxed)
    parameters: tuple[tuple[str, str], ...] = ()  # template parameter overrides
    time_scale: float = 1.0  # < 1 compresses the control plane's time (timeouts, deadlines) for tests
    verbose: bool = False  # the functions' INFO logs and metrics on stdout


@dataclass(frozen=True)
class Endpoints:
    """Where everything listens; written to ``<state>/stack.json`` for the operator commands."""

    stack_name: str
    region: str
    aws: str
    api: str
    gateway: str

    def as_json(self) -> dict[str, str]:
        return {
            "stackName": self.stack_name,
            "region": self.region,
            "endpointUrl": self.aws,
            "apiUrl": self.api,
            "gatewayUrl": self.gateway,
        }


class LocalStack:
    """Owns every part of the local stack; ``async with LocalStack(config) as stack`` runs it."""

    def __init__(self, config: LocalStackConfig, progress: Progress = print) -> None:
        self.config = config
        self._say = progress
        self.state_dir = config.state_dir.resolve()
        self.aws: OfflineAws | None = None
        self.runner: LocalTaskRunner | None = None
        self.schedules: Schedules | None = None
        self.peer: LocalPeer | None = None
        self.rest_api: RestApiServer | None = None
        self.gateway: Gateway | None = None
        self.endpoints: Endpoints | None = None
        self._persistence: Persistence | None = None
        self._clock_patch: Any = None

    @property
    def stack(self) -> DeployedStack:
        assert self.aws is not None and self.aws.stack is not None, "the local stack is not started"
        return self.aws.stack

    async def __aenter__(self) -> LocalStack:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        gateway_origin = f"http://{self.config.host}:{self.config.gateway_port}"
        parameters = {
            "TerminalImageUri": LOCAL_IMAGE,
            "CorsAllowOrigin": f"'{gateway_origin}'",
            **dict(self.config.parameters),
        }
        with self._step(f"local AWS with {TEMPLATE.name} deployed as stack {STACK_NAME}"):
            self.aws = OfflineAws(
                TEMPLATE,
                parameters=parameters,
                stack_name=STACK_NAME,
                server=True,
                port=self.config.aws_port or None,
                exec_session_factory=self._exec_session,
                wait_scale=self.config.time_scale,
            )
            await loop.run_in_executor(None, self.aws.start)
        if self.config.time_scale != 1.0:
            self._compress_time(self.config.time_scale)
        self._configure_functions()
        if self.config.persist:
            self._persistence = Persistence(self.aws, self.state_dir / "persist")
            with self._step("restoring persisted workspaces and sessions"):
                restored = await loop.run_in_executor(None, self._persistence.restore)
            self._say(f"  restored {restored.objects} objects and {restored.sessions} session records")
        with self._step("task runner (RunTask starts a sandboxed terminal)"):
            self.runner = LocalTaskRunner(
                self.aws,
                self.stack.outputs["ClusterName"],
                state_dir=self.state_dir / "tasks",
                time_scale=self.config.time_scale,
                isolation="auto" if self.config.unsandboxed else "bubblewrap",
            )
            self.runner.start()
        self._say(f"  isolation: {self.runner.isolation}")
        if self.runner.warning:
            self._say(f"  !! {self.runner.warning}")
        self.schedules = Schedules(self.aws, time_scale=self.config.time_scale).start()
        for schedule in self.schedules.schedules:
            self._say(f"  schedule {schedule.rule}: every {schedule.period_s:g} s")
        with self._step("ECS Exec peer (SSM data channel)"):
            self.peer = LocalPeer()
            await self.peer.start()
            ssm_sessions.set_terminator(self.peer.terminate)
        with self._step("REST API"), _listening("the REST API", self.config.host, self.config.api_port):
            self.rest_api = RestApiServer(self._rest_api(), self.config.host, self.config.api_port).start()
        with (
            self._step("browser gateway"),
            _listening("the page", self.config.host, self.config.gateway_port),
        ):
            api = SessionsApi(self.rest_api.url)
            self.gateway = Gateway(
                api.connector,
                reader_factory=api.reader,  # a joining viewer opens no exec session
                host=self.config.host,
                port=self.config.gateway_port,
                api_url=self.rest_api.url,
            )
            await self.gateway.start()
        assert self.aws.endpoint_url is not None
        self.endpoints = Endpoints(
            stack_name=STACK_NAME,
            region=self.aws.region,
            aws=self.aws.endpoint_url,
            api=self.rest_api.url,
            gateway=self.gateway.url,
        )
        (self.state_dir / "stack.json").write_text(json.dumps(self.endpoints.as_json(), indent=2) + "\n")
        self.rest_api.api.ready.set()

    async def close(self) -> None:
        """Reverse order; each part is closed even if an earlier one fails to."""
        loop = asyncio.get_running_loop()
        if self.rest_api is not None:
            self.rest_api.api.ready.clear()
        if self.gateway is not None:
            with self._step("closing the browser gateway"):
                await self.gateway.close()
        if self.schedules is not None:
            await loop.run_in_executor(None, self.schedules.close)
        if self.runner is not None:
            with self._step("stopping every task (SIGTERM, flush the workspace to S3, STOPPED event)"):
                await loop.run_in_executor(None, self.runner.close)
            with self._step("waiting for the control plane to close their sessions"):
                open_sessions = await loop.run_in_executor(None, self._settle)
            if open_sessions:
                self._say(f"  !! {open_sessions} session records are still live (see the logs)")
        if self._persistence is not None:
            with self._step(f"saving workspaces and sessions to {self._persistence.folder}"):
                await loop.run_in_executor(None, self._persistence.save)
        if self.rest_api is not None:
            self.rest_api.close()
        if self.peer is not None:
            ssm_sessions.set_terminator(None)
            await self.peer.stop()
        if self.aws is not None:
            await loop.run_in_executor(None, self.aws.stop)
        if self._clock_patch is not None:
            self._clock_patch.stop()
        (self.state_dir / "stack.json").unlink(missing_ok=True)

    # -- the parts' glue ---------------------------------------------------------------------------------

    def _configure_functions(self) -> None:
        """What a local run needs on top of the template's function environments.

        The credentials function accepts caller-identity proofs only from AWS STS hosts and the endpoints
        it is told of: here, the local AWS the sandboxes sign their proofs for. And the functions' logs and
        metrics (JSON on stdout, for CloudWatch) would drown the progress output: warnings only, unless
        --verbose."""
        assert self.aws is not None and self.aws.endpoint_url is not None
        lambda_client: Any = self.aws.client("lambda")
        quiet = (
            {}
            if self.config.verbose
            else {"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"}
        )
        for logical_id, resource in self.stack.resources.items():
            if resource["type"] != "AWS::Lambda::Function":
                continue
            overlay = dict(quiet)
            if logical_id in TASK_FUNCTIONS:
                overlay["EXTRA_STS_ENDPOINTS"] = self.aws.endpoint_url
            configuration = lambda_client.get_function_configuration(FunctionName=resource["physical_id"])
            variables = {
                k: str(v) for k, v in configuration.get("Environment", {}).get("Variables", {}).items()
            }
            lambda_client.update_function_configuration(
                FunctionName=resource["physical_id"], Environment={"Variables": variables | overlay}
            )

    def _compress_time(self, scale: float) -> None:
        """The handlers' clock runs 1/scale times faster, in step with the workflow's scaled timers."""
        from sessions import clock

        self._clock_patch = mock.patch.object(clock, "now", ScaledClock(1 / scale).now)
        self._clock_patch.start()
        self._say(f"  control-plane time runs {1 / scale:g}x faster (--time-scale {scale:g})")

    def _rest_api(self) -> LocalRestApi:
        assert self.aws is not None
        stack = self.stack
        routes = routes_from_template(stack.template, stack.parameters)
        functions = {route.function: stack.physical_id(route.function) for route in routes if route.function}
        lambda_client: Any = self.aws.session().client(
            "lambda",
            endpoint_url=self.aws.endpoint_url,
            config=Config(retries={"max_attempts": 1}, read_timeout=INTEGRATION_TIMEOUT_S),
        )

        def invoke(function: str, event: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
            try:
                response = lambda_client.invoke(FunctionName=function, Payload=json.dumps(event).encode())
            except ReadTimeoutError as error:
                raise TimeoutError(str(error)) from error
            payload = json.loads(response["Payload"].read() or b"null")
            return payload, "FunctionError" in response

        responses = gateway_responses_from_template(stack.template, stack.parameters)
        return LocalRestApi(routes, functions, invoke, gateway_responses=responses)

    def _exec_session(self, cluster_arn: str, task_arn: str, command: str) -> dict[str, str]:
        """ExecuteCommand on the local AWS: a data channel to ``command`` inside the task's sandbox."""
        assert self.runner is not None and self.peer is not None
        argv, env = self.runner.exec_command(task_arn, shlex.split(command))
        credentials = self.peer.new_session(argv, env=env, target=task_arn)  # its own session limit
        return credentials.to_json()

    def _settle(self) -> int:
        """Wait (bounded) until no session record is live; returns how many still are."""
        assert self.aws is not None
        table: Any = self.aws.session().resource("dynamodb", endpoint_url=self.aws.endpoint_url)
        sessions = table.Table(self.stack.outputs["SessionsTableName"])
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            live = sessions.scan(FilterExpression="attribute_exists(live)", Select="COUNT")["Count"]
            if not live or time.monotonic() > deadline:
                return int(live)
            time.sleep(0.2)

    @contextmanager
    def _step(self, what: str) -> Iterator[None]:
        started = time.monotonic()
        self._say(f"{what} ...")
        yield
        self._say(f"  done in {time.monotonic() - started:.1f} s")


@contextmanager
def _listening(what: str, host: str, port: int) -> Iterator[None]:
    """A taken port is the usual reason a start fails: say which one, and how to choose another."""
    try:
        yield
    except OSError as error:
        raise OSError(
            f"cannot listen on {host}:{port} for {what} ({error.strerror or error}); "
            "choose other ports with --api-port / --gateway-port"
        ) from error
