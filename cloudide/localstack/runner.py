"""The local stack's Fargate: every task RunTask starts in the offline ECS becomes a real sandboxed process
running the terminal image's entrypoint, and every change of that process becomes the task-state event
ECS would emit.

It watches the cluster as :class:`cloudide.offline.fargate.FakeFargate` does (the scripted stand-in the
workflow tests use), but the states are earned: PENDING when the task is seen, RUNNING once the
entrypoint is up (the sync agent reports a live phase), the exec agent RUNNING once the first workspace
pull is done, and STOPPED when the process is gone, with the stop code, stopped reason, exit code and
container reason ECS reports for a clean stop, a crash, an OOM kill or an entrypoint that never came up.
StopTask is honoured as ECS does: SIGTERM, the container's stopTimeout, then SIGKILL.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cloudide.localstack.awslogs import LogShipper
from cloudide.localstack.bridge import EndpointBridge
from cloudide.localstack.sandbox import Isolation, Limits, Sandbox, SandboxError, SandboxHost
from cloudide.localstack.volumes import MountPoint, mounts_under, unmount
from cloudide.offline.sam import ACCOUNT_ID
from cloudide.offline.stack import OfflineAws

logger = logging.getLogger(__name__)

OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"
ESSENTIAL_EXITED = "Essential container in task exited"
DEFAULT_CPU_UNITS = 256  # a task definition without a Cpu: Fargate's smallest size
DEFAULT_STOP_TIMEOUT_S = 30  # ECS's default when the container definition sets none
LOG_SHIP_INTERVAL_S = 1.0  # how often the awslogs driver stand-in ships new container output
LIVE_PHASES = {"starting", "pulling", "running", "flushing"}  # workspace_sync's status.json phases


class TaskNotRunning(RuntimeError):
    """ExecuteCommand into a task this runner does not run, or that is not RUNNING (AWS refuses too)."""


@dataclass(frozen=True)
class TaskInfo:
    """One task as an operator sees it (`LocalTaskRunner.tasks()`)."""

    task_arn: str
    status: str  # the last status this runner reported
    pid: int | None  # host pid of the sandbox's pid 1
    limits: str  # the limits in effect
    directory: Path  # the task's volumes and container.log
    workspace: Path  # the host directory that is its /workspace
    user_uid: int  # the host uid its user (the image's uid 1000) runs as
    exec_ready: bool

    @property
    def log_path(self) -> Path:
        return self.directory / "container.log"


@dataclass
class _Task:
    arn: str
    sandbox: Sandbox | None = None
    status: str = "PROVISIONING"
    exec_ready: bool = False
    stop_requested: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    logs: LogShipper | None = None  # the awslogs driver: container.log to the local CloudWatch Logs


class LocalTaskRunner:
    """Runs the cluster's tasks as sandboxes (see :mod:`cloudide.localstack.sandbox`).

    `time_scale` multiplies the containers' stopTimeout (tests use a small one); `extra_env` is added to
    every task's environment (e.g. faster sync timers); `start_timeout` bounds how long an entrypoint may
    take to come up before the task fails to start. Call :meth:`close` before stopping the offline AWS:
    it stops every task as StopTask does, so each workspace is flushed to S3, and leaves no process.
    """

    def __init__(
        self,
        aws: OfflineAws,
        cluster: str,
        *,
        state_dir: Path,
        time_scale: float = 1.0,
        isolation: str = "auto",
        extra_env: Mapping[str, str] | None = None,
        max_tasks: int = 64,
        start_timeout: float = 60.0,
        poll_interval: float = 0.1,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if not aws.endpoint_url:
            raise ValueError("the offline AWS must run with server=True: sandboxes reach S3 over HTTP")
        self.aws = aws
        self.cluster = cluster
        self.state_dir = Path(state_dir)
        self.time_scale = time_scale
        self.extra_env = dict(extra_env or {})
        self.max_tasks = max_tasks
        self.start_timeout = start_timeout
        self.poll_interval = poll_interval
        self._cluster_name = cluster.split("/")[-1]
        self._host = SandboxHost.detect(f"cloudide-local-{self._cluster_name[-24:]}", isolation=isolation)
        port = urlsplit(aws.endpoint_url).port
        self._bridge = EndpointBridge([f"127.0.0.1:{port}", f"localhost:{port}"], ACCOUNT_ID)
        self._tasks: dict[str, _Task] = {}
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None
        self._unsubscribe: Any = None
        self._ecs: Any = aws.client("ecs")
        self._logs: Any = aws.client("logs")

    # --------------------------------------------------------------------------------- public surface

    @property
    def isolation(self) -> str:
        """e.g. "bubblewrap (cgroup v1 cpu+memory+pids)" or "plain process (UNSANDBOXED; ...)"."""
        return self._host.isolation

    @property
    def warning(self) -> str | None:
        """Set when tasks run unsandboxed: print it where the user will see it."""
        return self._host.warning

    def start(self) -> LocalTaskRunner:
        self._remove_task_directories()  # a killed runner's, if any
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._unsubscribe = self.aws.ecs.on_stop_task(self._on_stop_task)
        self._watcher = threading.Thread(target=self._watch, name="local-task-runner", daemon=True)
        self._watcher.start()
        logger.info("local task runner started", extra={"cluster": self.cluster, "isolation": self.isolation})
        return self

    def close(self, reason: str = "Local stack shut down", timeout: float | None = None) -> None:
        """Stop every task as StopTask would (SIGTERM, flush, stopTimeout, SIGKILL) and wait for them.
        Idempotent; `timeout` defaults to the longest stopTimeout ECS allows (120 s, scaled) plus slack."""
        if self._closing.is_set():
            return
        self._closing.set()
        if self._watcher:
            self._watcher.join(10)
        with self._lock:
            live = [task for task in self._tasks.values() if task.thread and task.thread.is_alive()]
        for task in live:
            try:
                self._ecs.stop_task(cluster=self.cluster, task=task.arn, reason=reason)
            except Exception as error:  # the offline AWS may already be gone: stop locally anyway
                logger.warning("StopTask failed during close", extra={"task": task.arn, "error": str(error)})
            task.stop_requested.set()
        budget = timeout if timeout is not None else 120 * self.time_scale + 15
        deadline = time.monotonic() + budget
        for task in live:
            assert task.thread
            task.thread.join(max(0.0, deadline - time.monotonic()))
            if task.thread.is_alive():
                logger.error("task did not stop in time", extra={"task": task.arn})
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None
        self._bridge.shutdown()
        self._host.close()
        self._remove_task_directories()

    def _remove_task_directories(self) -> None:
        """Every task's directory goes with the runner: its workspace copy is in S3 by now (each task
        flushed on SIGTERM), and its volumes, logs (shipped to the local CloudWatch Logs) and sockets
        must not outlive it for anyone to read."""
        if not self.state_dir.exists():
            return
        for mount_point in mounts_under(self.state_dir):
            unmount(mount_point)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> LocalTaskRunner:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def tasks(self) -> dict[str, TaskInfo]:
        with self._lock:
            tasks = list(self._tasks.values())
        return {
            task.arn: TaskInfo(
                task_arn=task.arn,
                status=task.status,
                pid=task.sandbox.pid if task.sandbox else None,
                limits=task.sandbox.limits_in_effect if task.sandbox else "",
                directory=self._directory(task.arn),
                workspace=task.sandbox.workspace if task.sandbox else self._directory(task.arn),
                user_uid=task.sandbox.user_uid if task.sandbox else -1,
                exec_ready=task.exec_ready,
            )
            for task in tasks
        }

    def exec_command(self, task_arn: str, command: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """argv and env that run `command` inside the task, as root, as ECS Exec does (pass them to
        `LocalPeer.new_session`). Raises TaskNotRunning unless the task is RUNNING with its process up."""
        with self._lock:
            task = self._tasks.get(task_arn) or next(
                (t for arn, t in self._tasks.items() if arn.split("/")[-1] == task_arn.split("/")[-1]), None
            )
        if task is None or task.sandbox is None or task.status != "RUNNING":
            status = task.status if task else "unknown to this runner"
            raise TaskNotRunning(f"task {task_arn} is not running ({status})")
        try:
            return task.sandbox.exec_argv(command)
        except SandboxError as error:
            raise TaskNotRunning(str(error)) from error

    # ------------------------------------------------------------------------------------- watching

    def _watch(self) -> None:
        while not self._closing.is_set():
            try:
                arns = self._ecs.list_tasks(cluster=self.cluster, desiredStatus="RUNNING").get("taskArns", [])
            except Exception as error:  # a transient failure of the local endpoint: try again
                logger.warning("ListTasks failed", extra={"error": str(error)})
                arns = []
            for arn in arns:
                self._adopt(arn)
            self._closing.wait(self.poll_interval)

    def _adopt(self, arn: str) -> None:
        with self._lock:
            if arn in self._seen or self._closing.is_set():
                return
            self._seen.add(arn)
            task = self._tasks[arn] = _Task(arn)
            full = sum(1 for t in self._tasks.values() if t.thread and t.thread.is_alive()) >= self.max_tasks
            task.thread = threading.Thread(
                target=self._refuse if full else self._run, args=(task,), name=f"task-{arn[-8:]}", daemon=True
            )
            # the thread owns the sandbox for its whole life: bwrap --die-with-parent is tied to it
            task.thread.start()

    def _on_stop_task(self, moto_task: Any) -> None:
        """Called by the offline ECS inside the StopTask request: never block here."""
        arn = moto_task.task_arn
        if str(moto_task.cluster_arn).split("/")[-1] != self._cluster_name:
            return
        with self._lock:
            task = self._tasks.get(arn)
            if task is None:  # stopped before the watcher saw it: it never starts
                self._seen.add(arn)
                task = self._tasks[arn] = _Task(arn)
                task.thread = threading.Thread(target=self._never_started, args=(task,), daemon=True)
                task.thread.start()
        task.stop_requested.set()

    # ------------------------------------------------------------------------------------ reporting

    def _report(self, task: _Task, status: str, **changes: Any) -> None:
        task.status = status
        try:
            self.aws.ecs.report(self.cluster, task.arn, status, **changes)
        except Exception as error:  # the offline AWS is shutting down: the process is handled anyway
            logger.warning("could not report the task state", extra={"task": task.arn, "error": str(error)})
        logger.info("task state", extra={"task": task.arn, "last_status": status, **changes})

    def _never_started(self, task: _Task) -> None:
        self._report(task, "STOPPED")

    def _refuse(self, task: _Task) -> None:
        self._report(
            task, "STOPPED", stop_code="TaskFailedToStart",
            stopped_reason=f"ResourceInitializationError: the local task runner already runs {self.max_tasks} tasks",
        )  # fmt: skip

    # ----------------------------------------------------------------------------------- one task

    def _directory(self, arn: str) -> Path:
        return self.state_dir / arn.split("/")[-1]

    def _run(self, task: _Task) -> None:
        """The task's whole life; whatever goes wrong, its processes go and its STOPPED event is sent."""
        try:
            self._run_task(task)
        except Exception as error:
            logger.exception("local task runner error", extra={"task": task.arn})
            self._finish(task)
            stop_code = "EssentialContainerExited" if task.status == "RUNNING" else "TaskFailedToStart"
            self._report(
                task, "STOPPED", stop_code=stop_code, stopped_reason=f"local task runner error: {error}"
            )

    def _run_task(self, task: _Task) -> None:
        self._report(task, "PENDING")
        try:
            sandbox, stop_timeout, task.logs = self._sandbox(task.arn)
            task.sandbox = sandbox
            sandbox.prepare()
            sandbox.start()
        except (SandboxError, OSError) as error:
            logger.error("task failed to start", extra={"task": task.arn, "error": str(error)})
            self._finish(task)
            self._report(task, "STOPPED", stop_code="TaskFailedToStart",
                         stopped_reason=f"CannotStartContainerError: {error}")  # fmt: skip
            return
        code = self._supervise(task, sandbox, stop_timeout)
        self._finish(task)
        if task.stop_requested.is_set():
            # StopTask already set the stop code and reason (UserInitiated, the caller's reason)
            self._report(task, "STOPPED", exit_code=code)
        elif sandbox.oom_killed:
            self._report(task, "STOPPED", stop_code="EssentialContainerExited", stopped_reason=ESSENTIAL_EXITED,
                         exit_code=137, container_reason=OOM_REASON)  # fmt: skip
        elif task.status != "RUNNING":
            self._report(
                task, "STOPPED", stop_code="TaskFailedToStart", exit_code=code,
                stopped_reason=f"CannotStartContainerError: the entrypoint exited with code {code} before it "
                f"was up (log: {sandbox.log_path})",
            )  # fmt: skip
        else:
            self._report(task, "STOPPED", stop_code="EssentialContainerExited", stopped_reason=ESSENTIAL_EXITED,
                         exit_code=code)  # fmt: skip

    def _supervise(self, task: _Task, sandbox: Sandbox, stop_timeout: float) -> int:
        """Follow the process until it is gone; returns the container's exit code."""
        started = time.monotonic()
        kill_at: float | None = None
        status_file = sandbox.workspace / ".cloudide-sync" / "status.json"
        shipped_at = started
        while (code := sandbox.poll()) is None:
            now = time.monotonic()
            if task.logs and now - shipped_at >= LOG_SHIP_INTERVAL_S:
                task.logs.ship()
                shipped_at = now
            if task.stop_requested.is_set() and kill_at is None:
                sandbox.signal(signal.SIGTERM)
                kill_at = now + stop_timeout
            elif kill_at is not None and now >= kill_at:
                logger.warning("stopTimeout passed: SIGKILL", extra={"task": task.arn})
                sandbox.kill()
            elif task.status != "RUNNING" and kill_at is None:
                if _phase(status_file) in LIVE_PHASES:
                    self._report(task, "RUNNING", agent_status="PENDING")
                elif now - started > self.start_timeout:
                    logger.error("entrypoint did not come up in time", extra={"task": task.arn})
                    sandbox.kill()
            elif task.status == "RUNNING" and not task.exec_ready and _phase(status_file) == "running":
                self.aws.ecs.set_agent_status(self.cluster, task.arn, "RUNNING")
                task.exec_ready = True
                logger.info("exec agent running", extra={"task": task.arn})
            time.sleep(0.05)
        return code

    def _finish(self, task: _Task) -> None:
        task.exec_ready = False
        if task.logs:
            task.logs.ship()
        if task.sandbox:
            task.sandbox.close()
            if task.sandbox.relay_socket:
                self._bridge.close(task.sandbox.relay_socket)

    def _task_role_credentials(self, definition: Mapping[str, Any], arn: str) -> dict[str, str]:
        """The task role's session, named after the task as ECS names it: what the vending function checks.

        ECS serves these from its credentials endpoint; here they are the container's environment, which
        the user's shell can read too (same uid), as it can query the endpoint on AWS. That is by design:
        the task role may only ask for credentials scoped to this session's workspace (SECURITY.md)."""
        role = definition.get("taskRoleArn")
        if not role:
            return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        sts: Any = self.aws.client("sts")
        session = sts.assume_role(RoleArn=role, RoleSessionName=arn.rsplit("/", 1)[-1])
        credentials = session["Credentials"]
        return {
            "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
            "AWS_SESSION_TOKEN": credentials["SessionToken"],
        }

    def _sandbox(self, arn: str) -> tuple[Sandbox, float, LogShipper | None]:
        """The task's sandbox, its scaled stopTimeout and its log driver, from the task definition and
        RunTask overrides."""
        described = self._ecs.describe_tasks(cluster=self.cluster, tasks=[arn])["tasks"][0]
        definition = self._ecs.describe_task_definition(taskDefinition=described["taskDefinitionArn"])
        definition = definition["taskDefinition"]
        container = definition["containerDefinitions"][0]
        overrides = described.get("overrides") or {}
        env = {item["name"]: item["value"] for item in container.get("environment", [])}
        for override in overrides.get("containerOverrides", []):
            if override.get("name") == container["name"]:
                env |= {item["name"]: item["value"] for item in override.get("environment", [])}
        region = self.aws.region
        env |= {**self._task_role_credentials(definition, arn), "AWS_REGION": region, "AWS_DEFAULT_REGION": region,
                "AWS_EXECUTION_ENV": "AWS_ECS_FARGATE", **self.extra_env}  # fmt: skip
        limits = Limits(
            cpu_units=int(overrides.get("cpu") or definition.get("cpu") or DEFAULT_CPU_UNITS),
            memory_mib=int(overrides.get("memory") or definition["memory"]),
        )
        name = arn.split("/")[-1]
        relay = self._bridge.open(name) if self._host.mode is Isolation.BUBBLEWRAP else None
        sandbox = Sandbox(
            self._host, name, self._directory(arn), env=env, limits=limits,
            aws_endpoint=self.aws.endpoint_url, relay_socket=relay,
            mounts=MountPoint.from_task_definition(container),
            read_only_root=_true(container.get("readonlyRootFilesystem", False)),
        )  # fmt: skip
        stop_timeout = float(container.get("stopTimeout") or DEFAULT_STOP_TIMEOUT_S) * self.time_scale
        return sandbox, stop_timeout, LogShipper.for_container(self._logs, sandbox.log_path, container, arn)


def _true(value: object) -> bool:
    """A task definition boolean; the template passes a parameter's "true"/"false" string through."""
    return value is True or str(value).lower() == "true"


def _phase(status_file: Path) -> str | None:
    try:
        return str(json.loads(status_file.read_text(encoding="utf-8")).get("phase"))
    except (OSError, ValueError):
        return None
