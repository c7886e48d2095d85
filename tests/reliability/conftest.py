"""The fault matrix runs on the workflow tests' offline stack: the same fixtures, not a copy."""

from tests.workflow.conftest import offline, offline_stack, stack_parameters

__all__ = ["offline", "offline_stack", "stack_parameters"]
