"""The fault matrix names one existing test per fault, and each ends with the shared invariant check."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.reliability.matrix import FAULT_MATRIX

ROOT = Path(__file__).resolve().parents[2]
INVARIANT_CHECKS = {"check_invariants", "assert_invariants"}


def _test_function(node_id: str) -> ast.FunctionDef:
    path, _, name = node_id.partition("::")
    tree = ast.parse((ROOT / path).read_text())
    function_name = name.split("[")[0]
    return next(
        node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == function_name
    )


@pytest.mark.parametrize("fault", sorted(FAULT_MATRIX))
def test_each_fault_has_a_test_that_ends_with_the_invariant_check(fault: str) -> None:
    function = _test_function(FAULT_MATRIX[fault])
    calls = [
        node.func.attr
        for node in ast.walk(function)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    ]
    assert INVARIANT_CHECKS & set(calls), f"{FAULT_MATRIX[fault]} never checks the invariants"
    last_check = max(
        node.lineno
        for node in ast.walk(function)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in INVARIANT_CHECKS
    )
    actions = [
        node.lineno
        for node in ast.walk(function)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", None) in {"request_stop", "crash", "start"}
    ]
    assert not actions or last_check > max(actions), "the check must come after the last thing the test does"


def test_no_test_covers_two_faults() -> None:
    assert len(set(FAULT_MATRIX.values())) == len(FAULT_MATRIX)
