"""Reliability figures: the fault matrix's size, a seeded soak of the real workflow with faults, and the
longest a leaked task could live on AWS with the template's defaults.

The soak runs the template deployed offline (the real ASL, handlers and reconciler) with FakeFargate:
sessions are started, used and stopped on a bounded random schedule, each with a fault drawn from a fixed
seed, while the reconciler runs as its schedule would (every second here, a compressed period). It ends
with the same invariant check as the fault-matrix tests, over every session and every task.
Reproducible: the plan of every session (its fault, its timings) comes from the seed; the interleaving of
20 sessions running at once is up to the threads, so repair counts may differ a little between runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from samcli.yamlhelper import yaml_parse
from sessions.callbacks import WorkflowCallbacks
from sessions.config import Settings
from sessions.ecs_tasks import CapacityUnavailable, EcsTasks
from sessions.lifecycle import Lifecycle
from sessions.record import Session, WaitingFor
from sessions.store import SessionStore
from sessions.workflows import Workflows

from cloudide.offline import faults, invariants, moto_fixes
from cloudide.offline.fargate import FakeFargate, TaskScript
from cloudide.offline.stack import OfflineAws

ROOT = Path(__file__).resolve().parents[1]
SOAK_SESSIONS = 200
SEED = 20261126
CONCURRENCY = 20
RECONCILE_EVERY_SECONDS = 1.0
# The reconciler's grace period, compressed like its period; it must still exceed the time between a
# record's creation and its workflow's start, which under the soak's load takes a second or more here
# (in production the API does both within one request: ReconcilerGraceSeconds 120 s > its 30 s timeout).
SOAK_GRACE_SECONDS = 3
# Retry intervals, step timeouts and Lambda's async retries pass 5x faster; each must still outlast the
# SDK's own unscaled backoff (a few seconds) and the event path under the soak's load.
WAIT_SCALE = 0.2
FAULT_WEIGHTS = {
    "none": 30,
    "stop while provisioning": 6,
    "capacity failure then success": 6,
    "crash during start": 6,
    "OOM mid-session": 6,
    "Spot interruption": 6,
    "lost STOPPED event": 6,
    "workflow aborted externally": 6,
    "event handler fails once": 6,
    "duplicate and stale events": 6,
    "two concurrent stops": 6,
    "StopTask throttled": 6,
    "stray task": 6,
}


@dataclass
class SoakResult:
    sessions: int
    faults: Counter[str]
    violations: list[str]
    repairs: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


class _Soak:
    def __init__(self, aws: OfflineAws, fargate: FakeFargate) -> None:
        assert aws.stack is not None
        self.aws, self.fargate, self.outputs = aws, fargate, aws.stack.outputs
        self.cluster = self.outputs["ClusterName"]
        self.store = SessionStore(self.outputs["SessionsTableName"])
        settings = Settings(SESSIONS_TABLE=self.outputs["SessionsTableName"], CLUSTER_ARN=self.cluster)
        self.lifecycle = Lifecycle(settings, self.store, EcsTasks(settings), WorkflowCallbacks())
        self.task_events = aws.stack.physical_id("TaskEventsFunction")
        self.reconciler = aws.stack.physical_id("ReconcilerFunction")
        self.repairs: Counter[str] = Counter()
        self.fault_of: dict[str, str] = {}
        self.strays: dict[str, str] = {}  # session id -> the stray task started with its id
        self.errors: list[str] = []
        self.workflows = Workflows(self.outputs["StateMachineArn"])
        self.sfn: Any = aws.client("stepfunctions")
        self._lock = threading.Lock()

    # The schedule of one session ---------------------------------------------------------------------

    def session(self, index: int, fault: str, rng: random.Random) -> str:
        session = self.store.create(
            Session.new(
                owner_id=f"soak-{index % 25}",
                project_id="soak",
                image="base",
                tier="small",
                idle_timeout_seconds=3600,
                max_lifetime_seconds=3600,
            )
        )
        sid = session.session_id
        self.fault_of[sid] = fault
        if fault == "crash during start":
            self.fargate.scripts[sid] = TaskScript(crash_on_start=True)
        elif fault == "lost STOPPED event":
            self.fargate.scripts[sid] = TaskScript(stop_event=False)
        elif fault == "capacity failure then success":
            self.aws.ecs.fail_next_run_tasks(1)
        execution = self._start(sid)
        if fault == "stop while provisioning":
            time.sleep(rng.uniform(0, 0.3))
            self.lifecycle.request_stop(sid, "user")
        elif fault != "crash during start":
            self._use(sid, fault, execution, rng)
        self._wait_ended(sid, timeout=90)
        return sid

    def _use(self, sid: str, fault: str, execution: str, rng: random.Random) -> None:
        ready = self._wait_parked(sid, WaitingFor.STOP, timeout=60)
        if ready is None or ready.task_arn is None:
            # Not watched in time, or ended on its own: the schedule still ends it (stopping an ended
            # session is a no-op), and the invariants judge the outcome.
            self.lifecycle.request_stop(sid, "user")
            return
        for _ in range(rng.randint(0, 3)):  # the user is active
            time.sleep(rng.uniform(0.05, 0.3))
            touched = self.store.touch_activity(sid, coalesce_seconds=0)
            if touched is not None:
                self.lifecycle.heartbeat(touched)
        arn = ready.task_arn
        if fault == "OOM mid-session":
            self.fargate.crash(arn, stop_code="EssentialContainerExited", exit_code=137)
        elif fault == "Spot interruption":
            self.fargate.interrupt_spot(arn)
        elif fault == "workflow aborted externally":
            self.sfn.stop_execution(executionArn=execution)
        else:
            if fault == "stray task":
                from tests.workflow.conftest import start_stray_task

                # A capacity fault injected for another session may refuse this RunTask: then no stray.
                with contextlib.suppress(CapacityUnavailable):
                    self.strays[sid] = start_stray_task(self.aws, ready)
            if fault == "event handler fails once":
                with self._lock:
                    failures = moto_fixes.SETTINGS.function_failures
                    failures[self.task_events] = failures.get(self.task_events, 0) + 1
            elif fault == "duplicate and stale events":
                stale = self.aws.ecs.event_detail(self.aws.ecs.task(self.cluster, arn))
                self.aws.ecs.put_task_event(stale)
                self.aws.ecs.put_task_event(stale)
            elif fault == "StopTask throttled":
                faults.FAULTS.inject("ecs", "StopTask", times=2)
            stops = 2 if fault == "two concurrent stops" else 1
            threads = [
                threading.Thread(target=self.lifecycle.request_stop, args=(sid, "user")) for _ in range(stops)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)

    def _start(self, sid: str) -> str:
        return str(
            self.sfn.start_execution(
                stateMachineArn=self.outputs["StateMachineArn"],
                name=sid,
                input=json.dumps({"sessionId": sid}),
            )["executionArn"]
        )

    def _wait_parked(self, sid: str, waiting_for: WaitingFor, timeout: float) -> Session | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            session = self.store.require(sid)
            if session.waiting_for is waiting_for:
                return session
            if not session.status.is_live:
                return None
            time.sleep(0.05)
        return None

    def _wait_ended(self, sid: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.store.require(sid).status.is_live and time.monotonic() < deadline:
            time.sleep(0.1)

    # The reconciler's schedule --------------------------------------------------------------------------

    def reconcile(self) -> None:
        response = self.aws.client("lambda").invoke(FunctionName=self.reconciler, Payload=b"{}")
        report = json.loads(response["Payload"].read())
        if "FunctionError" in response:
            raise RuntimeError(f"the reconciler failed: {report}")
        with self._lock:
            self.repairs.update(repair["kind"] for repair in report["repairs"])

    def every(self, seconds: float, action: Callable[[], None], stop: threading.Event) -> threading.Thread:
        """Run `action` every `seconds` until `stop`; a failing run is kept in `errors`, and the next runs."""

        def loop() -> None:
            while not stop.wait(seconds):
                try:
                    action()
                except Exception as error:  # reported by soak(), not lost with the thread
                    self.errors.append(f"scheduled run failed: {error!r}")

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        return thread

    def violations(self, session_ids: list[str]) -> list[str]:
        table = self.aws.session().resource("dynamodb").Table(self.outputs["SessionsTableName"])
        problems = invariants.session_violations(self.aws.client("ecs"), self.cluster, table, session_ids)
        still_live = [s for s in map(self.store.require, session_ids) if s.status.is_live]
        ecs: Any = self.aws.client("ecs")
        for sid, stray in self.strays.items():
            session = self.store.require(sid)
            task = ecs.describe_tasks(cluster=self.cluster, tasks=[stray])["tasks"][0]
            if task["lastStatus"] != "STOPPED" or session.status_reason != "stopped by user":
                problems.append(
                    f"stray task {stray} is {task['lastStatus']}; its session {sid} ended {session.status.value}"
                    f" ({session.status_reason}), not as its user asked"
                )
        return problems + [
            f"session {s.session_id} ({self.fault_of.get(s.session_id)}) is still {s.status.value}"
            f" ({s.status_reason}, stop requested {s.stop_requested_at}, waiting for {s.waiting_for})"
            f" after its schedule ended it; workflow {self.workflows.outcome(s.session_id)}"
            for s in still_live
        ]


def soak(
    aws: OfflineAws, fargate: FakeFargate, *, sessions: int, grace_seconds: float, seed: int = SEED
) -> SoakResult:
    """Run `sessions` sessions with seeded faults on a deployed offline stack (its reconciler's grace
    period `grace_seconds`); return what broke."""
    rng = random.Random(seed)
    names, weights = zip(*FAULT_WEIGHTS.items(), strict=True)
    plans = [(i, rng.choices(names, weights)[0], random.Random(rng.getrandbits(64))) for i in range(sessions)]
    run = _Soak(aws, fargate)
    started = time.monotonic()
    stop = threading.Event()
    scheduler = run.every(RECONCILE_EVERY_SECONDS, run.reconcile, stop)
    with (
        mock.patch.object(moto_fixes.SETTINGS, "wait_scale", WAIT_SCALE),
        mock.patch.dict(os.environ, {"AGENT_POLL_SECONDS": "0"}),
        ThreadPoolExecutor(CONCURRENCY) as pool,
    ):
        session_ids = list(pool.map(lambda plan: run.session(*plan), plans))
    stop.set()
    scheduler.join(30)
    # One more run once everything is past the grace period: what the next scheduled run would do.
    time.sleep(grace_seconds + 1.2)  # records keep whole seconds
    run.reconcile()
    violations = run.errors + invariants.wait_for(lambda: run.violations(session_ids), timeout=30)
    return SoakResult(
        sessions=sessions,
        faults=Counter(fault for _, fault, _ in plans),
        violations=violations,
        repairs=run.repairs,
        seconds=round(time.monotonic() - started, 1),
    )


# The worst lifetime of a leaked task --------------------------------------------------------------------


def _template_defaults() -> dict[str, Any]:
    template = yaml_parse((ROOT / "template.yaml").read_text())
    defaults = {name: spec.get("Default") for name, spec in template["Parameters"].items()}
    resources = template["Resources"]
    defaults["ReconcilerTimeout"] = resources["ReconcilerFunction"]["Properties"]["Timeout"]
    container = resources["TerminalTaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    defaults["StopTimeout"] = container["StopTimeout"]
    return defaults


def max_orphan_lifetime_seconds() -> int:
    """A task orphaned just after a run started listing is seen by the next run, one period later, or
    later still while it is younger than the grace period; that run may take its whole timeout to reach
    it; StopTask then gives the container up to stopTimeout before it is killed. (One leak, or fewer
    leaks than ReconcilerMaxRepairs at once; a larger mass leak takes one more period per
    ReconcilerMaxRepairs tasks.)"""
    defaults = _template_defaults()
    period = int(defaults["ReconcilerPeriodMinutes"]) * 60
    grace = int(defaults["ReconcilerGraceSeconds"])
    return period + grace + int(defaults["ReconcilerTimeout"]) + int(defaults["StopTimeout"])


def faults_covered() -> int:
    from tests.reliability.matrix import FAULT_MATRIX

    return len(FAULT_MATRIX)


def run() -> dict[str, Any]:
    parameters = {
        "TerminalImageUri": "local/terminal:bench",
        "ReconcilerGraceSeconds": str(SOAK_GRACE_SECONDS),
    }
    with OfflineAws(ROOT / "template.yaml", parameters=parameters) as aws:
        faults.install()
        assert aws.stack is not None
        fargate = FakeFargate(aws, aws.stack.outputs["ClusterName"])
        fargate.start()
        try:
            result = soak(aws, fargate, sessions=SOAK_SESSIONS, grace_seconds=SOAK_GRACE_SECONDS)
        finally:
            fargate.close()
    return {
        "faults_covered": faults_covered(),
        "soak_sessions": result.sessions,
        "soak_seconds": result.seconds,
        "soak_faults": dict(sorted(result.faults.items())),
        "invariant_violations": len(result.violations),
        "invariant_violation_details": result.violations,
        "reconciler_repairs": sum(result.repairs.values()),
        "reconciler_repairs_by_kind": dict(sorted(result.repairs.items())),
        "max_orphan_lifetime_s": max_orphan_lifetime_seconds(),
    }
