# mypy: disable-error-code="method-assign,attr-defined,assignment,union-attr"
# mypy: disable-error-code="typeddict-item,arg-type,var-annotated,unused-ignore"
# (this module patches moto classes in place; moto's own annotations cannot describe that)
"""Corrections of moto's Step Functions interpreter (the ASL parser moto took from LocalStack)."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import re
import sys
import time
import uuid
from functools import cache
from typing import Any

import botocore.session
from botocore.exceptions import ClientError

from cloudide.offline.moto_fixes.settings import SETTINGS


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
