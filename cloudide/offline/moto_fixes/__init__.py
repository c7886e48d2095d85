"""Every correction the offline harness applies to moto 5.2.5, one module per service.

Each correction is a function named for the moto behaviour it corrects. Its docstring says what moto
does, what AWS does, and when the correction can go (each has a test in tests/offline/test_moto_fixes.py
that shows the moto behaviour with the correction off). `install()` applies them all, idempotently, by
patching moto classes in this process; moto must run in this process (in-process `mock_aws` or a
`ThreadedMotoServer`), because the patches live here.

Runtime settings (time scale, the ExecuteCommand stream URL factory, code folders of Lambda functions,
RunTask fault injection) are held in `SETTINGS` (`settings.py`) and may change between tests without
reinstalling. The in-process Lambda runtime is `runtime.py`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from cloudide.offline.moto_fixes.cloudformation import (
    PlaceholderResource,
    fix_cfn_rest_api,
    fix_cfn_state_machine,
    fix_cfn_task_definition,
    fix_cfn_unsupported_types,
)
from cloudide.offline.moto_fixes.dynamodb import fix_dynamodb_atomic_items
from cloudide.offline.moto_fixes.ecs import (
    find_task,
    fix_ecs_execute_command,
    fix_ecs_run_task,
    fix_ecs_task_status,
)
from cloudide.offline.moto_fixes.events import fix_eventbridge_targets
from cloudide.offline.moto_fixes.lambda_ import fix_lambda_invoke
from cloudide.offline.moto_fixes.presigned_sigv4 import fix_presigned_sigv4
from cloudide.offline.moto_fixes.runtime import ASYNC_RETRY_DELAYS, LambdaContext, invoke_in_process
from cloudide.offline.moto_fixes.settings import (
    CODE_BUCKET,
    SETTINGS,
    ExecSessionFactory,
    RunTaskFault,
    Settings,
    unreachable_exec_session,
)
from cloudide.offline.moto_fixes.stepfunctions import (
    fix_callback_heartbeat,
    fix_ecs_run_task_integration,
    fix_execution_context,
    fix_indexed_json_path,
    fix_sdk_error_names,
    fix_service_integration_casing,
    fix_stop_execution,
    fix_time_scale,
)

__all__ = [
    "ASYNC_RETRY_DELAYS",
    "CODE_BUCKET",
    "CORRECTIONS",
    "MOTO_VERSION",
    "SETTINGS",
    "ExecSessionFactory",
    "LambdaContext",
    "PlaceholderResource",
    "RunTaskFault",
    "Settings",
    "find_task",
    "install",
    "invoke_in_process",
    "unreachable_exec_session",
]

MOTO_VERSION = "5.2.5"
"""The version these corrections were measured against; `install()` refuses any other."""

_installed = False
_install_lock = threading.Lock()

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
