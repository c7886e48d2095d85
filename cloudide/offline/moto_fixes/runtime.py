"""The in-process Lambda runtime: runs a function's handler in this process as the Lambda service would.

moto would need Docker to run a function; offline, the handler is imported from its CodeUri folder
(`SETTINGS.code_folders`) and called here with the function's environment and a Lambda context.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudide.offline.moto_fixes.settings import SETTINGS

LOG = logging.getLogger(__name__)


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
    return getattr(module, function_name)


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


def invoke_async(function: Any, event: Any) -> None:
    """An `Event` invocation: run it now and retry a failure as the Lambda service does."""
    _, errored = invoke_in_process(function, event)
    for delay in ASYNC_RETRY_DELAYS:
        if not errored:
            return
        time.sleep(delay * SETTINGS.wait_scale)
        _, errored = invoke_in_process(function, event)
    if errored:
        LOG.error("asynchronous invocation of %s failed after its retries", function.function_name)
