"""How a workspace is laid out in S3: one object per file, symlink and empty directory.

- ``<prefix>/<relative path>``: a file (body = content) or a symlink (body = link target bytes).
- ``<prefix>/<relative path>/``: a zero-byte marker for a directory that is (or was) empty; non-empty
  directories are implied by their contents, as in the S3 console.
- User metadata (``x-amz-meta-*``): ``cloudide-kind`` (``file``, ``symlink``, ``dir``; absent = file,
  or dir for a key ending in ``/``), ``cloudide-mode`` (octal permission bits, e.g. ``0755``),
  ``cloudide-sha256`` (hex SHA-256 of the body, checked after every download), ``cloudide-mtime-ns``
  (the file's modification time, restored on pull). Objects written by other tools (the IDE editor)
  carry none of these and are treated as plain ``0644`` files.
"""

from __future__ import annotations

import time
from pathlib import PurePosixPath

KIND = "cloudide-kind"
MODE = "cloudide-mode"
SHA256 = "cloudide-sha256"
MTIME_NS = "cloudide-mtime-ns"

MAX_KEY_BYTES = 1024


class Layout:
    """Maps relative workspace paths to S3 keys and back under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.root = f"{prefix.strip('/')}/" if prefix.strip("/") else ""

    def key(self, rel: str, is_dir: bool = False) -> str:
        return f"{self.root}{rel}/" if is_dir else f"{self.root}{rel}"

    def rel(self, key: str) -> tuple[str, bool] | None:
        """The relative path and whether the key is a directory marker; None for keys we do not own."""
        if not key.startswith(self.root):
            return None
        rel = key[len(self.root) :]
        is_dir = rel.endswith("/")
        rel = rel.rstrip("/")
        if not rel or any(part in {"", ".", ".."} for part in rel.split("/")):
            return None
        return rel, is_dir

    def fits(self, rel: str) -> bool:
        """Whether a local name can be an S3 key: valid UTF-8 and short enough."""
        try:
            return len(self.key(rel, is_dir=True).encode("utf-8")) <= MAX_KEY_BYTES
        except UnicodeEncodeError:
            return False


def conflict_name(rel: str, side: str, now: float | None = None) -> str:
    """``dir/notes.conflict-local-20260101T120000Z.txt``: beside the original, sorted next to it."""
    path = PurePosixPath(rel)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    suffix = path.suffix if path.stem else ""
    stem = path.stem if path.stem else path.name
    return str(path.with_name(f"{stem}.conflict-{side}-{stamp}{suffix}"))
