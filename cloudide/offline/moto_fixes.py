# mypy: disable-error-code="method-assign,attr-defined,assignment,union-attr"
# mypy: disable-error-code="typeddict-item,arg-type,var-annotated,unused-ignore"
# (this module patches moto classes in place; moto's own annotations cannot describe that)
"""Every correction the offline harness applies to moto 5.2.5, in one place.

Each correction is a function named for the moto behaviour it corrects. Its docstring says what moto
does, what AWS does, and when the correction can go (each has a test in tests/offline/test_moto_fixes.py
that shows the moto behaviour with the correction off). `install()` applies them all, idempotently, by
patching moto classes in this process; moto must run in this process (in-process `mock_aws` or a
`ThreadedMotoServer`), because the patches live here.

Runtime settings (time scale, the ExecuteCommand stream URL factory, code folders of Lambda functions,
RunTask fault injection) are held in `SETTINGS` and may change between tests without reinstalling.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import importlib
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import botocore.session
from botocore.exceptions import ClientError

LOG = logging.getLogger(__name__)

MOTO_VERSION = "5.2.5"
"""The version these corrections were measured against; `install()` refuses any other."""

ExecSessionFactory = Callable[[str, str, str], dict[str, str]]
"""(cluster ARN, task ARN, command) -> the `session` an ExecuteCommand call returns: `sessionId`,
`streamUrl` and `tokenValue`. The local stack answers with its SSM-protocol peer running `command` inside
the task's sandbox."""


def unreachable_exec_session(cluster_arn: str, task_arn: str, command: str) -> dict[str, str]:
    """Nothing listens here: tests that only check the API's answer need no data channel."""
    session_id = f"ecs-execute-command-{uuid.uuid4().hex}"
    return {
        "sessionId": session_id,
        "streamUrl": f"ws://127.0.0.1:0/v1/data-channel/{session_id}",
        "tokenValue": uuid.uuid4().hex + uuid.uuid4().hex,
    }


@dataclass
class RunTaskFault:
    """One injected RunTask outcome: `failures` returned with HTTP 200, or `error` raised."""

    failures: list[dict[str, str]] | None = None
    error: tuple[str, str] | None = (
        None  # (error code, message), e.g. ("ThrottlingException", "Rate exceeded")
    )


@dataclass
class Settings:
    """Mutable knobs read by the corrections at call time."""

    wait_scale: float = 1.0
    scale_timestamp_waits: bool = False
    exec_session_factory: ExecSessionFactory = unreachable_exec_session
    code_folders: dict[str, Path] = field(default_factory=dict)  # placeholder S3 key -> CodeUri folder
    run_task_faults: deque[RunTaskFault] = field(default_factory=deque)
    # function name -> how many of its next invocations fail before the handler runs
    function_failures: dict[str, int] = field(default_factory=dict)
    stop_task_listeners: list[Callable[[Any], None]] = field(default_factory=list)


SETTINGS = Settings()
CODE_BUCKET = "cloudide-offline-code"
"""The S3 bucket holding the placeholder code objects; the S3 key names the function's CodeUri folder."""

_installed = False
_install_lock = threading.Lock()


# --------------------------------------------------------------------------------------------------
# Step Functions interpreter
# --------------------------------------------------------------------------------------------------


@cache
def _operation_model(service: str, snake_action: str) -> Any:
    from moto.stepfunctions.parser.utils import camel_to_snake_case

    model = botocore.session.get_session().get_service_model(service)
    by_snake = {camel_to_snake_case(name): name for name in model.operation_names}
    return model.operation_model(by_snake[snake_action])


def fix_service_integration_casing() -> None:
    """moto passes the workflow's PascalCase parameters straight to boto3 (`KeyError: 'Cluster'` for
    aws-sdk:ecs:*) and hands camelCase responses back; AWS maps both ways through the API model.
    moto's `StateTaskService._normalise_parameters/_normalise_response` are empty stubs; this wires them
    to the interpreter's own `_to_boto_request`/`_from_boto_response`. Delete when moto fills the stubs.
    """
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service

    cls = state_task_service.StateTaskService

    def model_for(task: Any, boto_service_name: str | None, action: str | None) -> Any:
        return _operation_model(
            task._get_boto_service_name(boto_service_name), task._get_boto_service_action(action)
        )

    def _normalise_parameters(
        self: Any,
        parameters: dict,
        boto_service_name: str | None = None,
        service_action_name: str | None = None,
    ) -> None:
        self._to_boto_request(parameters, model_for(self, boto_service_name, service_action_name).input_shape)

    def _normalise_response(
        self: Any, response: Any, boto_service_name: str | None = None, service_action_name: str | None = None
    ) -> None:
        shape = model_for(self, boto_service_name, service_action_name).output_shape
        if shape is not None:
            self._from_boto_response(response, shape)

    cls._normalise_parameters = _normalise_parameters
    cls._normalise_response = _normalise_response


def fix_sdk_error_names() -> None:
    """moto names aws-sdk errors of services it has no binding for with the lower-case service name
    (`ecs.InvalidParameterException`); AWS writes `Ecs.InvalidParameterException`. Delete when moto's
    `_SERVICE_ERROR_NAMES` covers these services."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_aws_sdk as sdk,
    )

    sdk._SERVICE_ERROR_NAMES.update(
        {"ecs": "Ecs", "lambda": "Lambda", "s3": "S3", "sqs": "Sqs", "sns": "Sns"}
    )


class _RunTaskFailures(Exception):
    """RunTask answered HTTP 200 with `failures[]` and no task."""


def fix_ecs_run_task_integration() -> None:
    """The optimized `arn:aws:states:::ecs:runTask` integration in moto (1) silently drops parameters
    outside an old allow-list (CapacityProviderStrategy, ClientToken, StartedBy, Tags, ...), (2) crashes
    with IndexError when RunTask returns `failures[]` and no task, and (3) reports service errors as
    `States.Runtime`. On AWS every error of this integration is `ECS.AmazonECSException` with the
    service's message in the cause. Delete when moto's StateTaskServiceEcs handles these.
    """
    from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import CustomErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEvent
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_ecs as ecs_service,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
    from moto.stepfunctions.parser.asl.utils.boto_client import boto_client_for

    members = _operation_model("ecs", "run_task").input_shape.members
    ecs_service._SUPPORTED_API_PARAM_BINDINGS["runtask"] = {name[0].upper() + name[1:] for name in members}
    cls = ecs_service.StateTaskServiceEcs
    inherited_from_error = cls._from_error

    def _eval_service_task(
        self: Any, env: Any, resource_runtime_part: Any, normalised_parameters: dict, state_credentials: Any
    ) -> None:
        client = boto_client_for(
            region=resource_runtime_part.region, service="ecs", state_credentials=state_credentials
        )
        response = client.run_task(**normalised_parameters)
        if not response.get("tasks"):
            raise _RunTaskFailures(json.dumps(response.get("failures", [])))
        described = client.describe_tasks(
            cluster=response["tasks"][0]["clusterArn"], tasks=[t["taskArn"] for t in response["tasks"]]
        )
        described.pop("ResponseMetadata", None)
        self._normalise_response(response=described, service_action_name="describe_tasks")
        env.stack.append(described)

    def _from_error(self: Any, env: Any, ex: Exception) -> Any:
        if isinstance(ex, ClientError):
            meta = ex.response["ResponseMetadata"]
            cause = (
                f"{ex.response['Error']['Message']} (Service: AmazonECS;"
                f" Status Code: {meta['HTTPStatusCode']}; Error Code: {ex.response['Error']['Code']};"
                f" Request ID: {meta.get('RequestId')}; Proxy: null)"
            )
        elif isinstance(ex, _RunTaskFailures):
            cause = str(ex)
        else:
            return inherited_from_error(self, env, ex)
        error = "ECS.AmazonECSException"
        return FailureEvent(
            env=env,
            error_name=CustomErrorName(error),
            event_type=HistoryEventType.TaskFailed,
            event_details=EventDetails(
                taskFailedEventDetails=TaskFailedEventDetails(
                    error=error,
                    cause=cause,
                    resource=self._get_sfn_resource(),
                    resourceType=self._get_sfn_resource_type(),
                )
            ),
        )

    cls._eval_service_task = _eval_service_task
    cls._from_error = _from_error


_SCALAR_PATH = re.compile(r"\[\s*\*\s*\]|\[[^\]]*:[^\]]*\]|\[\s*\?|\.\.")


def fix_indexed_json_path() -> None:
    """moto returns `[5]` for `$.a[0].b` (any path that passes through an index); AWS returns `5`.
    Lists come back only for wildcard, slice, filter and recursive-descent paths. Delete when moto's
    `extract_json` stops listifying indexed paths."""
    from jsonpath_ng.ext import parse
    from moto.stepfunctions.parser.asl.utils import json_path

    def extract_json(path: str, data: Any) -> Any:
        matches = parse(path).find(data)
        is_list_path = bool(_SCALAR_PATH.search(path))
        if not matches:
            if is_list_path:
                return []
            raise json_path.NoSuchJsonPathError(json_path=path, data=data)
        if is_list_path or len(matches) > 1:
            return [match.value for match in matches]
        return matches[0].value

    _replace_everywhere("moto.stepfunctions.parser", json_path.extract_json, extract_json)


def _replace_everywhere(package: str, old: Any, new: Any) -> None:
    """Rebind a function in every loaded module of `package` that imported it by name."""
    importlib.import_module(package)
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(package):
            continue
        for attr, value in list(vars(module).items()):
            if value is old:
                setattr(module, attr, new)


def fix_execution_context() -> None:
    """moto (1) leaves `name` None when StartExecution has none, so the execution ARN and
    `$$.Execution.Id` end in `:None` and `$$.Execution.Name` is null, and (2) puts a Python datetime in
    `$$.Execution.StartTime`, which makes any output that carries it unserialisable. AWS generates a
    UUID name and gives an ISO-8601 string. Delete when moto does both."""
    from moto.stepfunctions.parser.backend import execution as execution_module
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    original_start = StepFunctionsParserBackend.start_execution
    if not getattr(original_start, "_cloudide_fix", False):

        def start_execution(
            self: Any, state_machine_arn: str, name: Any = None, *args: Any, **kw: Any
        ) -> Any:
            return original_start(self, state_machine_arn, name or str(uuid.uuid4()), *args, **kw)

        start_execution._cloudide_fix = True  # type: ignore[attr-defined]
        StepFunctionsParserBackend.start_execution = start_execution

    original_details = execution_module.Execution.get_start_execution_details

    def get_start_execution_details(self: Any) -> Any:
        details = original_details(self)
        if isinstance(details.start_time, dt.datetime):
            details.start_time = _iso_z(details.start_time)
        return details

    if not getattr(original_details, "_cloudide_fix", False):
        get_start_execution_details._cloudide_fix = True  # type: ignore[attr-defined]
        execution_module.Execution.get_start_execution_details = get_start_execution_details


def fix_stop_execution() -> None:
    """moto's StopExecution marks the program stopped but leaves a `.waitForTaskToken` task waiting for
    its callback (until its timeout, possibly hours): the execution stays RUNNING, and when the wait
    ends the timeout is reported as a failure (FAILED). On AWS the execution is ABORTED at once. This
    wakes the waiting callbacks and keeps the status ABORTED. Delete when moto's Execution.stop does."""
    from moto.stepfunctions.parser.api import ExecutionStatus
    from moto.stepfunctions.parser.backend import execution as execution_module

    cls = execution_module.Execution
    original_stop = cls.__dict__.get("_cloudide_original_stop", cls.stop)
    cls._cloudide_original_stop = original_stop

    def stop(self: Any, stop_date: dt.datetime, error: str | None, cause: str | None) -> None:
        original_stop(self, stop_date, error, cause)
        if self.exec_worker is None or self.exec_status != ExecutionStatus.RUNNING:
            return
        self.exec_status, self.stop_date, self._cloudide_aborted = ExecutionStatus.ABORTED, stop_date, True
        for endpoint in list(self.exec_worker.env.callback_pool_manager._pool.values()):
            endpoint.interrupt_all()

    cls.stop = stop
    communication = execution_module.BaseExecutionWorkerCommunication
    original_reflect = communication.__dict__.get(
        "_cloudide_original_reflect", communication._reflect_execution_status
    )
    communication._cloudide_original_reflect = original_reflect

    def _reflect_execution_status(self: Any) -> None:
        if not getattr(self.execution, "_cloudide_aborted", False):
            original_reflect(self)

    communication._reflect_execution_status = _reflect_execution_status


def _iso_z(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def fix_callback_heartbeat() -> None:
    """moto (1) rejects SendTaskHeartbeat with `InvalidToken` when the waiting task has no
    HeartbeatSeconds (AWS accepts it), (2) reports an expired heartbeat as `States.Timeout` (AWS:
    `States.HeartbeatTimeout`), and (3) when a task with HeartbeatSeconds is answered while its Lambda
    still runs, ignores the answer until the heartbeat expires (it arms the heartbeat only afterwards);
    AWS completes the task with the answer. Catch both timeout names in the ASL anyway, so the
    definition also runs on interpreters without this fix. Delete when moto does all three."""
    from moto.stepfunctions.parser.api import HistoryEventType, TaskTimedOutEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEvent
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_callback as callback_service,
    )
    from moto.stepfunctions.parser.asl.eval.callback import callback
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    def notify_heartbeat(self: Any) -> bool:
        if self._heartbeat_endpoint is not None:
            self._heartbeat_endpoint.notify()
        return True

    callback.CallbackEndpoint.notify_heartbeat = notify_heartbeat
    endpoint_cls = callback.CallbackEndpoint
    original_setup = endpoint_cls.__dict__.get(
        "_cloudide_original_setup", endpoint_cls.setup_heartbeat_endpoint
    )
    endpoint_cls._cloudide_original_setup = original_setup

    def setup_heartbeat_endpoint(self: Any, heartbeat_seconds: int) -> Any:
        endpoint = original_setup(self, heartbeat_seconds)
        if self.get_outcome() is not None:  # answered while the task's Lambda was still running
            endpoint.notify()
        return endpoint

    endpoint_cls.setup_heartbeat_endpoint = setup_heartbeat_endpoint

    cls = callback_service.StateTaskServiceCallback
    original = cls.__dict__.get("_cloudide_original_from_error", cls._from_error)
    cls._cloudide_original_from_error = original

    def _from_error(self: Any, env: Any, ex: Exception) -> Any:
        if not isinstance(ex, callback.HeartbeatTimeoutError):
            return original(self, env, ex)
        name = StatesErrorNameType.StatesHeartbeatTimeout
        return FailureEvent(
            env=env,
            error_name=StatesErrorName(typ=name),
            event_type=HistoryEventType.TaskTimedOut,
            event_details=EventDetails(
                taskTimedOutEventDetails=TaskTimedOutEventDetails(
                    resourceType=self._get_sfn_resource_type(),
                    resource=self._get_sfn_resource(),
                    error=name.to_name(),
                )
            ),
        )

    cls._from_error = _from_error


def fix_time_scale() -> None:
    """Wait states, task TimeoutSeconds/HeartbeatSeconds (and their *Path forms) and Retry intervals
    take real time in moto, as on AWS. Tests want minutes to pass in milliseconds: every duration is
    multiplied by `SETTINGS.wait_scale`. Timestamp/TimestampPath waits are scaled only when
    `SETTINGS.scale_timestamp_waits` is set: a workflow that re-reads a deadline after waking would
    otherwise wake early and wait again in ever smaller steps. Not a moto bug: a test-only knob."""
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
    from moto.stepfunctions.parser.asl.component.common.timeouts import heartbeat, timeout
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function import timestamp, wait_function

    def _wait_interval(self: Any, env: Any, wait_seconds: float) -> None:
        is_timestamp = isinstance(self, timestamp.Timestamp) or type(self).__name__.startswith("Timestamp")
        scale = SETTINGS.wait_scale if (SETTINGS.scale_timestamp_waits or not is_timestamp) else 1.0
        deadline = time.monotonic() + max(wait_seconds, 0) * scale
        while env.is_running() and (remaining := deadline - time.monotonic()) > 0:
            env.program_state_event.wait(remaining)

    wait_function.WaitFunction._wait_interval = _wait_interval

    def scaled_eval_body(self: Any, env: Any) -> None:
        seconds = self._eval_seconds(env=env)
        is_default = isinstance(self, timeout.TimeoutSeconds) and self.is_default_value()
        env.stack.append(seconds if is_default else seconds * SETTINGS.wait_scale)

    timeout.Timeout._eval_body = scaled_eval_body
    heartbeat.Heartbeat._eval_body = scaled_eval_body

    class _ScaledTime:
        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            time.sleep(seconds * SETTINGS.wait_scale)

    retrier_decl.time = _ScaledTime()


# --------------------------------------------------------------------------------------------------
# Lambda
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LambdaContext:
    """The attributes of the Lambda context object handlers (and Powertools) read."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline: float

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


_HANDLER_LOCK = threading.RLock()
"""Serialises in-process handler calls: the function's environment is process-wide `os.environ`, so
two handlers with different environments must not run at once. Re-entrant, so a handler that invokes
another function synchronously in the same thread still works (the inner call overlays its own
environment and restores the outer one). A handler that waits for another thread's Lambda invocation
would deadlock; none of ours does (EventBridge deliveries and workflow steps run on their own threads)."""


@contextlib.contextmanager
def _environment(overlay: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in overlay}
    os.environ.update(overlay)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _load_handler(folder: Path, handler: str) -> Callable[[Any, Any], Any]:
    module_name, _, function_name = handler.rpartition(".")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    module = importlib.import_module(module_name)
    module_file = Path(getattr(module, "__file__", "") or "").resolve()
    if folder.resolve() not in module_file.parents:
        LOG.warning(
            "handler module %s imported from %s, not from CodeUri %s", module_name, module_file, folder
        )
    return getattr(module, function_name)  # type: ignore[no-any-return]


def invoke_in_process(function: Any, event: Any) -> tuple[Any, bool]:
    """Run a moto Lambda function's handler here; return (payload, errored) as the Lambda service would."""
    folder = SETTINGS.code_folders[function.code["S3Key"]]
    context = LambdaContext(
        function_name=function.function_name,
        function_version="$LATEST",
        invoked_function_arn=function.function_arn,
        memory_limit_in_mb=int(function.memory_size or 128),
        aws_request_id=str(uuid.uuid4()),
        log_group_name=f"/aws/lambda/{function.function_name}",
        log_stream_name=f"offline/{uuid.uuid4().hex}",
        deadline=time.monotonic() + float(function.timeout or 3),
    )
    overlay = {
        **{k: str(v) for k, v in (function.environment_vars or {}).items()},
        "AWS_LAMBDA_FUNCTION_NAME": function.function_name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(context.memory_limit_in_mb),
        "AWS_REGION": function.region,
        "AWS_DEFAULT_REGION": function.region,
    }
    with _HANDLER_LOCK, _environment(overlay):
        try:
            if SETTINGS.function_failures.get(function.function_name, 0) > 0:
                SETTINGS.function_failures[function.function_name] -= 1
                raise RuntimeError("injected function failure (cloudide.offline function_failures)")
            return _load_handler(folder, function.handler)(event, context), False
        except Exception as error:
            LOG.info("handler %s raised %r", function.handler, error)
            return {
                "errorType": type(error).__name__,
                "errorMessage": str(error),
                "stackTrace": traceback.format_exception(error),
            }, True


ASYNC_RETRY_DELAYS = (60.0, 120.0)
"""Lambda retries a failed asynchronous invocation twice (the default MaximumRetryAttempts), about one
and then two minutes later; scaled by `SETTINGS.wait_scale` like every other wait offline."""


def _invoke_async(function: Any, event: Any) -> None:
    _, errored = invoke_in_process(function, event)
    for delay in ASYNC_RETRY_DELAYS:
        if not errored:
            return
        time.sleep(delay * SETTINGS.wait_scale)
        _, errored = invoke_in_process(function, event)
    if errored:
        LOG.error("asynchronous invocation of %s failed after its retries", function.function_name)


def fix_lambda_invoke() -> None:
    """Without Docker, moto's Lambda invoke never runs the handler. This runs functions whose code is a
    harness placeholder (`SETTINGS.code_folders`, filled by `cloudide.offline.sam`) in this process; a
    raised exception becomes an `Unhandled` function error with `{errorType, errorMessage}`, so Step
    Functions sees `errorType` as the error name, as on AWS. An asynchronous (`Event`) invocation
    returns at once and runs on its own thread with Lambda's two retries (`ASYNC_RETRY_DELAYS`); moto
    would run it once, inline. Other functions keep moto's behaviour.
    Not a moto bug (moto would need Docker): permanent for Docker-less machines."""
    from moto.awslambda.models import LambdaFunction

    original = LambdaFunction.__dict__.get("_cloudide_original_invoke", LambdaFunction.invoke)
    LambdaFunction._cloudide_original_invoke = original

    def invoke(self: Any, body: str, request_headers: Any, response_headers: Any) -> str | bytes:
        if (self.code or {}).get("S3Key") not in SETTINGS.code_folders:
            return original(self, body, request_headers, response_headers)  # type: ignore[no-any-return]
        event = json.loads(body) if body else {}
        if request_headers.get("x-amz-invocation-type") == "Event":
            threading.Thread(target=_invoke_async, args=(self, event), daemon=True).start()
            return b""
        payload, errored = invoke_in_process(self, event)
        if errored:
            response_headers["x-amz-function-error"] = "Unhandled"
        return json.dumps(payload, default=str).encode()

    LambdaFunction.invoke = invoke


# --------------------------------------------------------------------------------------------------
# DynamoDB
# --------------------------------------------------------------------------------------------------

_DYNAMODB_LOCK = threading.RLock()
_DYNAMODB_OPERATIONS = (
    "get_item", "put_item", "update_item", "delete_item", "query", "scan",
    "batch_get_item", "batch_write_item", "transact_get_items", "transact_write_items",
)  # fmt: skip


def fix_dynamodb_atomic_items() -> None:
    """moto applies an item write as read, check the condition, modify in place, with no lock: two
    concurrent conditional writes to one item can both pass their condition, or one can undo the other
    (a lost update), and a read can see a half-applied update. On AWS every item write is atomic and
    conditions are checked atomically with it, which is what the session record's conditional writes
    rely on. This serialises the backend's item operations. Delete when moto locks item writes."""
    from moto.dynamodb.models import DynamoDBBackend

    for name in _DYNAMODB_OPERATIONS:
        original = getattr(DynamoDBBackend, name)
        if getattr(original, "_cloudide_fix", False):
            continue

        def locked(*args: Any, __original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            with _DYNAMODB_LOCK:
                return __original(*args, **kwargs)

        locked._cloudide_fix = True  # type: ignore[attr-defined]
        setattr(DynamoDBBackend, name, locked)


# --------------------------------------------------------------------------------------------------
# EventBridge
# --------------------------------------------------------------------------------------------------


def _target_input(target: dict[str, Any], event: dict[str, Any]) -> Any:
    from moto.events.models import EventTemplateParser
    from moto.stepfunctions.parser.asl.utils.json_path import extract_json

    if "Input" in target:
        return json.loads(target["Input"])
    if "InputPath" in target:
        return extract_json(target["InputPath"], event)
    if "InputTransformer" in target:
        transformer = target["InputTransformer"]
        return EventTemplateParser.parse(
            input_template=transformer.get("InputTemplate"),
            input_paths_map=transformer.get("InputPathsMap", {}),
            event=event,
        )
    return event


def _deliver(target: dict[str, Any], event: dict[str, Any]) -> None:
    from moto.awslambda.models import lambda_backends
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends
    from moto.utilities.arns import parse_arn

    arn = parse_arn(target["Arn"])
    payload = _target_input(target, event)
    try:
        if arn.service == "lambda":
            function = lambda_backends[arn.account][arn.region].get_function(target["Arn"])
            function.invoke(json.dumps(payload), {"x-amz-invocation-type": "Event"}, {})
        else:
            backend = stepfunctions_parser_backends[arn.account][arn.region]
            backend.start_execution(target["Arn"], None, json.dumps(payload))
    except Exception:
        LOG.exception("EventBridge delivery to %s failed", target["Arn"])


def fix_eventbridge_targets() -> None:
    """moto's rules raise NotImplementedError for Lambda and Step Functions targets. This delivers to
    them asynchronously (a thread per delivery, as EventBridge invokes asynchronously), honouring
    Input, InputPath and InputTransformer; other targets keep moto's delivery. Delete when moto
    delivers to both."""
    from moto.events.models import Rule

    original = Rule.__dict__.get("_cloudide_original_send", Rule.send_to_targets)
    Rule._cloudide_original_send = original

    def send_to_targets(self: Any, original_event: Any, transform_input: bool = True) -> None:
        # A schedule-only rule has no pattern, and moto's empty pattern matches every event.
        if not self.event_pattern.get_pattern() or not self.event_pattern.matches_event(original_event):
            return
        ours = [t for t in self.targets if t["Arn"].split(":")[2] in ("lambda", "states")]
        others = [t for t in self.targets if t not in ours]
        for target in ours:
            threading.Thread(target=_deliver, args=(target, original_event), daemon=True).start()
        if others:
            rest = copy.copy(self)
            rest.targets = others
            original(rest, original_event, transform_input)

    Rule.send_to_targets = send_to_targets


# --------------------------------------------------------------------------------------------------
# ECS
# --------------------------------------------------------------------------------------------------


def fix_ecs_task_status() -> None:
    """moto advances a task's status one step on every read (RUNNING -> DEACTIVATING -> ... as you
    DescribeTasks). On AWS the status follows the task. The `ecs::task` transition is set to manual
    with a huge count; `cloudide.offline.ecs.EcsDriver.set_task_status` moves it instead. moto also
    starts tasks in RUNNING: new tasks start in PROVISIONING here, as on AWS. Delete when moto's
    default transition is manual."""
    from moto.ecs.models import Task
    from moto.moto_api import state_manager

    state_manager.set_transition("ecs::task", {"progression": "manual", "times": 10**12})
    original_init = Task.__dict__.get("_cloudide_original_init", Task.__init__)
    Task._cloudide_original_init = original_init

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.status = "PROVISIONING"
        self.version = 1
        self.created_at = dt.datetime.now(dt.UTC)
        self.enable_execute_command = False
        self.stop_code = None
        for container in self.containers:
            container.managed_agents = []

    Task.__init__ = __init__


def _ecs_error(code: str, message: str) -> Exception:
    from moto.ecs.exceptions import ECSException

    return ECSException(code, message)


def fix_ecs_run_task() -> None:
    """moto's RunTask ignores `clientToken` (the same token twice starts two tasks), does not echo
    `enableExecuteCommand`, never returns `failures[]`, crashes on awsvpc tasks without
    `securityGroups`, and StopTask moves `lastStatus` straight to STOPPED. On AWS the same token with
    the same parameters returns the original tasks (other parameters -> ClientException), the task
    echoes enableExecuteCommand and carries an ExecuteCommandAgent, and StopTask only sets
    desiredStatus (the task reports STOPPED once its containers exit). `SETTINGS.run_task_faults` lets a
    test make the next calls return failures or raise. Delete the parts moto fixes."""
    from moto.ecs.responses import EC2ContainerServiceResponse

    tokens: dict[tuple[str, str, str], tuple[str, list[str]]] = {}

    def run_task(self: Any) -> Any:
        from moto.core.responses import ActionResult

        if SETTINGS.run_task_faults:
            fault = SETTINGS.run_task_faults.popleft()
            if fault.error:
                raise _ecs_error(*fault.error)
            return ActionResult({"tasks": [], "failures": fault.failures or []})
        params = {k: v for k, v in self._get_params().items() if k != "clientToken"}
        cluster = self._get_param("cluster", "default")
        token = self._get_param("clientToken")
        fingerprint = json.dumps(params, sort_keys=True, default=str)
        key = (self.current_account, self.region, f"{cluster.split('/')[-1]}|{token}")
        if token and key in tokens:
            seen_fingerprint, arns = tokens[key]
            if seen_fingerprint != fingerprint:
                raise _ecs_error("ClientException", "The clientToken was used with different parameters.")
            return ActionResult({"tasks": self.ecs_backend.describe_tasks(cluster, arns), "failures": []})
        network = self._get_param("networkConfiguration")
        if network and "awsvpcConfiguration" in network:
            network["awsvpcConfiguration"].setdefault("securityGroups", [])
        tasks = self.ecs_backend.run_task(
            cluster,
            self._get_param("taskDefinition"),
            self._get_int_param("count", 1),
            self._get_param("overrides"),
            self._get_param("startedBy"),
            self._get_param("tags"),
            self._get_param("launchType"),
            network,
            self._get_param("group"),
            self._get_param("platformVersion"),
            self._get_param("capacityProviderStrategy"),
        )
        for task in tasks:
            task.enable_execute_command = bool(self._get_param("enableExecuteCommand", False))
            if task.enable_execute_command:
                for container in task.containers:
                    container.managed_agents = [{"name": "ExecuteCommandAgent", "lastStatus": "PENDING"}]
        if token:
            tokens[key] = (fingerprint, [task.task_arn for task in tasks])
        return ActionResult({"tasks": tasks, "failures": []})

    def stop_task(self: Any) -> Any:
        from moto.core.responses import ActionResult

        task = find_task(self.ecs_backend, self._get_param("cluster", "default"), self._get_param("task"))
        if task.desired_status != "STOPPED":
            task.desired_status = "STOPPED"
            task.stop_code = "UserInitiated"
            task.stopped_reason = self._get_param("reason") or "Task stopped by user"
            task.version += 1
            for listener in list(SETTINGS.stop_task_listeners):
                listener(task)
        return ActionResult({"task": task})

    EC2ContainerServiceResponse.run_task = run_task
    _fix_task_level_resources()
    # awsvpc RunTask reads the ENI's private DNS name, which moto sets only in VPCs with DNS hostnames.
    from moto.ec2.models.elastic_network_interfaces import NetworkInterface

    if not hasattr(NetworkInterface, "private_dns_name"):
        NetworkInterface.private_dns_name = ""
    EC2ContainerServiceResponse.stop_task = stop_task


def _fix_task_level_resources() -> None:
    """moto sums container-level memory and crashes (`int += None`) on Fargate task definitions that
    set memory only at task level, as AWS allows; the task-level values count when containers have none."""
    from moto.ecs.models import EC2ContainerServiceBackend

    original = EC2ContainerServiceBackend.__dict__["_calculate_task_resource_requirements"].__func__

    def calculate(task_definition: Any) -> dict[str, Any]:
        definitions = task_definition.container_definitions
        patched = [
            {"memory": 0, **d}
            if not any(k in d for k in ("memory", "Memory", "memoryReservation", "MemoryReservation"))
            else d
            for d in definitions
        ]
        task_definition.container_definitions = patched
        try:
            needs = dict(original(task_definition))
        finally:
            task_definition.container_definitions = definitions
        needs["MEMORY"] = needs["MEMORY"] or int(task_definition.memory or 0)
        needs["CPU"] = needs["CPU"] or int(task_definition.cpu or 0)
        return needs

    EC2ContainerServiceBackend._calculate_task_resource_requirements = staticmethod(calculate)


def find_task(backend: Any, cluster: str, task: str) -> Any:
    """The moto task `task` (ARN or id) in `cluster`, or InvalidParameterException as AWS answers."""
    cluster_name = backend._get_cluster(cluster).name
    task_id = task.split("/")[-1]
    for arn, candidate in backend.tasks.get(cluster_name, {}).items():
        if arn.split("/")[-1] == task_id:
            return candidate
    raise _ecs_error("InvalidParameterException", "The referenced task was not found.")


def fix_ecs_execute_command() -> None:
    """moto has no ExecuteCommand (NotImplementedError). This returns a session whose `streamUrl`
    comes from `SETTINGS.exec_session_factory`; the peer behind it treats the token as single-use.
    AWS refuses when the task was started without enableExecuteCommand, when it is not RUNNING, or when
    its ExecuteCommandAgent is not RUNNING. Delete when moto implements ExecuteCommand."""
    from moto.core.responses import ActionResult
    from moto.ecs.responses import EC2ContainerServiceResponse

    def execute_command(self: Any) -> Any:
        cluster = self.ecs_backend._get_cluster(self._get_param("cluster", "default"))
        task = find_task(self.ecs_backend, cluster.arn, self._get_param("task"))
        if not self._get_param("interactive"):
            raise _ecs_error("InvalidParameterException", "Interactive is the only mode supported currently.")
        if not task.enable_execute_command:
            raise _ecs_error(
                "InvalidParameterException",
                "The execute command failed because execute command was not enabled when the task was run"
                " or the execute command agent isn't running. Wait and try again or run a new task with"
                " execute command enabled and try again.",
            )
        container_name = self._get_param("container") or task.containers[0].name
        container = next((c for c in task.containers if c.name == container_name), None)
        agent = next((a for a in (container.managed_agents if container else [])), {})
        if task.last_status != "RUNNING" or agent.get("lastStatus") != "RUNNING":
            raise _ecs_error(
                "TargetNotConnectedException",
                "The execute command failed due to an internal error. Try again later.",
            )
        session = SETTINGS.exec_session_factory(cluster.arn, task.task_arn, self._get_param("command"))
        return ActionResult(
            {
                "clusterArn": cluster.arn,
                "containerArn": container.container_arn if container else None,
                "containerName": container_name,
                "interactive": True,
                "taskArn": task.task_arn,
                "session": session,
            }
        )

    EC2ContainerServiceResponse.execute_command = execute_command


# --------------------------------------------------------------------------------------------------
# CloudFormation
# --------------------------------------------------------------------------------------------------


def _substitute(definition: str, substitutions: dict[str, Any]) -> str:
    return re.sub(r"\$\{([^}]+)\}", lambda m: str(substitutions.get(m.group(1), m.group(0))), definition)


def fix_cfn_state_machine() -> None:
    """moto's AWS::StepFunctions::StateMachine ignores `Definition` (object) and
    `DefinitionSubstitutions`, and creates the machine in the plain back end even when the interpreter
    (`execute_state_machine`) is on, so StartExecution never runs it. This substitutes `${Name}`,
    accepts `Definition`/`DefinitionString`, and creates it where StartExecution looks. Delete when
    moto's resource does all three."""
    from moto.stepfunctions.models import StateMachine
    from moto.stepfunctions.responses import get_backend

    def create_from_cloudformation_json(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kw: Any
    ) -> Any:
        properties = cloudformation_json["Properties"]
        definition = properties.get("DefinitionString") or json.dumps(properties.get("Definition", {}))
        definition = _substitute(definition, properties.get("DefinitionSubstitutions", {}))
        tags = [{"key": tag["Key"], "value": tag["Value"]} for tag in properties.get("Tags", [])]
        return get_backend(account_id, region_name).create_state_machine(
            properties.get("StateMachineName", resource_name),
            definition,
            properties.get("RoleArn", ""),
            tags=tags,
        )

    def delete_from_cloudformation_json(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        backend = get_backend(account_id, region_name)
        for machine in backend.list_state_machines():
            if resource_name in (machine.name, machine.arn):
                backend.delete_state_machine(machine.arn)

    StateMachine.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)
    StateMachine.delete_from_cloudformation_json = classmethod(delete_from_cloudformation_json)


def fix_cfn_task_definition() -> None:
    """moto's AWS::ECS::TaskDefinition keeps only the family, containers, volumes and memory: the task
    role, CPU, network mode, compatibilities and platform are dropped, so a task started from it has no
    role to assume and no size to enforce. This registers every property. Delete when moto does."""
    from moto.core.utils import pascal_to_camelcase, remap_nested_keys
    from moto.ecs.models import TaskDefinition, ecs_backends

    def create_from_cloudformation_json(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kw: Any
    ) -> Any:
        properties = cloudformation_json["Properties"]
        tags = [{"key": tag["Key"], "value": tag["Value"]} for tag in properties.get("Tags", [])]
        return ecs_backends[account_id][region_name].register_task_definition(
            family=properties.get("Family", resource_name),
            container_definitions=remap_nested_keys(
                properties.get("ContainerDefinitions", []), pascal_to_camelcase
            ),
            volumes=remap_nested_keys(properties.get("Volumes", []), pascal_to_camelcase),
            network_mode=properties.get("NetworkMode"),
            tags=tags or None,
            requires_compatibilities=properties.get("RequiresCompatibilities"),
            cpu=properties.get("Cpu"),
            memory=properties.get("Memory"),
            task_role_arn=properties.get("TaskRoleArn"),
            execution_role_arn=properties.get("ExecutionRoleArn"),
            runtime_platform=remap_nested_keys(properties.get("RuntimePlatform") or {}, pascal_to_camelcase)
            or None,
        )

    TaskDefinition.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)


def fix_cfn_rest_api() -> None:
    """moto's AWS::ApiGateway::RestApi requires `Name` (AWS takes it from an OpenAPI `Body`) and ignores
    `Body`; AWS::ApiGateway::Stage is not supported. The REST API is imported from `Body` when moto can
    parse it (the offline stack serves the API itself, so a partial import only logs a warning).
    Delete when moto supports both."""
    from moto.apigateway.models import RestAPI, Stage, apigateway_backends

    def create_api(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kw: Any
    ) -> Any:
        properties = cloudformation_json["Properties"]
        body = properties.get("Body")
        backend = apigateway_backends[account_id][region_name]
        name = properties.get("Name") or (body or {}).get("info", {}).get("title") or resource_name
        api = backend.create_rest_api(
            name=name,
            description=properties.get("Description", ""),
            endpoint_configuration=properties.get("EndpointConfiguration"),
        )
        if body:
            try:
                # moto reads only OpenAPI 3 documents; SAM writes Swagger 2.0, whose `paths` moto can use.
                paths_only = {
                    "openapi": "3.0.1",
                    "info": body.get("info", {}),
                    "paths": body.get("paths", {}),
                }
                backend.put_rest_api(api.id, paths_only, mode="overwrite", fail_on_warnings=False)
            except Exception as error:
                LOG.info("moto could not import the OpenAPI body of %s: %r", resource_name, error)
        return api

    def create_stage(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kw: Any
    ) -> Any:
        properties = cloudformation_json["Properties"]
        backend = apigateway_backends[account_id][region_name]
        stage = backend.create_stage(
            properties["RestApiId"],
            properties["StageName"],
            properties.get("DeploymentId", ""),
            variables=properties.get("Variables"),
            description=properties.get("Description", ""),
            tracing_enabled=properties.get("TracingEnabled"),
        )
        stage.physical_resource_id = properties["StageName"]
        return stage

    RestAPI.create_from_cloudformation_json = classmethod(create_api)
    Stage.cloudformation_type = staticmethod(lambda: "AWS::ApiGateway::Stage")
    Stage.create_from_cloudformation_json = classmethod(create_stage)
    Stage.cloudformation_name_type = staticmethod(lambda: "StageName")


def _cloudformation_model() -> type:
    from moto.core.common_models import CloudFormationModel

    return CloudFormationModel


class PlaceholderResource(_cloudformation_model()):  # type: ignore[misc]
    """Stands in for a resource type moto's CloudFormation does not support (cloudformation_type
    AWS::Cognito::..., AWS::EC2::VPCEndpoint, AWS::ECS::ClusterCapacityProviderAssociations, ...).
    Its physical id is the generated name; `Ref` yields it and `GetAtt X.Attr` yields
    `<physical id>.<Attr>`, or an ARN-shaped value for attributes whose name ends in `Arn`."""

    def __init__(self, physical_id: str, resource_type: str, account_id: str, region_name: str) -> None:
        self.physical_resource_id = physical_id
        self.resource_type = resource_type
        self.account_id = account_id
        self.region_name = region_name

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kw: Any
    ) -> PlaceholderResource:
        return cls(resource_name, kw.get("ResourceType", "Unknown"), account_id, region_name)

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return True

    def get_cfn_attribute(self, attribute_name: str) -> str:
        if attribute_name.endswith("Arn"):
            service = self.resource_type.split("::")[1].lower()
            where = f"{self.region_name}:{self.account_id}"
            return f"arn:aws:{service}:{where}:placeholder/{self.physical_resource_id}"
        return f"{self.physical_resource_id}.{attribute_name}"

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @staticmethod
    def cloudformation_type() -> str:
        return "Offline::Placeholder"

    def is_created(self) -> bool:
        return True

    def delete(self, account_id: str, region_name: str) -> None:
        """Nothing to delete: the placeholder owns no moto state."""


def fix_cfn_unsupported_types() -> None:
    """moto's CloudFormation skips resource types it does not model, and then `Ref`/`GetAtt` on them
    fail the stack. Unsupported types get a `PlaceholderResource` instead, so a template that also
    declares Cognito pools, VPC endpoints, alarms and the like still deploys. Delete per type as moto
    adds models (it never models all of them)."""
    from moto.cloudformation import parsing

    original = parsing.__dict__.get("_cloudide_original_class_from_type", parsing.resource_class_from_type)
    parsing._cloudide_original_class_from_type = original

    def resource_class_from_type(resource_type: str) -> Any:
        if resource_type in parsing.NULL_MODELS or resource_type.startswith("Custom::"):
            return original(resource_type)
        if resource_type in parsing.get_model_map():
            return original(resource_type)
        LOG.info("offline placeholder for %s", resource_type)
        return PlaceholderResource

    parsing.resource_class_from_type = resource_class_from_type


# --------------------------------------------------------------------------------------------------


def fix_presigned_sigv4() -> None:
    """A SigV4 presigned URL (a presigned sts:GetCallerIdentity proves who signed it) carries its
    credential scope in `X-Amz-Credential=<key>/<date>/<region>/<service>/aws4_request`, not in an
    Authorization header. moto's server then routes the request to S3 and its STS answers for an
    anonymous key; AWS reads the key and service from the query, and so do these fixes."""
    from urllib.parse import parse_qs

    from moto.core.responses import BaseResponse
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original_key = BaseResponse.get_access_key

    def get_access_key(self: Any) -> str:
        credential = (self.querystring.get("X-Amz-Credential") or [""])[0]
        if "Authorization" not in self.headers and credential:
            return str(credential).split("/", 1)[0]
        return str(original_key(self))

    original_infer = DomainDispatcherApplication.infer_service_region_host

    def infer_service_region_host(self: Any, environ: dict[str, Any], path: str) -> str | None:
        credential = parse_qs(environ.get("QUERY_STRING", "")).get("X-Amz-Credential", [""])[0]
        if environ.get("HTTP_AUTHORIZATION") or not credential:
            return original_infer(self, environ, path)
        environ["HTTP_AUTHORIZATION"] = f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=host"
        try:
            return original_infer(self, environ, path)
        finally:
            del environ["HTTP_AUTHORIZATION"]

    BaseResponse.get_access_key = get_access_key  # type: ignore[method-assign]
    DomainDispatcherApplication.infer_service_region_host = infer_service_region_host  # type: ignore[method-assign]


CORRECTIONS: tuple[Callable[[], None], ...] = (
    fix_service_integration_casing,
    fix_sdk_error_names,
    fix_ecs_run_task_integration,
    fix_indexed_json_path,
    fix_execution_context,
    fix_callback_heartbeat,
    fix_stop_execution,
    fix_time_scale,
    fix_lambda_invoke,
    fix_dynamodb_atomic_items,
    fix_eventbridge_targets,
    fix_ecs_task_status,
    fix_ecs_run_task,
    fix_ecs_execute_command,
    fix_cfn_state_machine,
    fix_cfn_task_definition,
    fix_cfn_rest_api,
    fix_cfn_unsupported_types,
    fix_presigned_sigv4,
)


def install(
    *,
    wait_scale: float | None = None,
    scale_timestamp_waits: bool | None = None,
    exec_session_factory: ExecSessionFactory | None = None,
) -> Settings:
    """Apply every correction (once per process) and update `SETTINGS` with the knobs given."""
    global _installed
    import moto
    from moto.moto_api import state_manager

    if moto.__version__ != MOTO_VERSION:
        raise RuntimeError(f"moto_fixes was measured on moto {MOTO_VERSION}, found {moto.__version__}")
    with _install_lock:
        if not _installed:
            for correction in CORRECTIONS:
                correction()
            __import__("cloudide.offline.ssm_sessions").offline.ssm_sessions.fix_ssm_terminate_session()
            _installed = True
        # mock_aws() resets registered transitions on exit; set ours again for every new mock.
        state_manager.set_transition("ecs::task", {"progression": "manual", "times": 10**12})
    if wait_scale is not None:
        if wait_scale <= 0:
            raise ValueError("wait_scale must be positive")
        SETTINGS.wait_scale = wait_scale
    if scale_timestamp_waits is not None:
        SETTINGS.scale_timestamp_waits = scale_timestamp_waits
    if exec_session_factory is not None:
        SETTINGS.exec_session_factory = exec_session_factory
    return SETTINGS
