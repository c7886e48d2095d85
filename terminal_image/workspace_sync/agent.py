"""The sync agent: initial pull, then push local changes and pull remote ones until told to stop.

One scheduling thread owns the index and decides; a bounded pool of workers moves bytes. A path is in
at most one transfer at a time. Failed transfers are retried with backoff (after boto3's own retries),
so an S3 outage delays changes but never drops them; on stop every pending change is flushed within
the deadline.
"""

from __future__ import annotations

import queue
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from . import counters as phases
from . import localfs
from .config import SyncConfig
from .counters import Counters
from .engine import Engine, Updates
from .ignore import SYNCIGNORE, IgnoreRules
from .localfs import DIR, LocalEntry
from .remote import RemoteEntry, RemoteStore
from .state import SyncIndex
from .watcher import ChangeQueue, start_watching

_TICK = 0.05
_SAVE_EVERY = 1.0
_STATUS_EVERY = 1.0
_PROGRESS_EVERY = 2.0
_INITIAL_ROUNDS = 5
_MAX_BACKOFF = 30.0


class InitialSyncError(RuntimeError):
    """The workspace could not be pulled; the session must not start on a partial tree."""


@dataclass
class Plan:
    """Work found by comparing the whole tree with the base."""

    pulls: dict[str, RemoteEntry | None] = field(default_factory=dict)
    pushes: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.pulls) + len(self.pushes)


class SyncAgent:
    def __init__(self, config: SyncConfig, client: Any, logger: Any) -> None:
        self.config = config
        self.log = logger
        self.counters = Counters()
        self.index = SyncIndex(config.state_dir / "index.json")
        self.store = RemoteStore(
            client, config.bucket, config.prefix, config.multipart_threshold, config.part_size
        )
        self.changes = ChangeQueue(config.debounce_seconds, config.max_delay_seconds)
        self._root = config.workspace_dir
        self._state_rel = self._state_dir_rel()
        self.engine = Engine(
            self._root, config.state_dir / "tmp", self.store, self.counters, logger, config.max_file_size
        )
        self.ignore = self._load_ignores()
        self._pool = ThreadPoolExecutor(config.concurrency, thread_name_prefix="sync")
        self._in_flight: dict[str, Future[Updates]] = {}
        self._finished: queue.SimpleQueue[str] = queue.SimpleQueue()  # paths whose transfer ended
        self._attempts: dict[str, int] = {}
        self._deferred_dirs: set[str] = set()
        # A listing started before one of our own writes must not undo it: each applied change gets a
        # generation, and a poll ignores paths changed after it started.
        self._generation = 0
        self._changed_at: dict[str, int] = {}
        self._stop = threading.Event()
        self._poll_now = threading.Event()
        self._observer: Any = None
        self._last_save = self._last_status = 0.0

    # -- control (safe from signal handlers and other threads) ------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def request_poll(self) -> None:
        self._poll_now.set()

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Pull the workspace, then watch it; raises InitialSyncError if the pull cannot be completed."""
        self._root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.config.state_dir / "tmp", ignore_errors=True)  # partial downloads of a past run
        self.index.load()
        self._set_phase(phases.PULLING)
        started = time.monotonic()
        for round_number in range(1, _INITIAL_ROUNDS + 1):
            plan = self._plan(self.store.list(), self._scan())
            if not plan:
                break
            self.log.info(
                "initial sync",
                extra={"round": round_number, "pulls": len(plan.pulls), "pushes": len(plan.pushes)},
            )
            failures = self._execute(plan, progress=True)
            if not failures:
                break
            if round_number == _INITIAL_ROUNDS:
                self._set_phase(phases.FAILED)
                raise InitialSyncError(
                    f"{len(failures)} paths could not be synced, e.g. {sorted(failures)[:5]}"
                )
            time.sleep(min(2**round_number * 0.5, _MAX_BACKOFF))
        # Watch only now (the pull's own writes are not changes), then catch what changed meanwhile.
        self._observer = start_watching(
            self._root, self.changes.add, self._skip_event, self.config.watcher, self.log
        )
        for rel in self._plan(None, self._scan()).pushes:
            self.changes.add(rel)
        self.index.save()
        self.log.info(
            "initial sync complete",
            extra={
                "seconds": round(time.monotonic() - started, 3),
                "files": self.counters.files_down,
                "bytes": self.counters.bytes_down,
                "tracked": len(self.index.entries),
            },
        )

    def run(self) -> int:
        """Sync until stopped, then flush; 0 when everything pending reached S3 in time."""
        self._set_phase(phases.RUNNING)
        next_poll = time.monotonic() + self.config.poll_seconds
        next_rescan = time.monotonic() + self.config.rescan_seconds
        poll: Future[dict[str, RemoteEntry]] | None = None
        poll_generation = 0
        while not self._stop.is_set():
            now = time.monotonic()
            self._reap()
            self._dispatch_pushes(self.changes.take(self._in_flight.keys(), now))
            if poll is None and (now >= next_poll or self._poll_now.is_set()):
                self._poll_now.clear()
                poll = self._pool.submit(self.store.list)
                poll_generation = self._generation
            if poll is not None and poll.done():
                self._apply_poll(poll, poll_generation)
                poll = None
                next_poll = time.monotonic() + self.config.poll_seconds
            if now >= next_rescan:
                for rel in self._plan(None, self._scan()).pushes:
                    self.changes.add(rel)
                next_rescan = now + self.config.rescan_seconds
            self._housekeeping()
            self._stop.wait(_TICK)
        return self.flush()

    def flush(self) -> int:
        """Push every local change not yet in S3, within the configured deadline."""
        self._set_phase(phases.FLUSHING)
        started = time.monotonic()
        deadline = started + self.config.flush_deadline_seconds
        self.log.info("flushing", extra={"pending": len(self.changes), "in_flight": len(self._in_flight)})
        flushed = 0
        while time.monotonic() < deadline:
            self._wait_all(deadline)
            for rel in self._plan(None, self._scan()).pushes:
                self.changes.add(rel)
            batch = self.changes.take(self._in_flight.keys(), flush=True)
            if not batch and not self._in_flight and not len(self.changes):
                break
            flushed += len(batch)
            self._dispatch_pushes(batch)
            if not batch:
                self._stop.wait(_TICK)  # only retries in backoff are left
        self._wait_all(deadline)
        self._stop_watching()
        self.index.save()
        left = len(self.changes) + len(self._in_flight)
        seconds = round(time.monotonic() - started, 3)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if left:
            self._set_phase(phases.FAILED)
            self.log.error(
                "flush deadline passed with changes not in S3", extra={"left": left, "seconds": seconds}
            )
            return 1
        self._set_phase(phases.STOPPED)
        self.log.info(
            "flush complete", extra={"paths": flushed, "seconds": seconds, **self.counters.snapshot()}
        )
        return 0

    def close(self) -> None:
        """Release threads without flushing (after a failed start)."""
        self._stop_watching()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- planning -----------------------------------------------------------------------------------------

    def _scan(self) -> dict[str, LocalEntry]:
        return dict(localfs.walk(self._root, "", self.ignore.ignored))

    def _plan(self, remote: dict[str, RemoteEntry] | None, local: dict[str, LocalEntry]) -> Plan:
        """Compare with the base: remote side by ETag (when listed), local side by stat."""
        plan = Plan()
        if remote is not None:
            for rel, remote_entry in remote.items():
                base = self.index.get(rel)
                changed = base is None or base.etag != remote_entry.etag
                if changed and not self.ignore.ignored(rel, remote_entry.is_dir):
                    plan.pulls[rel] = remote_entry
            for rel, base in self.index.entries.items():
                if rel not in remote and not self.ignore.ignored(rel, base.kind == DIR):
                    plan.pulls[rel] = None
        for rel, entry in local.items():
            base = self.index.get(rel)
            if base is None:
                if entry.kind != DIR or entry.empty_dir:
                    plan.pushes.add(rel)
            elif not base.same_stat(entry):
                plan.pushes.add(rel)
        for rel, base in self.index.entries.items():
            if rel not in local and not self.ignore.ignored(rel, base.kind == DIR):
                plan.pushes.add(rel)
        plan.pushes -= plan.pulls.keys()
        return plan

    # -- execution ----------------------------------------------------------------------------------------

    def _execute(self, plan: Plan, progress: bool) -> set[str]:
        """Run a whole plan to completion; returns the paths that failed."""
        total = len(plan)
        failures: set[str] = set()
        dir_removals = []
        for rel, remote in plan.pulls.items():
            base = self.index.get(rel)
            if remote is None and base is not None and base.kind == DIR:
                dir_removals.append(rel)
            else:
                self._submit(rel, self.engine.pull, rel, remote, base)
        for rel in plan.pushes:
            self._submit(rel, self.engine.push, rel, self.index.get(rel))
        done = 0
        last_progress = time.monotonic()
        while self._in_flight:
            finished, failed = self._reap(retry=False, block_seconds=_PROGRESS_EVERY)
            done += finished
            failures |= failed
            if progress and time.monotonic() - last_progress >= _PROGRESS_EVERY:
                last_progress = time.monotonic()
                self.log.info(
                    "sync progress",
                    extra={"done": done, "total": total, "bytes_down": self.counters.bytes_down},
                )
            self._housekeeping()
        for rel in sorted(dir_removals, key=lambda r: r.count("/"), reverse=True):
            self._apply(rel, self.engine.remove_dir(rel))
        return failures

    def _submit(self, rel: str, fn: Callable[..., Updates], *args: Any) -> None:
        future = self._pool.submit(fn, *args)
        self._in_flight[rel] = future
        future.add_done_callback(lambda _: self._finished.put(rel))

    def _dispatch_pushes(self, paths: list[str]) -> None:
        if any(rel == SYNCIGNORE for rel in paths):
            self.ignore = self._load_ignores()
        expanded: set[str] = set()
        for rel in paths:
            if self.ignore.ignored(rel):
                continue
            expanded.add(rel)
            if localfs.lstat(self._root, rel) is None:
                # A deleted directory takes its tracked children along; a deletion can leave an empty parent.
                expanded.update(self.index.under(rel))
                parent = rel.rpartition("/")[0]
                if parent:
                    expanded.add(parent)
        for rel in expanded:
            if rel in self._in_flight:
                self.changes.add(rel)
            elif not self.ignore.ignored(rel) and self.store.layout.fits(rel):
                self._submit(rel, self.engine.push, rel, self.index.get(rel))

    def _apply_poll(self, poll: Future[dict[str, RemoteEntry]], generation: int) -> None:
        try:
            remote = poll.result()
        except Exception as error:
            self.counters.add(errors=1)
            self.log.warning("remote listing failed; retrying at the next poll", extra={"error": repr(error)})
            return
        plan = self._plan(remote, {})
        for rel, entry in plan.pulls.items():
            if self._changed_at.get(rel, -1) >= generation:
                continue  # the listing predates our own write of this path
            if rel in self._in_flight or rel in self.changes:
                continue  # a local change is on its way; its conditional write will notice the remote one
            base = self.index.get(rel)
            if entry is None and base is not None and base.kind == DIR:
                self._deferred_dirs.add(rel)
            else:
                self._submit(rel, self.engine.pull, rel, entry, base)
        # Later polls start later: what changed before this one can no longer be undone by them.
        self._changed_at = {path: gen for path, gen in self._changed_at.items() if gen >= generation}

    def _reap(self, retry: bool = True, block_seconds: float = 0.0) -> tuple[int, set[str]]:
        """Apply finished transfers; failed pushes come back with backoff, failed pulls at the next poll.

        Completions arrive on a queue, so the cost is per finished transfer, not per transfer in flight.
        """
        finished = 0
        failed: set[str] = set()
        done: list[str] = []
        try:
            done.append(
                self._finished.get(timeout=block_seconds) if block_seconds else self._finished.get_nowait()
            )
            while True:
                done.append(self._finished.get_nowait())
        except queue.Empty:
            pass
        for rel in done:
            future = self._in_flight[rel]
            del self._in_flight[rel]
            finished += 1
            try:
                self._apply(rel, future.result())
            except Exception as error:
                failed.add(rel)
                attempts = self._attempts.get(rel, 0) + 1
                self._attempts[rel] = attempts
                self.counters.add(errors=1)
                self.log.warning(
                    "transfer failed", extra={"path": rel, "attempt": attempts, "error": repr(error)}
                )
                if retry:
                    self.changes.add(rel, delay=min(0.5 * 2**attempts, _MAX_BACKOFF))
        for rel in list(self._deferred_dirs):
            if not any(other.startswith(rel + "/") for other in self._in_flight):
                self._deferred_dirs.discard(rel)
                self._apply(rel, self.engine.remove_dir(rel))
        return finished, failed

    def _apply(self, rel: str, updates: Updates) -> None:
        self._attempts.pop(rel, None)
        for path, entry in updates.items():
            self.index.set(path, entry)
            self._changed_at[path] = self._generation
        self._generation += 1

    def _wait_all(self, deadline: float) -> None:
        while self._in_flight and time.monotonic() < deadline:
            self._reap(block_seconds=max(0.001, min(_TICK, deadline - time.monotonic())))

    # -- small helpers ------------------------------------------------------------------------------------

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_save >= _SAVE_EVERY:
            self.index.save()
            self._last_save = now
        if now - self._last_status >= _STATUS_EVERY:
            self._write_status()
            self._last_status = now

    def _write_status(self) -> None:
        self.counters.pending = len(self.changes) + len(self._in_flight)
        self.counters.lag_seconds = round(self.changes.oldest_age(), 3)
        self.counters.write_status(self.config.status_file)

    def _set_phase(self, phase: str) -> None:
        self.counters.phase = phase
        self._write_status()

    def _stop_watching(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def _skip_event(self, rel: str) -> bool:
        return self._state_rel is not None and (
            rel == self._state_rel or rel.startswith(self._state_rel + "/")
        )

    def _state_dir_rel(self) -> str | None:
        try:
            return str(self.config.state_dir.relative_to(self._root))
        except ValueError:
            return None

    def _load_ignores(self) -> IgnoreRules:
        always = [self._state_rel] if self._state_rel else []
        return IgnoreRules.load(
            self._root, self.config.use_default_ignores, self.config.extra_ignores, always
        )
