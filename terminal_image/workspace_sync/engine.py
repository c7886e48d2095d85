"""Per-path decisions: the three-way comparison of local, remote and base, and its transfers.

Each method handles one path (plus the conflict copy it may create) and returns the new base entries;
the agent applies them. Nothing here loses a version: when both sides changed, the version already in
S3 keeps the name and the local one is renamed beside it (``<stem>.conflict-local-<UTC time><ext>``)
and uploaded too, so the IDE and the terminal both see both.
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path
from typing import Any

from . import layout, localfs
from .config import MAX_FILE_SIZE
from .counters import Counters
from .localfs import DIR, FILE, SYMLINK, LocalEntry
from .remote import Changed, RemoteEntry, RemoteStore, RemoteVersion
from .state import BaseEntry

Updates = dict[str, BaseEntry | None]

# A conflict copy can itself collide with a concurrent remote write; this bounds the back-and-forth.
_MAX_CONFLICT_DEPTH = 3
_PERMISSIONS = 0o777  # setuid/setgid/sticky bits from S3 are never applied


class Engine:
    def __init__(
        self,
        root: Path,
        tmp_dir: Path,
        store: RemoteStore,
        counters: Counters,
        logger: Any,
        max_file_size: int = MAX_FILE_SIZE,
    ) -> None:
        self.root = root
        self.tmp_dir = tmp_dir
        self.store = store
        self.counters = counters
        self.log = logger
        self.max_file_size = max_file_size
        self._too_large: dict[str, int] = {}  # path -> the size already reported

    # -- local -> remote ------------------------------------------------------------------------------

    def push(self, rel: str, base: BaseEntry | None, depth: int = 0) -> Updates:
        """Make S3 match the local path, unless S3 changed since the base (then keep both)."""
        local = localfs.lstat(self.root, rel)
        if local is None:
            return self._push_deletion(rel, base)
        if local.kind == DIR:
            return self._push_dir(rel, local, base)
        if base is not None and base.same_stat(local):
            return {}
        if local.kind == FILE and local.size > self.max_file_size:
            self._refuse_too_large(rel, local.size)
            return {}
        self._too_large.pop(rel, None)
        digest = localfs.content_sha256(self.root, rel, local)
        if base is not None and base.kind == local.kind and base.sha256 == digest and base.mode == local.mode:
            return {rel: base.restat(local)}
        expected = base.etag if base is not None and base.kind != DIR else None
        try:
            etag = self._upload(rel, local, digest, expected)
        except Changed:
            return self._conflict(rel, depth)
        updates: Updates = {rel: BaseEntry(local.kind, etag, local.size, local.mtime_ns, local.mode, digest)}
        if base is not None and base.kind == DIR:
            with suppress(Changed):
                self.store.delete(rel, True, base.etag)
        return updates

    def _upload(self, rel: str, local: LocalEntry, digest: str, expected: str | None) -> str:
        path = self.root / rel
        if local.kind == SYMLINK:
            etag = self.store.put_symlink(rel, localfs.link_target(path), local.mode, expected)
        else:
            etag = self.store.put_file(rel, path, local.mode, local.mtime_ns, digest, expected)
        self.counters.add(files_up=1, bytes_up=local.size)
        self.log.debug("pushed", extra={"path": rel, "bytes": local.size})
        return etag

    def _refuse_too_large(self, rel: str, size: int) -> None:
        """Leave the file local and say so, once for each size it has: its S3 copy (if any) stays as it was."""
        if self._too_large.get(rel) == size:
            return
        self._too_large[rel] = size
        self.counters.add(too_large=1)
        self.log.error(
            "file over the maximum size: NOT uploaded (it stays only in this task; set SYNC_MAX_FILE_SIZE "
            "to raise the limit)",
            extra={"path": rel, "bytes": size, "max_file_size": self.max_file_size},
        )

    def _push_deletion(self, rel: str, base: BaseEntry | None) -> Updates:
        if base is None:
            return {}
        try:
            self.store.delete(rel, base.kind == DIR, base.etag)
        except Changed:
            # Deleted here, edited there: keep the edit.
            self.log.info("remote edit wins over local delete", extra={"path": rel})
            return self._download(rel, base.kind == DIR, None)
        self.counters.add(deletes_up=1)
        self.log.debug("deleted remote", extra={"path": rel})
        return {rel: None}

    def _push_dir(self, rel: str, local: LocalEntry, base: BaseEntry | None) -> Updates:
        """Only empty directories need a marker; a marker once written stays while the dir exists."""
        if base is not None and base.kind == DIR and base.mode == local.mode:
            return {}
        updates: Updates = {}
        if base is not None and base.kind != DIR:
            with suppress(Changed):
                self.store.delete(rel, False, base.etag)
            updates[rel] = None
        if local.empty_dir or (base is not None and base.kind == DIR):
            expected = base.etag if base is not None and base.kind == DIR else None
            try:
                etag = self.store.put_dir(rel, local.mode, expected)
            except Changed:
                # Someone else wrote or removed the marker; a marker has no content to lose.
                current = self.store.head(rel, True)
                etag = self.store.put_dir(rel, local.mode, current.etag if current else None)
            updates[rel] = BaseEntry(DIR, etag, 0, 0, local.mode, "")
        return updates

    # -- remote -> local ------------------------------------------------------------------------------

    def pull(self, rel: str, remote: RemoteEntry | None, base: BaseEntry | None) -> Updates:
        """Make the local path match S3 (which changed since the base), keeping local edits."""
        local = localfs.lstat(self.root, rel)
        unchanged = self._unchanged(rel, local, base)
        if remote is None:
            if base is None:
                return {}
            if local is None:
                return {rel: None}
            if not unchanged:
                # Deleted there, edited here: keep the edit.
                return self.push(rel, None)
            if not localfs.remove(self.root, rel):
                return {}  # a directory whose children are not gone yet: retried on the next poll
            self.counters.add(deletes_down=1)
            self._prune_implicit_parents(rel)
            return {rel: None}
        if remote.is_dir:
            return self._pull_dir(rel, local, base)
        if unchanged or local is None:
            return self._download(rel, False, local)
        return self._conflict(rel, 0)

    def remove_dir(self, rel: str) -> Updates:
        """A directory deleted remotely, once its children are handled: remove it if it is empty."""
        local = localfs.lstat(self.root, rel)
        if local is None or local.kind != DIR:
            return {rel: None}
        if localfs.remove(self.root, rel):
            self.counters.add(deletes_down=1)
            self._prune_implicit_parents(rel)
        return {rel: None}

    def _pull_dir(self, rel: str, local: LocalEntry | None, base: BaseEntry | None) -> Updates:
        if local is not None and local.kind != DIR:
            self.log.warning(
                "remote directory marker shadows a local file; kept the file", extra={"path": rel}
            )
            return {}
        return self._download(rel, True, local)

    def _unchanged(self, rel: str, local: LocalEntry | None, base: BaseEntry | None) -> bool:
        if base is None or local is None:
            return base is None and local is None
        if base.same_stat(local):
            return True
        if local.kind != base.kind or local.kind == DIR or local.mode != base.mode:
            return local.kind == DIR and base.kind == DIR
        return localfs.content_sha256(self.root, rel, local) == base.sha256

    def _prune_implicit_parents(self, rel: str) -> None:
        """S3 folders without a marker vanish with their last object; mirror that locally."""
        parent = rel.rpartition("/")[0]
        while parent and self.store.head(parent, True) is None:
            if not localfs.remove(self.root, parent):
                break
            parent = parent.rpartition("/")[0]

    def _download(self, rel: str, is_dir: bool, expect_local: LocalEntry | None) -> Updates:
        tmp = localfs.temp_path(self.tmp_dir)
        try:
            version = self.store.get(rel, is_dir, tmp, lambda n: self.counters.add(bytes_down=n))
            if version is None:
                return {}  # gone since the listing: the next poll sees the deletion
            if localfs.lstat(self.root, rel) != expect_local and not is_dir:
                # Edited locally while downloading: treat as a conflict, reusing the download.
                return self._keep_both(rel, version, tmp, 0)
            return {rel: self._install(rel, version, tmp)}
        finally:
            with suppress(FileNotFoundError):
                tmp.unlink()

    def _install(self, rel: str, version: RemoteVersion, tmp: Path) -> BaseEntry:
        mode = version.mode & _PERMISSIONS
        if version.kind == DIR:
            localfs.ensure_parents(self.root, rel)
            path = self.root / rel
            path.mkdir(mode=0o755, exist_ok=True)
            path.chmod(mode)
        elif version.kind == SYMLINK:
            with suppress(FileNotFoundError):
                tmp.unlink()
            os.symlink(os.fsdecode(version.link_target), tmp)
            localfs.install(self.root, rel, tmp)
        else:
            tmp.chmod(mode)
            if version.mtime_ns is not None:
                os.utime(tmp, ns=(version.mtime_ns, version.mtime_ns))
            localfs.install(self.root, rel, tmp)
        self.counters.add(files_down=1)
        local = localfs.lstat(self.root, rel)
        if local is None:
            raise FileNotFoundError(f"{rel} vanished right after it was installed")
        return BaseEntry(local.kind, version.etag, local.size, local.mtime_ns, local.mode, version.sha256)

    # -- both changed -----------------------------------------------------------------------------------

    def _conflict(self, rel: str, depth: int) -> Updates:
        tmp = localfs.temp_path(self.tmp_dir)
        try:
            version = self.store.get(rel, False, tmp, lambda n: self.counters.add(bytes_down=n))
            if version is None:
                return self.push(rel, None, depth + 1) if depth < _MAX_CONFLICT_DEPTH else {}
            return self._keep_both(rel, version, tmp, depth)
        finally:
            with suppress(FileNotFoundError):
                tmp.unlink()

    def _keep_both(self, rel: str, version: RemoteVersion, tmp: Path, depth: int) -> Updates:
        local = localfs.lstat(self.root, rel)
        if local is None:
            return {rel: self._install(rel, version, tmp)}
        same_kind = local.kind in (FILE, SYMLINK) and local.kind == version.kind
        if same_kind and localfs.content_sha256(self.root, rel, local) == version.sha256:
            # Same content on both sides (e.g. a restart after an unrecorded upload): adopt it.
            return {
                rel: BaseEntry(
                    local.kind, version.etag, local.size, local.mtime_ns, local.mode, version.sha256
                )
            }
        loser = layout.conflict_name(rel, "local")
        os.rename(self.root / rel, self.root / loser)
        self.counters.add(conflicts=1)
        self.log.warning("conflict: kept both versions", extra={"path": rel, "local_copy": loser})
        updates: Updates = {rel: self._install(rel, version, tmp)}
        if depth < _MAX_CONFLICT_DEPTH:
            updates.update(self.push(loser, None, depth + 1))
        return updates
