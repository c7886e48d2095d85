"""What local and remote last agreed on, per path: the base of every three-way decision.

A path changed locally when its stat (then its hash) differs from the base; it changed remotely when
its ETag differs. The index is saved atomically and often, so a killed agent restarts where it was
(the initial pull resumes, and nothing saved locally while it was down is missed).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .localfs import DIR, LocalEntry

_VERSION = 1


@dataclass(frozen=True)
class BaseEntry:
    kind: str
    etag: str
    size: int
    mtime_ns: int
    mode: int
    sha256: str

    def same_stat(self, local: LocalEntry) -> bool:
        """Cheap check: unchanged unless kind, mode, size or mtime moved (dirs: kind and mode only)."""
        if local.kind != self.kind or local.mode != self.mode:
            return False
        return self.kind == DIR or (local.size == self.size and local.mtime_ns == self.mtime_ns)

    def restat(self, local: LocalEntry) -> BaseEntry:
        return replace(self, size=local.size, mtime_ns=local.mtime_ns, mode=local.mode)


class SyncIndex:
    """The base entries, persisted as one JSON document replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, BaseEntry] = {}
        self._dirty = False

    def load(self) -> None:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (ValueError, OSError):
            # A torn or foreign file only costs re-hashing: every path is then compared by content.
            return
        if document.get("version") != _VERSION:
            return
        self.entries = {rel: BaseEntry(**fields) for rel, fields in document.get("entries", {}).items()}

    def get(self, rel: str) -> BaseEntry | None:
        return self.entries.get(rel)

    def set(self, rel: str, entry: BaseEntry | None) -> None:
        if entry is None:
            if self.entries.pop(rel, None) is not None:
                self._dirty = True
        elif self.entries.get(rel) != entry:
            self.entries[rel] = entry
            self._dirty = True

    def under(self, rel_dir: str) -> list[str]:
        prefix = rel_dir + "/"
        return [rel for rel in self.entries if rel.startswith(prefix)]

    def save(self) -> None:
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        document = {"version": _VERSION, "entries": {rel: asdict(e) for rel, e in self.entries.items()}}
        with tmp.open("w", encoding="utf-8") as out:
            json.dump(document, out, separators=(",", ":"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
        self._dirty = False
