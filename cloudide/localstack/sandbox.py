"""A container without Docker: one bubblewrap sandbox per local task, shaped like the terminal image.

The sandbox is what the Fargate task is to the image: a root made of the host's /usr and /etc, the Python
install, and only what the image itself holds of this repository (``terminal_image/`` at
/opt/cloudide/terminal_image, the virtualenv, the exec wrapper); never the repository or the local
stack's state. The task definition's volumes are mounted as Fargate makes them (:mod:`volumes`: root
0755 unless the image declares them) on a per-task disk bounded like ephemeral storage; the root is
read-only when the task definition says so. Each sandbox has its own pid, network (loopback only), IPC
and UTS namespaces, the task size as cgroup limits, and its own host ids: the entrypoint and every ECS
Exec command run in a user namespace mapping the image's ids to a range no other task has
(:class:`TaskIds`), so no task can read another's files, signal or trace its processes or reach its
sockets. The entrypoint runs unmodified (``python3 -m workspace_sync run`` as uid 1000) under
:mod:`task_init`, which plays tini and relays the sandbox's AWS endpoint to the host through a unix
socket: the loopback-only network reaches the local AWS (S3, and Lambda for credential vending, each
request authorized as AWS would: :mod:`cloudide.localstack.task_access`) and nothing else.

Fallbacks, chosen once per host by :meth:`SandboxHost.detect`:
- no bubblewrap: a plain process on the host (cwd = the task's workspace, network shared) -- only when
  asked for (``cloudide local --unsandboxed``) and loudly UNSANDBOXED (:attr:`SandboxHost.warning`);
- no writable cgroup (v2 with delegation, or v1): a polling RSS watchdog enforces the memory limit and
  there is no pids or CPU limit. :attr:`SandboxHost.isolation` says which limits are in effect.
There is no Docker mode: these machines have no daemon, and a bubblewrap sandbox over the host's
files starts in milliseconds where an image build would take minutes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from cloudide.localstack.task_init import ID_RANGE
from cloudide.localstack.volumes import (
    MountPoint,
    TaskDisk,
    declared_volumes,
    ephemeral_storage_bytes,
    make_volumes,
)

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
INSIDE_REPO = Path("/opt/cloudide")
IMAGE_DIR = "terminal_image"
SHELL_PATH = "/usr/local/bin/cloudide-shell"  # where the image installs the exec wrapper
USER_UID = USER_GID = 1000  # the image's `dev` user
RELAY_SOCKET = "/run/cloudide/s3.sock"
TASK_INIT_PATH = INSIDE_REPO / "task_init.py"
WORKSPACE = "/workspace"
# Without a task definition (the sandbox alone): the two volumes every terminal task mounts.
DEFAULT_MOUNTS = (MountPoint("workspace", WORKSPACE), MountPoint("tmp", "/tmp"))
# A writable root's top-level directories, on the task's disk (the host's /usr and /etc stay read-only).
WRITABLE_ROOT_DIRS = {"var": 0o755, "var/tmp": 0o1777, "srv": 0o755, "mnt": 0o755}
ID_BASE = 2_000_000  # host ids of task n: ID_BASE + n * ID_RANGE onwards, far from any account's
ID_SLOTS = 1024
_ID_LOCKS = Path("/run/cloudide-task-ids")
START_TIMEOUT_S = 10.0
WATCHDOG_INTERVAL_S = 0.25
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_CPU_PERIOD_US = 100_000


class SandboxError(RuntimeError):
    """The sandbox could not be set up or started; the message says what failed."""


class Isolation(StrEnum):
    BUBBLEWRAP = "bubblewrap"
    PLAIN = "plain"


@dataclass(frozen=True)
class Limits:
    """A task's size in ECS units: `cpu_units` 1024 = one vCPU, `memory_mib` the hard memory limit."""

    cpu_units: int
    memory_mib: int
    pids: int = 1024

    def __post_init__(self) -> None:
        if self.cpu_units < 2 or self.memory_mib < 6 or self.pids < 8:
            raise ValueError(f"limits too small to run anything: {self}")

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * 1024 * 1024

    def __str__(self) -> str:
        return f"{self.cpu_units / 1024:g} vCPU, {self.memory_mib} MiB, {self.pids} pids"


# ---------------------------------------------------------------------------------------------- cgroups


@dataclass(frozen=True)
class CgroupRoot:
    """Where this process may create task cgroups: `dirs` maps controller -> parent directory (one
    shared directory on v2, one per hierarchy on v1), all nested under this process's own cgroup."""

    version: int
    dirs: dict[str, Path]

    @property
    def controllers(self) -> list[str]:
        return sorted(self.dirs)

    def describe(self) -> str:
        return f"cgroup v{self.version} {'+'.join(self.controllers)}"

    @classmethod
    def detect(cls, name: str) -> CgroupRoot | None:
        """v2 when /sys/fs/cgroup is the unified hierarchy and lets us delegate, else v1 with whichever
        of memory, pids and cpu are writable; None when neither works (the caller falls back)."""
        own = _own_cgroups()
        if (_CGROUP_ROOT / "cgroup.controllers").exists():
            return cls._detect_v2(_CGROUP_ROOT / own.get("", "/").lstrip("/") / name)
        dirs: dict[str, Path] = {}
        for controller in ("memory", "pids", "cpu"):
            mount = _CGROUP_ROOT / controller
            if controller not in own or not (mount / "cgroup.procs").exists():
                continue
            parent = mount / own[controller].lstrip("/") / name
            try:
                parent.mkdir(exist_ok=True)
            except OSError:
                continue
            dirs[controller] = parent
        if "memory" in dirs:
            return cls(1, dirs)
        _abandon(dirs.values())
        return None

    @classmethod
    def _detect_v2(cls, parent: Path) -> CgroupRoot | None:
        try:
            parent.mkdir(exist_ok=True)
            available = (parent / "cgroup.controllers").read_text().split()
            wanted = [c for c in ("memory", "pids", "cpu") if c in available]
            (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
        except OSError:
            wanted = []
        if "memory" in wanted:
            return cls(2, dict.fromkeys(wanted, parent))
        _abandon([parent])
        return None

    def create(self, name: str, limits: Limits) -> TaskCgroup:
        group = TaskCgroup(self.version, {c: parent / name for c, parent in self.dirs.items()})
        try:
            group.apply(limits)
        except OSError as error:
            group.remove()
            raise SandboxError(f"cannot create the task's cgroup: {error}") from error
        return group

    def remove(self) -> None:
        _abandon(self.dirs.values())


def _own_cgroups() -> dict[str, str]:
    """controller -> this process's cgroup path ("" is the v2 hierarchy), from /proc/self/cgroup."""
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    return own


def _abandon(dirs: Iterable[Path]) -> None:
    """Remove cgroup directories this process created and cannot use (empty ones only)."""
    for directory in set(dirs):
        with contextlib.suppress(OSError):
            directory.rmdir()


@dataclass(frozen=True)
class TaskCgroup:
    """One task's cgroup (one directory per v1 hierarchy, or one v2 directory)."""

    version: int
    dirs: dict[str, Path]

    def apply(self, limits: Limits) -> None:
        for directory in set(self.dirs.values()):
            directory.mkdir(exist_ok=True)
        if self.version == 2:
            self._write("memory", "memory.max", limits.memory_bytes)
            self._write("memory", "memory.swap.max", 0, optional=True)
            self._write("pids", "pids.max", limits.pids)
            self._write("cpu", "cpu.max", f"{limits.cpu_units * _CPU_PERIOD_US // 1024} {_CPU_PERIOD_US}")
            return
        self._write("memory", "memory.limit_in_bytes", limits.memory_bytes)
        self._write("memory", "memory.memsw.limit_in_bytes", limits.memory_bytes, optional=True)
        self._write("pids", "pids.max", limits.pids)
        self._write("cpu", "cpu.shares", limits.cpu_units)
        self._write("cpu", "cpu.cfs_period_us", _CPU_PERIOD_US)
        self._write("cpu", "cpu.cfs_quota_us", limits.cpu_units * _CPU_PERIOD_US // 1024)

    def _write(self, controller: str, name: str, value: object, *, optional: bool = False) -> None:
        if controller not in self.dirs:
            return
        path = self.dirs[controller] / name
        if optional and not path.exists():
            return
        path.write_text(str(value))

    @property
    def procs_files(self) -> list[Path]:
        return [directory / "cgroup.procs" for directory in sorted(set(self.dirs.values()))]

    def pids(self) -> set[int]:
        try:
            return {int(pid) for pid in (self.dirs["memory"] / "cgroup.procs").read_text().split()}
        except OSError:
            return set()

    def oom_kills(self) -> int:
        """How many processes the kernel killed for this cgroup's memory limit."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            lines = (self.dirs["memory"] / name).read_text().splitlines()
        except OSError:
            return 0
        return next((int(line.split()[1]) for line in lines if line.startswith("oom_kill ")), 0)

    def remove(self, timeout: float = 5.0) -> None:
        """rmdir fails while the last killed processes are still exiting: retry briefly."""
        deadline = time.monotonic() + timeout
        for directory in sorted(set(self.dirs.values())):
            while directory.exists():
                try:
                    directory.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        logger.warning("cgroup left behind", extra={"cgroup": str(directory)})
                        break
                    time.sleep(0.05)


def in_cgroup(argv: Sequence[str], cgroup: TaskCgroup | None) -> list[str]:
    """`argv` started inside `cgroup`: a shell joins it, then execs (children inherit the cgroup)."""
    if cgroup is None:
        return list(argv)
    joins = " && ".join(f"echo $$ > {shlex.quote(str(path))}" for path in cgroup.procs_files)
    return ["/bin/sh", "-c", f'{joins} && exec "$@"', "sh", *argv]


# ------------------------------------------------------------------------------------------- the host


@dataclass(frozen=True)
class SandboxHost:
    """What this machine offers for sandboxes, detected once per runner."""

    mode: Isolation
    bwrap: str | None
    cgroups: CgroupRoot | None

    @classmethod
    def detect(cls, name: str, *, isolation: str = "auto") -> SandboxHost:
        """`isolation`: "auto" (bubblewrap when installed), "bubblewrap" (required) or "plain"."""
        if isolation not in {"auto", "bubblewrap", "plain"}:
            raise ValueError(f"isolation must be auto, bubblewrap or plain, not {isolation!r}")
        missing = cls.missing()
        bwrap = shutil.which("bwrap") if isolation != "plain" and missing is None else None
        if isolation == "bubblewrap" and not bwrap:
            raise SandboxError(f"the bubblewrap sandbox is unavailable: {missing}")
        cgroups = CgroupRoot.detect(name) if os.geteuid() == 0 else None
        host = cls(Isolation.BUBBLEWRAP if bwrap else Isolation.PLAIN, bwrap, cgroups)
        if host.warning:
            logger.warning(host.warning)
        return host

    @staticmethod
    def missing() -> str | None:
        """Why this machine cannot run bubblewrap sandboxes, or None. The layout needs root outside: it
        mounts each task's disk and maps each task's ids (see :class:`TaskIds`)."""
        if not shutil.which("bwrap"):
            return "bubblewrap (bwrap) is not installed"
        if os.geteuid() != 0:
            return "this is not root"
        return None

    @property
    def limits(self) -> str:
        return self.cgroups.describe() if self.cgroups else "RSS watchdog only, no pids/cpu limit"

    @property
    def isolation(self) -> str:
        """For banners: e.g. "bubblewrap (cgroup v1 cpu+memory+pids)" or "plain process (UNSANDBOXED ...)"."""
        if self.mode is Isolation.BUBBLEWRAP:
            return f"bubblewrap ({self.limits})"
        return f"plain process (UNSANDBOXED; {self.limits})"

    @property
    def warning(self) -> str | None:
        if self.mode is Isolation.PLAIN:
            return (
                "LOCAL TASKS RUN UNSANDBOXED (--unsandboxed): each terminal is a plain process on this "
                "machine, with its network and its files, and every user can reach every other's. Install "
                "bubblewrap and run as root to isolate them."
            )
        return None

    def close(self) -> None:
        if self.cgroups:
            self.cgroups.remove()


# ---------------------------------------------------------------------------------------------- ids


@dataclass
class TaskIds:
    """A task's own range of host ids: the image's id N is host id `root + N` (see :mod:`task_init`).

    A range is held by an exclusive lock on its slot's file, so every runner on this host (tests run
    several) gets a different one, and a crashed runner's ranges are free again at once."""

    root: int
    _lock: IO[bytes] | None = None

    @property
    def user(self) -> int:
        """Host uid (and gid) of the image's user."""
        return self.root + USER_UID

    @classmethod
    def acquire(cls) -> TaskIds:
        _ID_LOCKS.mkdir(mode=0o700, exist_ok=True)
        for slot in range(ID_SLOTS):
            lock = (_ID_LOCKS / f"{slot}.lock").open("ab")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            return cls(ID_BASE + slot * ID_RANGE, lock)
        raise SandboxError(f"all {ID_SLOTS} task id ranges are in use on this host")

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


# ---------------------------------------------------------------------------------------- filesystem


def _parents(path: Path) -> list[str]:
    """bwrap creates missing mount points 0700; the unprivileged user must be able to traverse them."""
    args: list[str] = []
    for parent in reversed(path.parents[:-1]):
        args += ["--perms", "0755", "--dir", str(parent)]
    return args


def _ro_bind(source: Path, target: Path) -> list[str]:
    return [*_parents(target), "--ro-bind", str(source), str(target)]


def inside_path(host_path: Path) -> Path:
    """Where a host path of the repository (e.g. the .venv) appears in the sandbox."""
    try:
        return INSIDE_REPO / host_path.relative_to(REPO)
    except ValueError:
        return host_path


def filesystem_args(
    volumes: Mapping[str, Path],
    *,
    read_only: Sequence[str] = (),
    root_layer: Path | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """bwrap arguments for the image's file system: a root from the host's /usr and /etc, the Python
    install (and virtualenv), the image's files of this repository under /opt/cloudide (the sync agent,
    tmux.conf, task_init) and the exec wrapper at /usr/local/bin/cloudide-shell, nothing else of the
    host. `volumes` maps container paths to host directories (`read_only` lists the read-only ones).
    `root_layer` (a host directory holding WRITABLE_ROOT_DIRS) makes the root writable where an image's
    root user could write; without it the root is read-only. `extra` mounts go in before that."""
    python_home = Path(sys.base_prefix)
    venv = Path(sys.prefix)
    binds: list[str] = []
    for source in (python_home, venv):
        visible = source.is_relative_to("/usr") and not source.is_relative_to("/usr/local")
        if not visible:
            binds += _ro_bind(source, inside_path(source))
    layer: list[str] = []
    if root_layer is not None:
        layer = [arg for name in WRITABLE_ROOT_DIRS if "/" not in name
                 for arg in ("--bind", str(root_layer / name), f"/{name}")]  # fmt: skip
    home = [] if "/home/dev" in volumes else ["--perms", "0755", "--dir", "/home/dev"]
    mounts: list[str] = []
    for path in sorted(volumes, key=lambda p: len(Path(p).parts)):  # a parent before what is inside it
        mounts += [
            *_parents(Path(path)),
            "--ro-bind" if path in read_only else "--bind",
            str(volumes[path]),
            path,
        ]
    return [
        "--tmpfs", "/",
        "--ro-bind", "/usr", "/usr",
        "--tmpfs", "/usr/local",  # the host's own tools stay out; the image's wrapper goes in
        *_ro_bind(REPO / IMAGE_DIR / "cloudide-shell", Path(SHELL_PATH)),
        "--symlink", "usr/bin", "/bin",
        "--symlink", "usr/sbin", "/sbin",
        "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64",
        "--ro-bind", "/etc", "/etc",
        *layer,
        *binds,
        *_ro_bind(REPO / IMAGE_DIR, INSIDE_REPO / IMAGE_DIR),
        *_ro_bind(Path(__file__).with_name("task_init.py"), TASK_INIT_PATH),
        *_parents(Path("/home/dev/x")),
        *home,
        "--dev", "/dev",
        "--proc", "/proc",
        *mounts,
        *extra,
        "--remount-ro", "/usr/local",
        *([] if root_layer is not None else ["--remount-ro", "/"]),
    ]  # fmt: skip


def image_environment(*, workspace: str, tmp: str, repo: Path, python_bin: Path) -> dict[str, str]:
    """The image's ENV lines, with this sandbox's paths where the image has its own."""
    return {
        "PATH": f"{python_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONPATH": str(repo / IMAGE_DIR),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "WORKSPACE_DIR": workspace,
        "CLOUDIDE_TMUX_SOCKET": f"{tmp}/cloudide-tmux/default",
        "CLOUDIDE_TMUX_CONF": str(repo / IMAGE_DIR / "tmux.conf"),
        "HOME": "/home/dev",
        "LANG": "C.UTF-8",
    }


_DROP_TO_USER = [
    "setpriv", f"--reuid={USER_UID}", f"--regid={USER_GID}", "--clear-groups", "--no-new-privs",
    "--bounding-set=-all", "--inh-caps=-all", "--",
]  # fmt: skip
ENTRYPOINT = ["python3", "-m", "workspace_sync", "run"]


# ------------------------------------------------------------------------------------------ sandbox


class Sandbox:
    """One task's process tree, isolated as well as the host allows; started once, then watched.

    `directory` (mode 0700, owned by the task's root id) holds the task's private state: its disk
    (volumes/, one directory per task volume) and container.log (the entrypoint's stdout and stderr, as
    the awslogs driver would collect them). `mounts` are the task definition's mount points and
    `read_only_root` its readonlyRootFilesystem. `relay_socket` (from
    :class:`~cloudide.localstack.bridge.EndpointBridge`) is the sandbox's way to `aws_endpoint`; a plain
    process uses the endpoint, and plain workspace/ and tmp/ directories.
    """

    def __init__(
        self,
        host: SandboxHost,
        name: str,
        directory: Path,
        *,
        env: Mapping[str, str],
        limits: Limits,
        aws_endpoint: str | None = None,
        relay_socket: Path | None = None,
        entrypoint: Sequence[str] = ENTRYPOINT,
        mounts: Sequence[MountPoint] = DEFAULT_MOUNTS,
        read_only_root: bool = True,
    ) -> None:
        self.host = host
        self.name = name
        self.directory = directory
        self.limits = limits
        self.entrypoint = list(entrypoint)
        self.mounts = list(mounts)
        self.read_only_root = read_only_root
        self.volumes: dict[str, Path] = {}  # container path -> host directory, once prepared
        self.ids: TaskIds | None = None
        self.disk: TaskDisk | None = None
        self.tmp = directory / "tmp"  # the plain process's /tmp
        self.log_path = directory / "container.log"
        self.relay_socket = relay_socket
        self.sandboxed = host.mode is Isolation.BUBBLEWRAP
        self.environment = self._environment(env, aws_endpoint)
        self.cgroup: TaskCgroup | None = None
        self.pid: int | None = None  # host pid of the sandbox's pid 1 (the plain process otherwise)
        self.oom_killed = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._status_fd: int | None = None
        self._pid_namespace: str | None = None
        self._next_watch = 0.0

    def _environment(self, env: Mapping[str, str], aws_endpoint: str | None) -> dict[str, str]:
        python_bin = Path(sys.prefix) / "bin"
        if self.sandboxed:
            image = image_environment(
                workspace="/workspace", tmp="/tmp", repo=INSIDE_REPO, python_bin=inside_path(python_bin)
            )
            # The relay listens inside on the endpoint's own port, so a URL presigned inside (the agent's
            # sts:GetCallerIdentity proof) is the same URL outside, where the control plane calls it.
            relayed = aws_endpoint and self.relay_socket
            endpoint = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{_port(aws_endpoint)}"} if relayed else {}
            return {**image, **env, **endpoint}
        image = image_environment(
            workspace=str(self.workspace), tmp=str(self.tmp), repo=REPO, python_bin=python_bin
        )
        local = {"AWS_ENDPOINT_URL": aws_endpoint} if aws_endpoint else {}
        if os.geteuid() != 0:  # cloudide-shell may only drop from root; otherwise it must be us already
            local |= {"CLOUDIDE_UID": str(os.getuid()), "CLOUDIDE_GID": str(os.getgid())}
        return {**image, **env, **local}

    @property
    def workspace(self) -> Path:
        """The host directory that is the task's /workspace."""
        return self.volumes.get(WORKSPACE, self.directory / "workspace")

    @property
    def user_uid(self) -> int:
        """The host uid the image's user runs as in this task."""
        return self.ids.user if self.ids else (USER_UID if os.geteuid() == 0 else os.getuid())

    @property
    def limits_in_effect(self) -> str:
        if self.cgroup:
            return f"{self.limits} ({self.host.limits})"
        return f"{self.limits.memory_mib} MiB by RSS watchdog; no pids or cpu limit"

    # ------------------------------------------------------------------------------------ lifecycle

    def prepare(self) -> None:
        """Create the task's ids, private directory, disk and volumes (as Fargate makes them) and cgroup."""
        self.directory.mkdir(mode=0o700 if self.sandboxed else 0o755, parents=True, exist_ok=True)
        if self.sandboxed:
            self.ids = TaskIds.acquire()
            os.chown(self.directory, self.ids.root, self.ids.root)
            self.directory.chmod(0o700)
            self.disk = TaskDisk(
                self.directory / "disk.img",
                self.directory / "volumes",
                ephemeral_storage_bytes(self.limits.memory_bytes),
            )
            self.disk.create()
            self.volumes = make_volumes(
                self.disk.mount_point, self.mounts, declared_volumes(), id_offset=self.ids.root
            )
            if not self.read_only_root:
                self._make_root_layer(self.disk.mount_point / ".root")
        else:
            self.workspace.mkdir(exist_ok=True)
            self.tmp.mkdir(exist_ok=True)
            if os.geteuid() == 0:
                os.chown(self.workspace, USER_UID, USER_GID)
            self.tmp.chmod(0o1777)
        if self.host.cgroups:
            self.cgroup = self.host.cgroups.create(self.name, self.limits)

    def _make_root_layer(self, layer: Path) -> None:
        """The writable root's top-level directories, owned by the task's root, on the task's disk."""
        assert self.ids is not None
        for name, mode in WRITABLE_ROOT_DIRS.items():
            directory = layer / name
            directory.mkdir(parents=True)
            os.chown(directory, self.ids.root, self.ids.root)
            directory.chmod(mode)

    @property
    def root_layer(self) -> Path | None:
        return self.disk.mount_point / ".root" if self.disk and not self.read_only_root else None

    def start(self) -> int:
        """Start the entrypoint; returns the host pid once the sandbox exists (bwrap set it up)."""
        log: IO[bytes] = self.log_path.open("ab")
        try:
            if self.sandboxed:
                return self._start_bubblewrap(log)
            drop = _DROP_TO_USER if os.geteuid() == 0 else []
            self._proc = self._popen([*drop, *self.entrypoint], log, cwd=self.workspace)
            self.pid = self._proc.pid
            return self.pid
        finally:
            log.close()

    def _popen(self, argv: Sequence[str], log: IO[bytes], **options: object) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(  # type: ignore[call-overload]
                in_cgroup(argv, self.cgroup),
                env=self.environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the runner's terminal Ctrl-C goes to the runner, which stops us
                **options,
            )
        except OSError as error:
            raise SandboxError(f"cannot start {argv[0]}: {error}") from error

    def _start_bubblewrap(self, log: IO[bytes]) -> int:
        assert self.host.bwrap
        read_fd, write_fd = os.pipe()
        assert self.ids is not None, "prepare() first"
        relay: list[str] = []
        relay_mount: list[str] = []
        if self.relay_socket and "AWS_ENDPOINT_URL" in self.environment:
            relay = ["--relay", f"{_port(self.environment['AWS_ENDPOINT_URL'])}={RELAY_SOCKET}"]
            relay_mount = [*_parents(Path(RELAY_SOCKET)), "--bind", str(self.relay_socket), RELAY_SOCKET]
        argv = [
            self.host.bwrap,
            "--die-with-parent",  # tied to the thread that starts us: the runner's per-task thread
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--hostname", self.name[:63],
            "--as-pid-1",  # task_init is pid 1: it forwards SIGTERM, which bwrap's own init would not
            "--json-status-fd", str(write_fd),
            *filesystem_args(
                self.volumes,
                read_only=[m.path for m in self.mounts if m.read_only],
                root_layer=self.root_layer,
                extra=relay_mount,
            ),
            "--chdir", "/workspace",
            # task_init (root in the sandbox) needs these only to drop the entrypoint to the user
            "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP",
            "--",
            "python3", "-I", "-S", str(TASK_INIT_PATH), *relay, "--map-ids", str(self.ids.root),
            "--", *_DROP_TO_USER, *self.entrypoint,
        ]  # fmt: skip
        try:
            self._proc = self._popen(argv, log, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)
        self._status_fd = read_fd
        status = self._read_status(START_TIMEOUT_S)
        if "child-pid" not in status:
            raise SandboxError(f"bubblewrap did not start the sandbox (see {self.log_path})")
        self.pid = int(status["child-pid"])
        self._pid_namespace = f"pid:[{status['pid-namespace']}]" if "pid-namespace" in status else None
        self._await_init()
        return self.pid

    def _await_init(self) -> None:
        """bwrap reports the child before it builds the mounts: the sandbox is whole once pid 1 has
        exec'd task_init (an exec into it any earlier would see a half-built file system)."""
        assert self.pid is not None and self.host.bwrap is not None
        bwrap = os.path.realpath(self.host.bwrap)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.poll() is None:
            try:
                if os.readlink(f"/proc/{self.pid}/exe") != bwrap:
                    return
            except OSError:
                pass
            time.sleep(0.005)
        raise SandboxError(f"the sandbox did not come up (see {self.log_path})")

    def _read_status(self, timeout: float) -> dict[str, Any]:
        """bwrap's first JSON status line (it may arrive in pieces); {} if bwrap exits or times out first."""
        assert self._status_fd is not None
        deadline = time.monotonic() + timeout
        data = b""
        while b"\n" not in data:
            ready, _, _ = select.select([self._status_fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self._status_fd, 4096) if ready else b""
            if not chunk:
                return {}
            data += chunk
        try:
            return dict(json.loads(data.split(b"\n", 1)[0]))
        except ValueError:
            return {}

    def processes(self) -> set[int]:
        """Host pids of every process in the task (the cgroup, else its pid namespace or session)."""
        if self.cgroup:
            return self.cgroup.pids()
        if self.pid is None:
            return set()
        found: set[int] = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if self._pid_namespace:
                    member = os.readlink(entry / "ns" / "pid") == self._pid_namespace
                else:
                    member = os.getsid(int(entry.name)) == self.pid
            except OSError:
                continue
            if member:
                found.add(int(entry.name))
        return found

    def signal(self, signum: int) -> None:
        """Send `signum` to the entrypoint (through task_init, which forwards it)."""
        if self.pid is not None and self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL the whole task: pid 1 (which ends its pid namespace) and anything left in its cgroup."""
        for _ in range(50):
            targets = self.processes() | ({self.pid} if self.pid and self.poll() is None else set())
            if not targets:
                return
            for pid in targets:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        logger.warning("processes survived SIGKILL", extra={"task": self.name, "pids": sorted(targets)})

    def poll(self) -> int | None:
        """The container's exit code once its entrypoint is gone (128 + signal when killed), else None.
        While it runs, enforce the memory limit: the first OOM kill ends the task, as when the kernel
        picks a container's main process, so a task past its memory always ends as ECS reports it."""
        if self._proc is None:
            return None
        code = self._proc.poll()
        if code is None:
            self._watch_memory()
            return None
        return 128 - code if code < 0 else code

    def _watch_memory(self) -> None:
        if self.oom_killed:
            return
        if self.cgroup:
            over = self.cgroup.oom_kills() > 0
        else:
            now = time.monotonic()
            if now < self._next_watch:
                return
            self._next_watch = now + WATCHDOG_INTERVAL_S
            over = _rss_bytes(self.processes()) > self.limits.memory_bytes
        if over:
            logger.warning(
                "task out of memory: killing it", extra={"task": self.name, "limits": str(self.limits)}
            )
            self.oom_killed = True
            self.kill()

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return code

    def close(self) -> None:
        """Nothing of the task may outlive this: kill what is left, reap, remove the cgroup."""
        self.kill()
        if self._proc is not None:
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "sandbox process did not exit", extra={"task": self.name, "pid": self._proc.pid}
                )
        if self._status_fd is not None:
            os.close(self._status_fd)
            self._status_fd = None
        if self.cgroup:
            self.cgroup.remove()
        if self.disk:
            self.disk.remove()
        if self.ids:
            self.ids.release()

    # ------------------------------------------------------------------------------------------ exec

    def exec_argv(self, command: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """argv and env running `command` in this task, as ECS Exec does: as root, in the task's
        namespaces and cgroup, with the container's environment (the wrapper cleans it for the user)."""
        if not command:
            raise ValueError("command must not be empty")
        if self.pid is None or self.poll() is not None:
            raise SandboxError(f"task {self.name} has no running process")
        if self.sandboxed:
            # The entrypoint's namespaces, its user namespace included: ECS Exec's root is the task's own.
            nsenter = shutil.which("nsenter") or "nsenter"
            target = str(self._entrypoint_pid())
            argv = [nsenter, "-t", target, "-U", "-m", "-p", "-n", "-i", "-u", "-r", "-w", "--", *command]
        else:
            wrapper = str(REPO / IMAGE_DIR / "cloudide-shell")
            argv = [wrapper if command[0] == SHELL_PATH else command[0], *command[1:]]
        # the SSM agent gives an interactive command a terminal type, as here
        return in_cgroup(argv, self.cgroup), {**self.environment, "TERM": "xterm-256color"}

    def _entrypoint_pid(self) -> int:
        """A process of the task's user namespace: a child of pid 1 (task_init stays outside it)."""
        assert self.pid is not None
        own = os.readlink(f"/proc/{self.pid}/ns/user")
        with contextlib.suppress(OSError):
            for child in Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split():
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{child}/ns/user") != own:
                        return int(child)
        raise SandboxError(f"task {self.name} has no process in its user namespace")


def _rss_bytes(pids: set[int]) -> int:
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total


def _port(url: str | None) -> int:
    return urlsplit(url or "").port or 80
