"""Initial pull: the tree in S3 appears in the workspace, exactly, and a pushed tree round-trips."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from .conftest import key, local_files

BINARY = bytes(range(256)) * 64


def test_initial_pull_reproduces_nested_binary_empty_unicode_symlinks_and_empty_dirs(
    s3: Any, bucket: str, agents: Any, env: dict[str, str]
) -> None:
    # Given a tree written to S3 by another tool (no metadata) plus the agent's own symlink, mode
    # and empty-directory objects
    plain = {
        "README.md": b"# project\n",
        "src/pkg/deep/nested/module.py": b"print('hi')\n",
        "assets/logo.bin": BINARY,
        "empty.txt": b"",
        "docs/naïve café/日本語.md": "unicode ✓".encode(),
    }
    for rel, body in plain.items():
        s3.put_object(Bucket=bucket, Key=key(rel), Body=body)
    s3.put_object(
        Bucket=bucket,
        Key=key("bin/run.sh"),
        Body=b"#!/bin/sh\necho run\n",
        Metadata={"cloudide-kind": "file", "cloudide-mode": "0755"},
    )
    s3.put_object(
        Bucket=bucket,
        Key=key("links/to-readme"),
        Body=b"../README.md",
        Metadata={"cloudide-kind": "symlink", "cloudide-mode": "0777"},
    )
    s3.put_object(Bucket=bucket, Key=key("build/output/"), Body=b"", Metadata={"cloudide-kind": "dir"})

    # When the agent starts
    agent = agents()
    agent.agent.start()
    root = Path(env["WORKSPACE_DIR"])

    # Then every file, mode, link and empty directory is there
    files = local_files(root)
    for rel, body in plain.items():
        assert files[rel] == body
        assert stat.S_IMODE((root / rel).stat().st_mode) == 0o644
    assert files["bin/run.sh"] == b"#!/bin/sh\necho run\n"
    assert stat.S_IMODE((root / "bin/run.sh").stat().st_mode) == 0o755
    assert os.readlink(root / "links/to-readme") == "../README.md"
    assert (root / "links/to-readme").read_bytes() == plain["README.md"]
    assert (root / "build/output").is_dir() and not any((root / "build/output").iterdir())
    assert agent.agent.counters.files_down == len(plain) + 3


def test_pushed_tree_round_trips_into_a_fresh_workspace(
    s3: Any, bucket: str, agents: Any, env: dict[str, str], tmp_path: Path
) -> None:
    # Given a workspace with modes, a symlink and an empty directory, synced by one agent
    first = Path(env["WORKSPACE_DIR"])
    (first / "tools").mkdir(parents=True)
    (first / "tools/build.sh").write_bytes(b"#!/bin/sh\n")
    (first / "tools/build.sh").chmod(0o750)
    (first / "data.bin").write_bytes(BINARY)
    os.symlink("tools/build.sh", first / "build")
    (first / "cache/empty").mkdir(parents=True)
    agents().agent.start()  # the initial sync pushes what is only local

    # When a second agent pulls the same prefix into another directory
    second = tmp_path / "second"
    agents(WORKSPACE_DIR=str(second)).agent.start()

    # Then the copy is identical in content, modes, links and empty directories
    assert local_files(second) == local_files(first)
    assert stat.S_IMODE((second / "tools/build.sh").stat().st_mode) == 0o750
    assert os.readlink(second / "build") == "tools/build.sh"
    assert (second / "cache/empty").is_dir()
    head = s3.head_object(Bucket=bucket, Key=key("data.bin"))
    assert head["Metadata"]["cloudide-mode"] == "0644"
