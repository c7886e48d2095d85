"""While running: local edits reach S3, remote edits reach the workspace, conflicts keep both sides."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support import eventually

from .conftest import bucket_tree, key


def test_local_create_edit_delete_and_empty_dirs_are_pushed(
    s3: Any, bucket: str, agents: Any, env: dict[str, str]
) -> None:
    root = Path(env["WORKSPACE_DIR"])
    agent = agents().start()

    (root / "notes").mkdir(parents=True)
    (root / "notes/todo.txt").write_text("one\n")
    eventually(lambda: bucket_tree(s3, bucket).get("notes/todo.txt") == b"one\n")

    (root / "notes/todo.txt").write_text("one\ntwo\n")
    eventually(lambda: bucket_tree(s3, bucket).get("notes/todo.txt") == b"one\ntwo\n")

    (root / "notes/todo.txt").unlink()
    (root / "later").mkdir()
    # the emptied folder and the new empty one are kept as markers; the file is gone
    eventually(lambda: set(bucket_tree(s3, bucket)) == {"notes/", "later/"})

    (root / "later").rmdir()
    eventually(lambda: set(bucket_tree(s3, bucket)) == {"notes/"})
    assert agent.agent.counters.files_up >= 2
    assert agent.stop() == 0


def test_ignored_paths_stay_local_and_syncignore_is_honoured(
    s3: Any, bucket: str, agents: Any, env: dict[str, str]
) -> None:
    root = Path(env["WORKSPACE_DIR"])
    root.mkdir(parents=True)
    (root / ".syncignore").write_text("*.log\n!keep.log\n")
    agent = agents().start()
    (root / "web/node_modules/.cache").mkdir(parents=True)
    (root / "web/node_modules/.cache/big").write_bytes(b"x" * 100)
    (root / "web/node_modules/lib.js").write_text("module.exports = 1\n")
    (root / "debug.log").write_text("noise")
    (root / "keep.log").write_text("wanted")
    eventually(lambda: {"keep.log", "web/node_modules/lib.js"} <= set(bucket_tree(s3, bucket)))
    assert agent.stop() == 0
    assert set(bucket_tree(s3, bucket)) == {".syncignore", "keep.log", "web/node_modules/lib.js"}


def test_remote_edits_and_deletes_are_pulled(s3: Any, bucket: str, agents: Any, env: dict[str, str]) -> None:
    root = Path(env["WORKSPACE_DIR"])
    s3.put_object(Bucket=bucket, Key=key("app/main.py"), Body=b"v1")
    s3.put_object(Bucket=bucket, Key=key("app/old.py"), Body=b"old")
    agent = agents().start()
    assert (root / "app/main.py").read_bytes() == b"v1"

    # the IDE editor saves and deletes through S3
    s3.put_object(Bucket=bucket, Key=key("app/main.py"), Body=b"v2 from the editor")
    s3.put_object(Bucket=bucket, Key=key("app/new.py"), Body=b"new")
    s3.delete_object(Bucket=bucket, Key=key("app/old.py"))

    eventually(lambda: (root / "app/main.py").read_bytes() == b"v2 from the editor")
    eventually(lambda: (root / "app/new.py").exists() and not (root / "app/old.py").exists())
    assert agent.stop() == 0
    # pulling did not echo anything back: the objects are the editor's own
    assert bucket_tree(s3, bucket) == {"app/main.py": b"v2 from the editor", "app/new.py": b"new"}


def test_conflicting_edits_keep_both_versions(s3: Any, bucket: str, agents: Any, env: dict[str, str]) -> None:
    # Given a synced file and an agent that will not poll before the local save
    root = Path(env["WORKSPACE_DIR"])
    s3.put_object(Bucket=bucket, Key=key("doc.txt"), Body=b"base")
    agent = agents(SYNC_POLL_SECONDS="3600").start()

    # When the editor saves through S3 and the terminal saves locally, both from the same base
    s3.put_object(Bucket=bucket, Key=key("doc.txt"), Body=b"editor version")
    (root / "doc.txt").write_bytes(b"terminal version")

    # Then S3 keeps the editor's version under the name and the terminal's beside it, on both sides
    def both() -> dict[str, bytes] | None:
        tree = bucket_tree(s3, bucket)
        return tree if len(tree) == 2 else None

    tree = eventually(both)
    assert tree["doc.txt"] == b"editor version"
    (copy,) = [name for name in tree if name != "doc.txt"]
    assert re.fullmatch(r"doc\.conflict-local-\d{8}T\d{6}Z\.txt", copy)
    assert tree[copy] == b"terminal version"
    eventually(lambda: (root / "doc.txt").read_bytes() == b"editor version")
    assert (root / copy).read_bytes() == b"terminal version"
    assert agent.agent.counters.conflicts == 1
    assert agent.stop() == 0


def test_conflict_found_at_start_keeps_both_versions(
    s3: Any, bucket: str, agents: Any, env: dict[str, str]
) -> None:
    root = Path(env["WORKSPACE_DIR"])
    s3.put_object(Bucket=bucket, Key=key("a.py"), Body=b"base")
    assert agents().start().stop() == 0
    # both sides change while no agent runs
    s3.put_object(Bucket=bucket, Key=key("a.py"), Body=b"remote")
    (root / "a.py").write_bytes(b"local")
    agents().agent.start()
    tree = bucket_tree(s3, bucket)
    assert tree["a.py"] == b"remote"
    assert sorted(tree.values()) == [b"local", b"remote"]
    assert sorted(p.read_bytes() for p in root.glob("a*.py")) == [b"local", b"remote"]


def test_large_file_is_uploaded_in_parts_and_verified(
    s3: Any, bucket: str, agents: Any, env: dict[str, str], tmp_path: Path
) -> None:
    root = Path(env["WORKSPACE_DIR"])
    root.mkdir(parents=True)
    data = os.urandom(12 * 1024 * 1024 + 123)
    (root / "big.bin").write_bytes(data)
    size_limits = {"SYNC_MULTIPART_THRESHOLD": str(5 * 1024 * 1024), "SYNC_PART_SIZE": str(5 * 1024 * 1024)}
    agents(**size_limits).agent.start()

    head = s3.head_object(Bucket=bucket, Key=key("big.bin"))
    assert head["ETag"].strip('"').endswith("-3")  # three parts
    assert head["Metadata"]["cloudide-sha256"] == hashlib.sha256(data).hexdigest()
    second = tmp_path / "second"
    agents(WORKSPACE_DIR=str(second), **size_limits).agent.start()
    assert (second / "big.bin").read_bytes() == data


def test_a_file_over_the_maximum_size_is_not_uploaded_and_said_loudly(
    s3: Any, bucket: str, agents: Any, env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    root = Path(env["WORKSPACE_DIR"])
    root.mkdir(parents=True)
    (root / "small.txt").write_bytes(b"x" * 1000)
    (root / "huge.bin").write_bytes(b"x" * 1001)
    harness = agents(SYNC_MAX_FILE_SIZE="1000")
    harness.agent.engine.log = logging.getLogger("workspace-sync-engine")  # captured, unlike Powertools'

    with caplog.at_level(logging.INFO, "workspace-sync-engine"):
        harness.agent.start()
        harness.agent.engine.push("huge.bin", None)  # a later change event: reported once per size

    harness.agent.counters.write_status(harness.config.status_file)
    assert set(bucket_tree(s3, bucket)) == {"small.txt"}
    refusals = [r for r in caplog.records if "NOT uploaded" in r.getMessage()]
    assert [(r.levelname, r.path, r.bytes) for r in refusals] == [("ERROR", "huge.bin", 1001)]  # type: ignore[attr-defined]
    assert json.loads(harness.config.status_file.read_text())["too_large"] == 1
