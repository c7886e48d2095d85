"""The fault matrix: every fault the reliability issue names, and the one test that injects it.

Each test ends with the shared invariant check (`Offline.check_invariants` or `assert_invariants`,
which calls it); test_matrix.py keeps this table honest, and bench/reliability.py reports its size.
"""

from __future__ import annotations

PATHS = "tests/workflow/test_paths.py"
RACES = "tests/workflow/test_races.py"
OWNERSHIP = "tests/workflow/test_task_ownership.py"
FAULTS = "tests/reliability/test_faults.py"
WORKSPACE = "tests/reliability/test_workspace_faults.py"
USAGE = "tests/workflow/test_usage.py"

FAULT_MATRIX: dict[str, str] = {
    "capacity failure then success": f"{PATHS}::test_capacity_failures_then_success_on_retry",
    "permanent RunTask failure": f"{PATHS}::test_run_task_refused_for_good_fails_at_once",
    "throttling storm on RunTask": f"{FAULTS}::test_run_task_throttling_storm",
    "throttling storm on StopTask": f"{FAULTS}::test_stop_task_throttling_storm",
    "throttling storm on DynamoDB": f"{FAULTS}::test_dynamodb_throttling_storm_after_run_task",
    "task never RUNNING": f"{PATHS}::test_task_never_running_times_out",
    "exec agent never ready": f"{PATHS}::test_exec_agent_never_ready",
    "crash during start": f"{PATHS}::test_task_crashes_while_starting",
    "OOM mid-session": f"{PATHS}::test_task_dies_mid_session[out-of-memory]",
    "Spot interruption (SIGTERM, flush, record says Spot)": (
        f"{WORKSPACE}::test_spot_interruption_flushes_the_workspace_and_says_spot"
    ),
    "user stop during provisioning": f"{PATHS}::test_user_stop_while_the_task_is_starting",
    "two concurrent stops": f"{RACES}::test_two_concurrent_stops_end_the_session_once",
    "stop racing the idle timeout": f"{FAULTS}::test_user_stop_racing_the_idle_timeout",
    "activity racing the idle stop": f"{RACES}::test_activity_racing_the_idle_timeout_keeps_the_session",
    "duplicate, reordered and stale task events": (
        f"{PATHS}::test_duplicate_and_out_of_order_events_never_move_a_session_back"
    ),
    "stray task with the session's startedBy (stopped; the session stays READY on its own task)": (
        f"{OWNERSHIP}::test_a_stray_task_is_stopped_and_the_session_stays_ready_on_its_own_task"
    ),
    "an ECS Exec idle cut every minute for an idle attached client (it stops at its idle timeout)": (
        f"{USAGE}::test_an_open_terminal_nobody_types_in_stops_at_its_idle_timeout"
    ),
    "a client that dies without closing (stops after the disconnect grace)": (
        f"{USAGE}::test_a_closed_terminal_stops_after_the_disconnect_grace"
    ),
    "a job running with no client (kept under work until it ends)": (
        f"{USAGE}::test_under_work_a_job_without_a_client_keeps_the_session_until_it_ends"
    ),
    "a silent job with a client (kept under work, stopped on time under input)": (
        f"{USAGE}::test_under_work_a_silent_job_in_an_attached_terminal_keeps_it"
    ),
    "a usage report from another task (refused)": (
        f"{USAGE}::test_a_report_from_a_task_that_is_not_the_sessions_own_is_refused"
    ),
    "lost STOPPED event (the reconciler repairs it)": f"{FAULTS}::test_lost_stopped_event_is_repaired_by_the_reconciler",
    "workflow execution aborted externally (the reconciler stops the task)": (
        f"{FAULTS}::test_workflow_aborted_externally_is_wound_down_by_the_reconciler"
    ),
    "event-handler Lambda failing twice then succeeding": (
        f"{FAULTS}::test_task_event_handler_failing_twice_then_succeeding"
    ),
    "S3 unavailable during the final flush (less than the deadline)": (
        f"{WORKSPACE}::test_s3_unavailable_during_the_final_flush_for_less_than_the_deadline"
    ),
}
