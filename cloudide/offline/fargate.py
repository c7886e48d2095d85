"""A scripted Fargate for the offline AWS: moves the cluster's tasks the way ECS does.

The workflow tests and the control-plane benchmark use it to play the ECS side of a session: each new
task goes PENDING -> RUNNING (exec agent RUNNING) unless the script says otherwise, StopTask leads to
STOPPED, and every change emits the task-state event the real rule delivers to the real handler. The
local stack replaces it with a runner that starts real sandboxed processes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cloudide.offline.stack import OfflineAws


@dataclass
class TaskScript:
    """How the fake Fargate treats the next task it sees."""

    reach_running: bool = True
    agent_ready: bool = True
    crash_on_start: bool = False  # STOPPED with TaskFailedToStart instead of RUNNING
    pending_delay: float = 0.05
    running_delay: float = 0.1
    stop_delay: float = 0.1
    stop_event: bool = True  # False: the STOPPED event is lost
    start_events: bool = True  # False: the events of its start (PENDING, RUNNING, ...) are lost


@dataclass
class FakeFargate:
    """Moves every task of the cluster through PENDING -> RUNNING (-> agent RUNNING), and to STOPPED on
    StopTask, emitting the task-state events ECS would."""

    aws: OfflineAws
    cluster: str
    script: TaskScript = field(default_factory=TaskScript)
    # Per session (the task's startedBy): scripts that override `script`, so faults can differ at once.
    scripts: dict[str, TaskScript] = field(default_factory=dict)
    # The container's SIGTERM handler: called with the task ARN when ECS would signal the container
    # (StopTask, a Spot interruption); returns its exit code. The task stops once it returns.
    on_sigterm: Callable[[str], int] | None = None
    seen: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _changing: threading.Lock = field(default_factory=threading.Lock)  # one status change at a time
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.aws.ecs.on_stop_task(self._on_stop_task)
        watcher = threading.Thread(target=self._watch, name="fake-fargate", daemon=True)
        watcher.start()
        self._threads.append(watcher)

    def close(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        ecs: Any = self.aws.client("ecs")
        while not self._stop.is_set():
            for arn in ecs.list_tasks(cluster=self.cluster, desiredStatus="RUNNING").get("taskArns", []):
                if arn not in self.seen:
                    self.seen.add(arn)
                    self._spawn(self._start_task, arn, self._script_for(arn))
            self._stop.wait(0.05)

    def _script_for(self, arn: str) -> TaskScript:
        return self.scripts.get(self.aws.ecs.task(self.cluster, arn).started_by, self.script)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _start_task(self, arn: str, script: TaskScript) -> None:
        time.sleep(script.pending_delay)
        if not self._report_unless_stopping(arn, script, "PENDING"):
            return
        time.sleep(script.running_delay)
        if script.crash_on_start:
            self._report_unless_stopping(
                arn, script, "STOPPED", stop_code="TaskFailedToStart",
                stopped_reason="CannotPullContainerError: pull image manifest has been retried 5 time(s)",
            )  # fmt: skip
            return
        if script.reach_running:
            self._report_unless_stopping(
                arn, script, "RUNNING", agent_status="RUNNING" if script.agent_ready else "PENDING"
            )

    def _report_unless_stopping(self, arn: str, script: TaskScript, last_status: str, **changes: Any) -> bool:
        """A task asked to stop while it starts goes to STOPPED (the stop path reports it), never on."""
        with self._changing:
            if self.aws.ecs.task(self.cluster, arn).desired_status == "STOPPED":
                return False
            detail = self.aws.ecs.set_task_status(self.cluster, arn, last_status, **changes)
            if script.start_events:
                self.aws.ecs.put_task_event(detail)
            return True

    def _on_stop_task(self, task: Any) -> None:
        self._spawn(self._stop_task, task.task_arn, self._script_for(task.task_arn))

    def _stop_task(self, arn: str, script: TaskScript) -> None:
        time.sleep(script.stop_delay)
        exit_code = self._sigterm(arn)
        with self._changing:
            detail = self.aws.ecs.set_task_status(
                self.cluster,
                arn,
                "STOPPED",
                stop_code="UserInitiated",  # stoppedReason stays what StopTask said, as on ECS
                exit_code=exit_code,
            )
        if script.stop_event:
            self.aws.ecs.put_task_event(detail)

    def _sigterm(self, arn: str) -> int:
        return self.on_sigterm(arn) if self.on_sigterm else 0

    def interrupt_spot(self, arn: str) -> dict[str, Any]:
        """Fargate Spot reclaims the task: SIGTERM (the container flushes), then STOPPED."""
        return self.crash(
            arn,
            stop_code="SpotInterruption",
            stopped_reason="Your Spot Task was interrupted.",
            exit_code=self._sigterm(arn),
        )

    def crash(self, arn: str, **changes: Any) -> dict[str, Any]:
        """The task dies on its own (OOM, Spot interruption, ...): emit its STOPPED event."""
        with self._changing:
            return self.aws.ecs.report(self.cluster, arn, "STOPPED", **changes)
