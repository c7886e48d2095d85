"""Every correction the offline harness applies to moto 5.2.5, one module per service.

`CORRECTIONS` lists them: each entry names what moto does, what AWS does, the function that patches
moto (its docstring says how, and when it can go) and a probe that tells the two apart. The probes are
the proof that each correction is still needed and still works: `proof.run_probes()` runs every probe
on plain moto (where it must fail) and on corrected moto (where it must pass), each in its own
interpreter; tests/offline/test_moto_fixes.py requires both for every entry.

`install()` applies them all, idempotently, by patching moto classes in this process; moto must run in
this process (in-process `mock_aws` or a `ThreadedMotoServer`), because the patches live here. The
knobs the corrections read at call time (time scale, the ExecuteCommand stream URL factory, code
folders of Lambda functions, RunTask and function fault injection) are `SETTINGS` (`settings.py`);
`SETTINGS.scoped(...)` changes them for a block. The in-process Lambda runtime is `runtime.py`.
"""

from __future__ import annotations

import threading

from cloudide.offline.moto_fixes.cloudformation import (
    CFN_REST_API,
    CFN_STATE_MACHINE,
    CFN_TASK_DEFINITION,
    CFN_UNSUPPORTED_TYPES,
    PlaceholderResource,
)
from cloudide.offline.moto_fixes.correction import Correction
from cloudide.offline.moto_fixes.dynamodb import DYNAMODB_ATOMIC_ITEMS
from cloudide.offline.moto_fixes.ecs import (
    ECS_EXECUTE_COMMAND,
    ECS_RUN_TASK,
    ECS_SPOT_ARCHITECTURE,
    ECS_TASK_STATUS,
    SPOT_NEEDS_X86,
    find_task,
)
from cloudide.offline.moto_fixes.events import EVENTBRIDGE_TARGETS
from cloudide.offline.moto_fixes.lambda_ import LAMBDA_INVOKE
from cloudide.offline.moto_fixes.presigned_sigv4 import PRESIGNED_SIGV4
from cloudide.offline.moto_fixes.runtime import ASYNC_RETRY_DELAYS, LambdaContext, invoke_in_process
from cloudide.offline.moto_fixes.s3_multipart import S3_MULTIPART_MEMORY
from cloudide.offline.moto_fixes.settings import (
    CODE_BUCKET,
    SETTINGS,
    ExecSessionFactory,
    RunTaskFault,
    Settings,
    unreachable_exec_session,
)
from cloudide.offline.moto_fixes.ssm import TERMINATE_SESSION
from cloudide.offline.moto_fixes.stepfunctions import (
    CALLBACK_HEARTBEAT,
    ECS_RUN_TASK_INTEGRATION,
    EXECUTION_CONTEXT,
    INDEXED_JSON_PATH,
    SDK_ERROR_NAMES,
    SERVICE_INTEGRATION_CASING,
    STOP_EXECUTION,
    TIME_SCALE,
)

__all__ = [
    "ASYNC_RETRY_DELAYS",
    "CODE_BUCKET",
    "CORRECTIONS",
    "MOTO_VERSION",
    "SETTINGS",
    "SPOT_NEEDS_X86",
    "Correction",
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

CORRECTIONS: tuple[Correction, ...] = (
    SERVICE_INTEGRATION_CASING,
    SDK_ERROR_NAMES,
    ECS_RUN_TASK_INTEGRATION,
    INDEXED_JSON_PATH,
    EXECUTION_CONTEXT,
    CALLBACK_HEARTBEAT,
    STOP_EXECUTION,
    TIME_SCALE,
    LAMBDA_INVOKE,
    DYNAMODB_ATOMIC_ITEMS,
    EVENTBRIDGE_TARGETS,
    ECS_TASK_STATUS,
    ECS_RUN_TASK,
    ECS_EXECUTE_COMMAND,
    ECS_SPOT_ARCHITECTURE,
    CFN_STATE_MACHINE,
    CFN_TASK_DEFINITION,
    CFN_REST_API,
    CFN_UNSUPPORTED_TYPES,
    PRESIGNED_SIGV4,
    S3_MULTIPART_MEMORY,
    TERMINATE_SESSION,
)
"""Applied in this order by `install()`. Each entry's probe proves it: `proof.run_probes()`."""


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
                correction.install()
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
