"""Local change notifications (inotify, or polling where inotify is unavailable) and their debouncing.

An editor's save is a burst of events (write, rename, chmod); the queue waits until a path has been
quiet for the debounce period, but never longer than the maximum delay, so a file rewritten
continuously is still pushed regularly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.polling import PollingObserver

from . import localfs

_IGNORED_EVENTS = frozenset({"opened", "closed_no_write"})


@dataclass
class _Pending:
    first: float
    last: float
    not_before: float


class ChangeQueue:
    """Paths waiting to be pushed, one entry per path (so its size is bounded by the tree's)."""

    def __init__(self, debounce_seconds: float, max_delay_seconds: float) -> None:
        self._debounce = debounce_seconds
        self._max_delay = max_delay_seconds
        self._items: dict[str, _Pending] = {}
        self._lock = threading.Lock()

    def add(self, rel: str, delay: float = 0.0, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            item = self._items.get(rel)
            if item is None:
                self._items[rel] = _Pending(now, now, now + delay)
            else:
                item.last = now
                item.not_before = max(item.not_before, now + delay)

    def take(self, busy: Container[str], now: float | None = None, flush: bool = False) -> list[str]:
        """Paths ready to push and not being transferred: quiet long enough or waited too long (or
        any, when flushing), and past their retry backoff."""
        now = time.monotonic() if now is None else now
        with self._lock:
            ready = [
                rel
                for rel, item in self._items.items()
                if rel not in busy
                and item.not_before <= now
                and (flush or item.last + self._debounce <= now or item.first + self._max_delay <= now)
            ]
            for rel in ready:
                del self._items[rel]
        return ready

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, rel: object) -> bool:
        with self._lock:
            return rel in self._items

    def oldest_age(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            return max((now - item.first for item in self._items.values()), default=0.0)


class _Handler(FileSystemEventHandler):
    def __init__(self, root: Path, on_path: Callable[[str], None], skip: Callable[[str], bool]) -> None:
        self._root = str(root)
        self._on_path = on_path
        self._skip = skip

    def _rel(self, path: str | bytes) -> str | None:
        text = path.decode("utf-8", "surrogateescape") if isinstance(path, bytes) else path
        if not text.startswith(self._root + "/"):
            return None
        rel = text[len(self._root) + 1 :]
        return None if self._skip(rel) else rel

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _IGNORED_EVENTS:
            return
        if event.is_directory and event.event_type == "modified":
            return  # children report their own events
        paths = [event.src_path]
        if event.event_type == "moved":
            paths.append(event.dest_path)
        for path in paths:
            rel = self._rel(path)
            if rel is None:
                continue
            self._on_path(rel)
        if event.is_directory and event.event_type in ("created", "moved"):
            # A tree moved or unpacked in may predate its watches: report everything inside it.
            target = self._rel(event.dest_path if event.event_type == "moved" else event.src_path)
            if target is not None:
                for rel, _ in localfs.walk(Path(self._root), target, lambda r, _d: self._skip(r)):
                    self._on_path(rel)


def start_watching(
    root: Path, on_path: Callable[[str], None], skip: Callable[[str], bool], mode: str, logger: Any
) -> Any:
    """Start an observer for the tree; ``auto`` falls back to polling when inotify cannot watch it."""
    handler = _Handler(root, on_path, skip)
    choices: dict[str, list[type[Any]]] = {"inotify": [InotifyObserver], "polling": [PollingObserver]}
    kinds = choices.get(mode, [InotifyObserver, PollingObserver])
    for kind in kinds:
        observer = kind(timeout=0.2) if kind is InotifyObserver else kind(timeout=1.0)
        try:
            observer.schedule(handler, str(root), recursive=True)
            observer.start()
        except OSError as error:
            logger.warning(
                "watcher unavailable, trying the next", extra={"watcher": kind.__name__, "error": str(error)}
            )
            continue
        logger.info("watching workspace", extra={"watcher": kind.__name__})
        return observer
    raise OSError(f"no file watcher could watch {root}")
