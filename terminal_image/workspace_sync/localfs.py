"""The local side: what is on disk, its content hash, and writes that never follow a symlink out.

The remote tree is untrusted input: a symlink pulled from S3 must not let a later object write through
it, so every write checks that each parent of the target is a real directory inside the workspace.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1024 * 1024

FILE = "file"
SYMLINK = "symlink"
DIR = "dir"


class UnsafePath(Exception):
    """A parent of the target is a symlink or not a directory; writing there could escape the workspace."""


@dataclass(frozen=True)
class LocalEntry:
    kind: str
    size: int
    mtime_ns: int
    mode: int
    empty_dir: bool = False


def lstat(root: Path, rel: str) -> LocalEntry | None:
    """The entry at ``rel``, or None when absent or a kind we do not sync (socket, fifo, device)."""
    path = root / rel
    try:
        st = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISREG(st.st_mode):
        return LocalEntry(FILE, st.st_size, st.st_mtime_ns, mode)
    if stat.S_ISLNK(st.st_mode):
        return LocalEntry(SYMLINK, st.st_size, st.st_mtime_ns, mode)
    if stat.S_ISDIR(st.st_mode):
        try:
            with os.scandir(path) as it:
                empty = next(it, None) is None
        except OSError:
            empty = False
        return LocalEntry(DIR, 0, 0, mode, empty_dir=empty)
    return None


def walk(root: Path, start: str, skip: Callable[[str, bool], bool]) -> Iterator[tuple[str, LocalEntry]]:
    """Every syncable entry under ``start`` (a relative dir, "" for the root), pruning skipped dirs."""
    stack = [start]
    while stack:
        rel_dir = stack.pop()
        try:
            with os.scandir(root / rel_dir if rel_dir else root) as it:
                children = list(it)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for child in children:
            rel = f"{rel_dir}/{child.name}" if rel_dir else child.name
            is_dir = child.is_dir(follow_symlinks=False)
            if skip(rel, is_dir):
                continue
            entry = lstat(root, rel)
            if entry is None:
                continue
            if is_dir:
                stack.append(rel)
            yield rel, entry


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def link_target(path: Path) -> bytes:
    return os.fsencode(os.readlink(path))


def content_sha256(root: Path, rel: str, entry: LocalEntry) -> str:
    """Hash of what would be uploaded: file content, or the link target for a symlink."""
    path = root / rel
    if entry.kind == SYMLINK:
        return hashlib.sha256(link_target(path)).hexdigest()
    return sha256_file(path)


def ensure_parents(root: Path, rel: str) -> Path:
    """Create the parents of ``rel`` as real directories; refuse to pass through a symlink."""
    parts = rel.split("/")[:-1]
    current = root
    for part in parts:
        current = current / part
        try:
            st = current.lstat()
        except FileNotFoundError:
            try:
                current.mkdir(mode=0o755)
                continue
            except FileExistsError:
                # Another worker created it first; it still has to be a real directory.
                st = current.lstat()
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePath(f"{rel}: parent {current.relative_to(root)} is not a directory")
    return root / rel


def temp_path(tmp_dir: Path) -> Path:
    """A fresh name in the agent's temp dir (same file system as the workspace, so rename is atomic)."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    return tmp_dir / f"part-{uuid.uuid4().hex}"


def install(root: Path, rel: str, source: Path) -> None:
    """Atomically move a downloaded file or link into place, replacing a file but never a directory."""
    target = ensure_parents(root, rel)
    if target.is_dir() and not target.is_symlink():
        raise UnsafePath(f"{rel}: a directory is in the way")
    os.replace(source, target)


def remove(root: Path, rel: str) -> bool:
    """Delete a file, link or empty directory; False when a directory still has content."""
    path = root / rel
    try:
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()
    except FileNotFoundError:
        return True
    except OSError as error:
        if error.errno == errno.ENOTEMPTY:
            return False
        raise
    return True
