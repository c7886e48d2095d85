"""Which paths are never synced: defaults for caches, then the user's ``.syncignore`` (gitignore syntax).

The user's rules come after the defaults, so ``!pattern`` in ``.syncignore`` can re-include a default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path

import pathspec

SYNCIGNORE = ".syncignore"

DEFAULT_IGNORES: tuple[str, ...] = (
    "**/node_modules/.cache/",
    "__pycache__/",
    "*.pyc",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".cache/",
    ".*.swp",
    ".*.swx",
)


class IgnoreRules:
    """Matches relative paths against the rules; the agent's own state directory is always excluded."""

    def __init__(self, patterns: Iterable[str], always: Iterable[str] = ()) -> None:
        self._always = tuple(a.strip("/") for a in always if a.strip("/"))
        self._spec = pathspec.GitIgnoreSpec.from_lines(list(patterns))

    @classmethod
    def load(
        cls, workspace: Path, use_defaults: bool, extra: Iterable[str], always: Iterable[str]
    ) -> IgnoreRules:
        patterns = list(DEFAULT_IGNORES if use_defaults else ()) + list(extra)
        with contextlib.suppress(FileNotFoundError):
            patterns += (workspace / SYNCIGNORE).read_text(encoding="utf-8", errors="replace").splitlines()
        return cls(patterns, always)

    def ignored(self, rel: str, is_dir: bool = False) -> bool:
        for prefix in self._always:
            if rel == prefix or rel.startswith(prefix + "/"):
                return True
        return self._spec.match_file(rel + "/" if is_dir else rel)
