"""Control-plane cost per session, measured on the real workflow offline with a compressed clock.

The workflow runs on moto with every duration scaled (`wait_scale`) and the handlers' clock moved at
the same rate, so an 8-hour session takes seconds. Counted: state transitions (states entered plus
retries, which AWS bills alike) and Lambda invocations (workflow steps, task events, the task's usage
reports, and the API calls the IDE makes). Prices: us-east-1 list prices (docs/aws-facts.md and the services' pricing pages).
"""

from __future__ import annotations

import time
from typing import Any
from unittest import mock

from sessions import clock
from sessions.config import Settings
from sessions.record import Session, Status
from sessions.store import SessionStore

from cloudide.offline import moto_fixes
from cloudide.offline.clock import ScaledClock
from cloudide.offline.fargate import FakeFargate, TaskScript
from cloudide.offline.stack import OfflineAws
from cloudide.offline.task_reports import TaskReporter, played_sts

SCALE = 1 / 1200  # one virtual hour passes in 3 s
IDLE_MINUTES = 15
# While in use, the task's usage monitor reports at most once per UsageReportMinutes (the template's
# default); bench/usage.py measures that it does (reports_per_active_hour).
REPORT_EVERY_MINUTES = 5.0

PRICE_TRANSITION = 0.000025  # Standard workflows, per state transition
PRICE_LAMBDA_REQUEST = 0.20 / 1e6
PRICE_LAMBDA_GB_S_ARM = 0.0000133334
LAMBDA_GB, LAMBDA_SECONDS = 0.25, 0.1  # 256 MB functions, ~100 ms per call
PRICE_API_REQUEST = 3.50 / 1e6  # REST API
PRICE_DDB_WRITE, PRICE_DDB_READ = 0.625 / 1e6, 0.125 / 1e6  # on-demand, per request unit
# Fargate, Linux/ARM (the template's default), the default tier 0.25 vCPU / 0.5 GB.
FARGATE_ARM_VCPU_H, FARGATE_ARM_GB_H = 0.03238, 0.00356


def _lambda_cost(invocations: int) -> float:
    return invocations * (PRICE_LAMBDA_REQUEST + LAMBDA_GB * LAMBDA_SECONDS * PRICE_LAMBDA_GB_S_ARM)


def _simulate(
    aws: OfflineAws,
    store: SessionStore,
    virtual_clock: ScaledClock,
    active_hours: float,
) -> dict[str, Any]:
    """A session used for `active_hours`, its use reported by its task every `REPORT_EVERY_MINUTES`, then
    left idle until it stops."""
    stack = aws.stack
    assert stack is not None
    invocations = {"count": 0}
    original = moto_fixes.runtime.invoke_in_process

    def counting(function: Any, event: Any) -> Any:
        invocations["count"] += 1
        return original(function, event)

    session = store.create(
        Session.new(
            session_id=f"00000000-0000-4000-8000-{int(active_hours * 1000):012d}",
            owner_id="bench",
            project_id="bench",
            image="base",
            tier="small",
            idle_timeout_seconds=IDLE_MINUTES * 60,
            max_lifetime_seconds=12 * 3600,
        )
    )
    sfn = aws.client("stepfunctions")
    api_calls = 1  # POST /sessions
    virtual_clock.set_rate(1.0)
    moto_fixes.SETTINGS.wait_scale = 1.0
    with mock.patch.object(moto_fixes.runtime, "invoke_in_process", counting):
        execution = sfn.start_execution(
            stateMachineArn=stack.outputs["StateMachineArn"],
            name=session.session_id,
            input=f'{{"sessionId": "{session.session_id}"}}',
        )["executionArn"]
        started = time.monotonic()
        while (current := store.require(session.session_id)).status is Status.PROVISIONING:
            time.sleep(0.01)
        # The provision step's start timeout is fixed (real time) once it runs; from here on the
        # session's life runs compressed: the workflow's timers and the handlers' clock alike.
        virtual_clock.set_rate(1 / SCALE)
        moto_fixes.SETTINGS.wait_scale = SCALE
        while (current := store.require(session.session_id)).status is not Status.READY:
            if not current.status.is_live:
                raise RuntimeError(f"bench session ended before READY: {current.status_reason}")
            time.sleep(0.01)
        api_calls += 1 + int(time.monotonic() - started)  # the IDE polls GET /sessions/{id} once a second
        api_calls += 1  # POST /connect
        assert current.task_arn
        monitor = TaskReporter(aws, current.task_arn)
        monitor.report(clients=1)  # the monitor's start report
        for _ in range(int(active_hours * 60 / REPORT_EVERY_MINUTES)):
            time.sleep(REPORT_EVERY_MINUTES * 60 * SCALE)
            monitor.report(clients=1, input_age=0)
        while sfn.describe_execution(executionArn=execution)["status"] == "RUNNING":
            time.sleep(0.05)
    history = sfn.get_execution_history(executionArn=execution, maxResults=1000)["events"]
    entered = sum(1 for e in history if e["type"].endswith("StateEntered"))
    scheduled = sum(1 for e in history if e["type"] in ("TaskScheduled", "LambdaFunctionScheduled"))
    task_entered = sum(1 for e in history if e["type"] == "TaskStateEntered")
    transitions = entered + max(0, scheduled - task_entered)  # retries are billed as transitions
    ended = store.require(session.session_id)
    hours = (clock.parse(ended.stopped_at or "") - clock.parse(ended.created_at)).total_seconds() / 3600
    lambda_invocations = invocations["count"] + api_calls
    cost = (
        transitions * PRICE_TRANSITION
        + _lambda_cost(lambda_invocations)
        + api_calls * PRICE_API_REQUEST
        + lambda_invocations * (2 * PRICE_DDB_WRITE + 2 * PRICE_DDB_READ)
    )
    return {
        "transitions": transitions,
        "lambda_invocations": lambda_invocations,
        "session_hours": round(hours, 3),
        "status_reason": ended.status_reason,
        "cost_usd": cost,
    }


def run() -> dict[str, Any]:
    virtual_clock = ScaledClock()
    with (
        OfflineAws("template.yaml", parameters={"TerminalImageUri": "local/terminal:bench"}) as aws,
        mock.patch.object(clock, "now", virtual_clock.now),
        mock.patch.dict("os.environ", {"AGENT_POLL_SECONDS": "0"}),
        played_sts(),
    ):
        stack = aws.stack
        assert stack is not None
        # Fargate's own delays are not what is measured here: keep them well below the compressed stop timeout.
        quick = TaskScript(pending_delay=0.01, running_delay=0.01, stop_delay=0.0)
        fargate = FakeFargate(aws, stack.outputs["ClusterName"], script=quick)
        fargate.start()
        settings = Settings(
            SESSIONS_TABLE=stack.outputs["SessionsTableName"], CLUSTER_ARN=stack.outputs["ClusterName"]
        )
        store = SessionStore(settings.sessions_table)
        one_hour = _simulate(aws, store, virtual_clock, 1)
        eight_hours = _simulate(aws, store, virtual_clock, 8)
        fargate.close()
    fargate_per_hour = 0.25 * FARGATE_ARM_VCPU_H + 0.5 * FARGATE_ARM_GB_H
    per_hour_8h = eight_hours["cost_usd"] / eight_hours["session_hours"]
    per_hour_1h = one_hour["cost_usd"] / one_hour["session_hours"]
    return {
        "transitions_1h": one_hour["transitions"],
        "transitions_8h": eight_hours["transitions"],
        "lambda_invocations_1h": one_hour["lambda_invocations"],
        "lambda_invocations_8h": eight_hours["lambda_invocations"],
        "control_plane_cost_per_hour_usd": round(per_hour_8h, 7),
        "control_plane_cost_per_hour_usd_1h_session": round(per_hour_1h, 7),
        "fargate_cost_per_hour_usd": round(fargate_per_hour, 6),
        "control_plane_cost_ratio": round(per_hour_8h / fargate_per_hour, 4),
        "control_plane_cost_ratio_1h_session": round(per_hour_1h / fargate_per_hour, 4),
        "session_hours_1h": one_hour["session_hours"],
        "session_hours_8h": eight_hours["session_hours"],
        "note": "offline measurement with a compressed clock; prices us-east-1 list, Fargate ARM 0.25 vCPU/0.5 GB",
    }
