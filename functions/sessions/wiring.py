"""Builds the control plane's objects once per configuration.

In Lambda the environment never changes, so this runs once per cold start. Offline, one process serves
several deployed stacks (tests, the local stack) whose functions differ only in their environment, so
the cache is keyed on it rather than being a module-level singleton.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

from sessions.callbacks import WorkflowCallbacks
from sessions.config import Settings
from sessions.ecs_tasks import EcsTasks
from sessions.lifecycle import Lifecycle
from sessions.reconciler import Reconciler
from sessions.service import SessionService
from sessions.store import SessionStore
from sessions.task_identity import TaskIdentity
from sessions.usage_reports import UsageReports
from sessions.workflows import Workflows
from sessions.workspace_access import WorkspaceAccess


@dataclass(frozen=True)
class Components:
    settings: Settings
    store: SessionStore
    tasks: EcsTasks
    lifecycle: Lifecycle
    service: SessionService
    reconciler: Reconciler


@dataclass(frozen=True)
class TaskCalls:
    """What terminal tasks call (each call authenticated as its task): credentials and usage reports."""

    workspace_access: WorkspaceAccess
    usage_reports: UsageReports


def components() -> Components:
    return _build(frozenset(os.environ.items()))


def task_calls() -> TaskCalls:
    return _build_task_calls(frozenset(os.environ.items()))


@cache
def _build_task_calls(environment: frozenset[tuple[str, str]]) -> TaskCalls:
    built = _build(environment)
    identity = TaskIdentity(built.settings, built.store)
    return TaskCalls(
        WorkspaceAccess(built.settings, identity),
        UsageReports(built.settings, built.store, built.lifecycle, identity),
    )


@cache
def _build(environment: frozenset[tuple[str, str]]) -> Components:
    settings = Settings.model_validate(dict(environment))
    store = SessionStore(settings.sessions_table)
    tasks = EcsTasks(settings)
    lifecycle = Lifecycle(settings, store, tasks, WorkflowCallbacks())
    reconciler = Reconciler(
        store,
        tasks,
        lifecycle,
        Workflows(settings.state_machine_arn),
        grace_seconds=settings.reconciler_grace_seconds,
        max_repairs=settings.reconciler_max_repairs,
    )
    service = SessionService(settings, store, lifecycle, tasks)
    return Components(settings, store, tasks, lifecycle, service, reconciler)
