"""Every asynchronous edge in the template has retries and a dead letter, every workflow step retries
throttling with jitter, and the reliability alarms watch what docs/reliability.md says they watch."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cloudide.offline import sam

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    translated = sam.translate(
        ROOT / "template.yaml", parameters={"TerminalImageUri": "x"}, region="us-east-1"
    )
    return dict(translated.template["Resources"])


def _of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: r["Properties"] for name, r in resources.items() if r["Type"] == kind}


def test_every_eventbridge_target_retries_then_dead_letters(resources: dict[str, Any]) -> None:
    rules = _of_type(resources, "AWS::Events::Rule")
    assert {"TaskEventsFunctionTaskStateChange", "ReconcilerFunctionReconcile"} <= set(rules)
    for name, rule in rules.items():
        for target in rule["Targets"]:
            assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0, name
            assert "Arn" in target["DeadLetterConfig"], name


def test_the_reconciler_runs_on_the_period_parameter(resources: dict[str, Any]) -> None:
    rule = resources["ReconcilerFunctionReconcile"]["Properties"]
    assert rule["ScheduleExpression"] == {"Fn::Sub": "rate(${ReconcilerPeriodMinutes} minutes)"}


@pytest.mark.parametrize(
    ("function", "reserved"),
    [
        ("TaskEventsFunction", 50),
        ("WorkspaceCredentialsFunction", 20),
        ("UsageReportFunction", 10),
        ("ReconcilerFunction", 1),
    ],
)
def test_reserved_concurrency_only_when_the_operator_asks(
    resources: dict[str, Any], function: str, reserved: int
) -> None:
    # A new account's quota (10) refuses any reservation (tests/offline/test_stack.py): off by default.
    assert resources[function]["Properties"]["ReservedConcurrentExecutions"] == {
        "Fn::If": ["ReservesConcurrency", reserved, {"Ref": "AWS::NoValue"}]
    }


def test_asynchronously_invoked_functions_keep_their_failures(resources: dict[str, Any]) -> None:
    configs = _of_type(resources, "AWS::Lambda::EventInvokeConfig")
    functions = {c["FunctionName"]["Ref"]: c for c in configs.values()}
    for function in ("TaskEventsFunction", "ReconcilerFunction"):
        config = functions[function]
        assert config["MaximumRetryAttempts"] == 2
        assert config["DestinationConfig"]["OnFailure"]["Destination"] == {
            "Fn::GetAtt": ["AsyncFailuresQueue", "Arn"]
        }


def test_every_lambda_step_retries_throttling_with_full_jitter() -> None:
    definition = json.loads((ROOT / "statemachines/session_lifecycle.asl.json").read_text())
    for name, state in definition["States"].items():
        if state["Type"] != "Task":
            continue
        throttling = [r for r in state["Retry"] if "ThrottlingException" in r["ErrorEquals"]]
        assert throttling, f"{name} sends throttling to the failure path"
        assert all(r["JitterStrategy"] == "FULL" and r["MaxDelaySeconds"] for r in throttling), name
        assert "Lambda.TooManyRequestsException" in throttling[0]["ErrorEquals"], name


@pytest.mark.parametrize(
    ("alarm", "metric"),
    [
        ("FailedStartsAlarm", "FailedStarts"),
        ("StartLatencyAlarm", "StartLatency"),
        ("SessionCapAlarm", "LiveSessions"),
        ("AsyncFailuresAlarm", "ApproximateNumberOfMessagesVisible"),
        ("TaskEventsDeadLetterAlarm", "ApproximateNumberOfMessagesVisible"),
        ("WorkflowFailuresAlarm", "ExecutionsFailed"),
    ],
)
def test_reliability_alarms_watch_their_metric(resources: dict[str, Any], alarm: str, metric: str) -> None:
    assert resources[alarm]["Properties"]["MetricName"] == metric


def test_the_repairs_alarm_sums_every_repair_kind(resources: dict[str, Any]) -> None:
    from sessions.reconciler import Repair

    queries = resources["ReconcilerRepairsAlarm"]["Properties"]["Metrics"]
    watched = {q["MetricStat"]["Metric"]["MetricName"] for q in queries if "MetricStat" in q}
    assert watched == {kind.value for kind in Repair}


def test_the_dashboard_is_valid_json_once_substituted(resources: dict[str, Any]) -> None:
    body, _ = resources["ReliabilityDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    widgets = json.loads(re.sub(r"\$\{[^}]*\}", "x", body))["widgets"]
    assert [w["properties"]["title"] for w in widgets] == [
        "Running sessions and tasks",
        "Start latency (s)",
        "Failed starts and workflow failures",
        "Reconciler repairs",
        "Dead-letter queue depth",
    ]
