"""A local task's volumes, made as Fargate makes them, on a disk as bounded as its ephemeral storage.

Fargate gives every task volume (a task definition `volumes` entry with no host path) an empty directory
owned by root with mode 0755, unless the image declares `VOLUME` for the exact container path: then the
image directory's contents, owner and mode are copied in (Amazon ECS Developer Guide, "Bind mounts":
"by default, the volume permissions are set to 0755 and the owner as root"; containers-roadmap #938). So a
directory the image's user must write, such as `/workspace`, `/tmp` or `$HOME`, is writable on Fargate
only when the Dockerfile sets its owner and mode and then declares it a `VOLUME`. The sandbox reads both
halves: the task definition's mount points and the Dockerfile's declarations, parsed here from the
Dockerfile itself (so the two cannot drift apart).

All of a Fargate task's volumes share its ephemeral storage (20 GiB by default). Locally every task gets
one sparse ext4 image of :func:`ephemeral_storage_bytes` for its size, loop-mounted, with one directory
per volume: writing past the bound is ENOSPC inside that task and costs the host nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

DOCKERFILE = Path(__file__).resolve().parents[2] / "terminal_image" / "Dockerfile"
EPHEMERAL_BYTES_PER_MEMORY_BYTE = 2
"""The local bound on a task's volumes: twice its memory (1 GiB for the small tier, 8 GiB for xlarge).
Fargate gives 20 GiB whatever the size; a laptop shared by several users' tasks cannot, and a bound
that grows with the tier keeps the same order: the bigger task may write more."""
_MKFS_TIMEOUT_S = 30


@dataclass(frozen=True)
class MountPoint:
    """A container definition's `mountPoints` entry: the task volume `volume` at `path`."""

    volume: str
    path: str
    read_only: bool = False

    @classmethod
    def from_task_definition(cls, container: Mapping[str, Any]) -> list[MountPoint]:
        return [
            cls(m["sourceVolume"], m["containerPath"], bool(m.get("readOnly", False)))
            for m in container.get("mountPoints", [])
        ]


@dataclass(frozen=True)
class ImageDirectory:
    """What the image holds at a path it declares a `VOLUME`: owner, mode, and where its contents come
    from (`skeleton`: the useradd --create-home copy of /etc/skel, the only contents the image puts there)."""

    path: str
    uid: int = 0
    gid: int = 0
    mode: int = 0o755
    skeleton: Path | None = None


def declared_volumes(dockerfile: Path = DOCKERFILE) -> dict[str, ImageDirectory]:
    """The Dockerfile's `VOLUME` paths, with the owner and mode its `install -d` lines give them.

    A declared path whose owner and mode the Dockerfile does not set with `install -d` is refused: its
    content would come from the base image, which this parse cannot see."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    arguments = {m[1]: m[2] for m in re.finditer(r"^ARG\s+(\w+)=(\S*)\s*$", text, re.MULTILINE)}

    def expand(word: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: arguments.get(m[1], m[0]), word)

    directories: dict[str, ImageDirectory] = {}
    skeletons: dict[str, Path] = {}
    for instruction, rest in re.findall(r"^(RUN|VOLUME)\s+(.*)$", text, re.MULTILINE):
        if instruction == "VOLUME":
            for path in _volume_paths(rest):
                if path not in directories:
                    raise ValueError(
                        f"{dockerfile.name}: VOLUME {path} before an `install -d` sets its owner"
                    )
                directories[path] = replace(directories[path], skeleton=skeletons.get(path))
            continue
        for command in re.split(r"&&|;", rest):
            words = [expand(word) for word in shlex.split(command)]
            if words[:2] == ["install", "-d"]:
                directories |= _install_directories(words[2:])
            elif words[:1] == ["useradd"] and "--create-home" in words and "--home-dir" in words:
                skeletons[words[words.index("--home-dir") + 1]] = Path("/etc/skel")
    declared = set(re.findall(r"^VOLUME\s+(.*)$", text, re.MULTILINE))
    paths = {path for line in declared for path in _volume_paths(line)}
    return {path: directories[path] for path in sorted(paths)}


def _volume_paths(arguments: str) -> list[str]:
    arguments = arguments.strip()
    if arguments.startswith("["):
        return [str(path) for path in json.loads(arguments)]
    return arguments.split()


def _install_directories(words: Sequence[str]) -> dict[str, ImageDirectory]:
    options = {"-o": "0", "-g": "0", "-m": "755"}
    paths = []
    iterator = iter(words)
    for word in iterator:
        if word in options:
            options[word] = next(iterator)
        else:
            paths.append(word)
    return {
        path: ImageDirectory(path, _id(options["-o"]), _id(options["-g"]), int(options["-m"], 8))
        for path in paths
    }


def _id(value: str) -> int:
    return 0 if value == "root" else int(value)


def ephemeral_storage_bytes(memory_bytes: int) -> int:
    return memory_bytes * EPHEMERAL_BYTES_PER_MEMORY_BYTE


# -------------------------------------------------------------------------------------------- the disk


class TaskDisk:
    """One task's bounded storage: a sparse ext4 image, loop-mounted at `mount_point` (root only, 0700)."""

    def __init__(self, image: Path, mount_point: Path, size_bytes: int) -> None:
        self.image = image
        self.mount_point = mount_point
        self.size_bytes = size_bytes

    def create(self) -> None:
        """mkfs and mount; on any failure nothing is left mounted."""
        with self.image.open("wb") as file:
            file.truncate(self.size_bytes)
        # No reserved blocks and no journal: the whole bound is the task's, and the image is throwaway.
        _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", str(self.image)])
        self.mount_point.mkdir(mode=0o700, exist_ok=True)
        _run(["mount", "-o", "loop,nosuid,nodev", str(self.image), str(self.mount_point)])
        (self.mount_point / "lost+found").rmdir()
        self.mount_point.chmod(0o700)

    def remove(self) -> None:
        unmount(self.mount_point)
        with contextlib.suppress(FileNotFoundError):
            self.image.unlink()


def unmount(mount_point: Path) -> None:
    """Detach the file system at `mount_point` (lazily, so a process still exiting cannot keep it)."""
    if os.path.ismount(mount_point):
        subprocess.run(["umount", "-l", str(mount_point)], check=False, capture_output=True, timeout=30)


def mounts_under(directory: Path) -> list[Path]:
    """Mount points below `directory` (deepest first): what a killed runner left mounted."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = Path(line.split()[4].encode().decode("unicode_escape"))
        if point.is_relative_to(directory) and point != directory:
            found.append(point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _run(argv: Sequence[str]) -> None:
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True, timeout=_MKFS_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", "") or error
        raise OSError(f"{argv[0]} failed: {str(detail).strip()}") from error


# ------------------------------------------------------------------------------------------ the volumes


def make_volumes(
    root: Path,
    mount_points: Iterable[MountPoint],
    declared: Mapping[str, ImageDirectory],
    *,
    id_offset: int = 0,
) -> dict[str, Path]:
    """One directory per task volume under `root`, as Fargate makes it for the path it is mounted at;
    returns container path -> host directory. `id_offset` is the task's host uid for its root (the user
    namespace maps the image's uid N to id_offset + N)."""
    volumes: dict[str, Path] = {}
    for mount in mount_points:
        directory = root / mount.volume
        image = declared.get(mount.path, ImageDirectory(mount.path))
        if not directory.exists():
            directory.mkdir()
            if image.skeleton is not None and image.skeleton.is_dir():
                shutil.copytree(image.skeleton, directory, dirs_exist_ok=True, symlinks=True)
            for path in [directory, *directory.rglob("*")]:
                os.lchown(path, id_offset + image.uid, id_offset + image.gid)
            directory.chmod(image.mode)
        volumes[mount.path] = directory
    return volumes
